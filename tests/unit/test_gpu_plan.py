"""GPU launch planning (pure): which image, how many processes, which devices the container and
the host process see. The GPU path itself is validated on GPU machines (bench/gpu_determinism.py)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.core import spec
from runner.core.errors import RunnerError
from runner.flows.cli_common import compose
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def base_cfg() -> dict:
    return OmegaConf.to_container(compose([]), resolve=True)


def plan_with(base: dict, gpus, kind: str = "auto", detected: int = 0) -> spec.RunPlan:
    cfg = copy.deepcopy(base)
    cfg["launch"]["gpus"] = gpus
    cfg["image"]["kind"] = kind
    return spec.plan_run(
        cfg, Path("/tmp/gpu/run"), ROOT, spec.Host({"PATH": "/bin"}, 1000, 1000, gpus=detected)
    )


def test_auto_image_is_cuda_exactly_when_gpus_are_asked(base_cfg):
    assert plan_with(base_cfg, 0).image_kind == "cpu"
    assert plan_with(base_cfg, 2).image_kind == "cuda"
    assert plan_with(base_cfg, [0, 3]).image_kind == "cuda"
    assert plan_with(base_cfg, 2, kind="cpu").image_kind == "cpu"  # an explicit choice wins


def test_one_process_per_gpu_and_device_requests(base_cfg):
    p = plan_with(base_cfg, 2)
    assert (p.world_size, p.accelerator) == (2, "gpu")
    req = p.container_request("runner:cuda-x", Path("/snap"), Path("/data"))
    assert req.gpus == 2 and req.shm_size  # shared memory for NCCL and loader workers
    assert p.host_env({"PATH": "/bin"}, Path("/snap"))["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_chosen_gpus_are_the_ones_requested(base_cfg):
    p = plan_with(base_cfg, [0, 3])
    assert p.world_size == 2
    assert p.container_request("img", Path("/s"), Path("/d")).gpus == [0, 3]
    assert p.host_env({}, Path("/s"))["CUDA_VISIBLE_DEVICES"] == "0,3"


def test_all_gpus_uses_the_detected_count(base_cfg):
    p = plan_with(base_cfg, "all", detected=4)
    assert p.world_size == 4 and p.container_request("img", Path("/s"), Path("/d")).gpus == -1
    assert "CUDA_VISIBLE_DEVICES" not in p.host_env({}, Path("/s"))
    with pytest.raises(RunnerError, match="no GPU"):
        plan_with(base_cfg, "all", detected=0)


def test_nccl_is_pinned_and_multicast_stays_off_in_every_profile(base_cfg):
    strict = plan_with(base_cfg, 2).env
    assert strict["NCCL_ALGO"] == "Ring" and strict["NCCL_PROTO"] == "Simple"
    assert strict["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    fast_cfg = copy.deepcopy(base_cfg)
    fast_cfg["determinism"] = OmegaConf.to_container(compose(["determinism=fast"]), resolve=True)[
        "determinism"
    ]
    fast = plan_with(fast_cfg, 2).env
    for env in (strict, fast):
        assert env["NCCL_NVLS_ENABLE"] == "0"
        assert env["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == "1" and env["NVSHMEM_DISABLE_NVLS"] == "1"
    assert "NCCL_ALGO" not in fast
