"""determinism.environment: what each profile fixes before torch is imported (pure)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from runner.core import determinism
from runner.core.errors import RunnerError
from tests.conftest import ROOT

THREADS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


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
    assert env == {"PYTHONHASHSEED": "0", **determinism.SAFETY_ENV}
    for absent in (*THREADS, "CUBLAS_WORKSPACE_CONFIG", "ATEN_CPU_CAPABILITY", "NCCL_ALGO"):
        assert absent not in env


def test_environment_is_pure():
    p = profile("strict")
    before = repr(p)
    assert determinism.environment(p) == determinism.environment(p)
    assert repr(p) == before


@pytest.mark.parametrize("cap, isa", [("avx512", "AVX512_CORE"), ("default", None)])
def test_cpu_capability_choices(cap, isa):
    env = determinism.environment({"cpu_capability": cap})
    assert env["ATEN_CPU_CAPABILITY"] == cap
    assert env.get("ONEDNN_MAX_CPU_ISA") == isa


def test_unknown_cpu_capability_is_refused():
    with pytest.raises(RunnerError, match="cpu_capability"):
        determinism.environment({"cpu_capability": "sse9"})
