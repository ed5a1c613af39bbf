"""determinism.environment: what each profile fixes before torch is imported (pure)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from types import MappingProxyType

import pytest
from omegaconf import OmegaConf

from runner.core import determinism
from runner.core.errors import RunnerError
from tests.conftest import ROOT

THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
# NVLink multicast off in every profile: NCCL's NVLS, torch's symmetric memory and NVSHMEM (spelt
# here, not read from the module, so a switch dropped from the module fails these tests)
MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}


def profile(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "determinism" / f"{name}.yaml"))


def test_strict_pins_everything_that_is_read_at_import_time():
    env = determinism.environment(profile("strict"))
    assert env["PYTHONHASHSEED"] == "0"
    assert all(env[v] == "1" for v in THREADS)
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["ONEDNN_MAX_CPU_ISA"] == env["DNNL_MAX_CPU_ISA"] == "AVX2" and env["MKL_CBWR"] == "AVX2"
    assert env["NCCL_ALGO"] == "Ring" and env["NCCL_PROTO"] == "Simple"
    assert env["NCCL_NVLS_ENABLE"] == "0"
    assert list(env) == sorted(env) and all(isinstance(v, str) for v in env.values())


def test_fast_only_seeds_hashing_and_keeps_the_safety_switches():
    env = determinism.environment(profile("fast"))
    assert env == {"PYTHONHASHSEED": "0", **MULTICAST_OFF}
    for absent in (*THREADS, "CUBLAS_WORKSPACE_CONFIG", "ATEN_CPU_CAPABILITY", "NCCL_ALGO"):
        assert absent not in env


STRICT_KEYS = {
    *THREADS,
    *MULTICAST_OFF,
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_CBWR",
    "NCCL_ALGO",
    "NCCL_PROTO",
}
# What a host may already have set, each to a value no profile asks for.
HOST_ENV = {
    "OMP_NUM_THREADS": "64",
    "MKL_NUM_THREADS": "64",
    "PYTHONHASHSEED": "random",
    "NCCL_ALGO": "Tree",
    "CUBLAS_WORKSPACE_CONFIG": ":16:8",
    "ATEN_CPU_CAPABILITY": "default",
    "MKL_CBWR": "AUTO",
    "NCCL_NVLS_ENABLE": "1",
    "NCCL_PROTO": "LL128",
}


def _environment_in_a_fresh_process(profiles: dict, env: dict[str, str]) -> dict:
    code = (
        "import json, sys; from runner.core import determinism; "
        "print(json.dumps({k: determinism.environment(p) for k, p in json.load(sys.stdin).items()}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(profiles),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), **env},
        timeout=60,
        check=True,
    )
    return json.loads(proc.stdout)


def test_exactly_the_strict_variables_and_only_strings_sorted_by_name():
    for name in ("strict", "fast"):
        env = determinism.environment(profile(name))
        assert list(env) == sorted(env) and all(type(k) is str and type(v) is str for k, v in env.items())
    assert set(determinism.environment(profile("strict"))) == STRICT_KEYS
    odd = determinism.environment({"pythonhashseed": 7, "threads": 2, "nccl": {"NCCL_ALGO": 1}})
    assert odd["PYTHONHASHSEED"] == "7" and odd["OMP_NUM_THREADS"] == "2" and odd["NCCL_ALGO"] == "1"


def test_the_hosts_environment_does_not_reach_the_profiles_variables(monkeypatch):
    profiles = {name: profile(name) for name in ("strict", "fast")}
    expected = {name: determinism.environment(p) for name, p in profiles.items()}
    assert _environment_in_a_fresh_process(profiles, HOST_ENV) == expected  # read at import time: no
    assert _environment_in_a_fresh_process(profiles, {}) == expected
    for key, value in HOST_ENV.items():
        monkeypatch.setenv(key, value)
    assert {name: determinism.environment(p) for name, p in profiles.items()} == expected  # at call time: no
    assert expected["fast"]["PYTHONHASHSEED"] == "0" and "OMP_NUM_THREADS" not in expected["fast"]


def test_the_profile_is_only_read():
    p = profile("strict")
    before = copy.deepcopy(p)
    frozen = MappingProxyType({**p, "nccl": MappingProxyType(p["nccl"])})  # a write would raise TypeError
    assert determinism.environment(frozen) == determinism.environment(p)
    assert p == before


@pytest.mark.parametrize("cap, isa", [("avx512", "AVX512_CORE"), ("default", None)])
def test_cpu_capability_choices(cap, isa):
    env = determinism.environment({"cpu_capability": cap})
    assert env["ATEN_CPU_CAPABILITY"] == cap
    assert env.get("ONEDNN_MAX_CPU_ISA") == isa


def test_unknown_cpu_capability_is_refused():
    with pytest.raises(RunnerError, match="cpu_capability"):
        determinism.environment({"cpu_capability": "sse9"})


def test_no_profile_can_switch_nvlink_multicast_back_on():
    env = determinism.environment({"nccl": {"NCCL_NVLS_ENABLE": "1", "NCCL_ALGO": "Tree"}})
    assert env["NCCL_NVLS_ENABLE"] == "0" and env["NCCL_ALGO"] == "Tree"
    assert all(env[k] == v for k, v in MULTICAST_OFF.items())


def test_a_profile_is_read_once_its_section_kept_as_given():
    strict = profile("strict")
    p = determinism.Profile.parse(strict)
    assert (p.name, p.threads, p.cpu_capability, p.promises_bitwise) == ("strict", 1, "avx2", True)
    assert p.raw == strict and p.environment() == determinism.environment(strict)
    for bad, what in (({"threads": "2"}, "determinism.threads"), ({"nccl": ["x"]}, "determinism.nccl")):
        with pytest.raises(RunnerError, match=what):
            determinism.Profile.parse(bad)
