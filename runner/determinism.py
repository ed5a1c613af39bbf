"""Determinism profiles: what a profile means as environment variables and torch flags.

Two halves, kept apart on purpose:

* :func:`environment` is pure and runs on the host. Its variables reach the training
  process at exec time (container env or subprocess env), i.e. *before* torch is
  imported, which is the only time thread pools, CPU kernel dispatch and NCCL read them.
* :func:`apply` runs inside the training process, after the environment is in place:
  seeds and PyTorch's deterministic switches.

This module must import nothing outside the standard library at module level: it is
imported inside the image, where only the locked packages exist.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

# Never negotiable, whatever the profile: NVLink multicast (NVLS) off everywhere.
SAFETY_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
# oneDNN (CPU convolutions) and MKL pick kernels by instruction set independently of ATen.
_ISA_NAMES = {"default": None, "avx2": "AVX2", "avx512": "AVX512_CORE", "avx512_vnni": "AVX512_CORE_VNNI"}


def environment(profile: Mapping[str, Any]) -> dict[str, str]:
    """Environment variables a profile fixes. Pure; values are strings, sorted by name."""
    env: dict[str, str] = dict(SAFETY_ENV)
    if profile.get("pythonhashseed") is not None:
        env["PYTHONHASHSEED"] = str(profile["pythonhashseed"])
    threads = profile.get("threads")
    if threads:
        for var in _THREAD_VARS:
            env[var] = str(threads)
    if profile.get("cublas_workspace_config"):
        env["CUBLAS_WORKSPACE_CONFIG"] = str(profile["cublas_workspace_config"])
    cap = profile.get("cpu_capability")
    if cap:
        if cap not in _ISA_NAMES:
            from runner.errors import RunnerError

            raise RunnerError(
                f"determinism.cpu_capability={cap!r} is not one of {', '.join(sorted(_ISA_NAMES))}"
            )
        env["ATEN_CPU_CAPABILITY"] = cap
        isa = _ISA_NAMES[cap]
        if isa:
            env["ONEDNN_MAX_CPU_ISA"] = isa
            env["DNNL_MAX_CPU_ISA"] = isa
            env["MKL_CBWR"] = "AVX2" if cap == "avx2" else "AVX512"
    for key, value in (profile.get("nccl") or {}).items():
        env[str(key)] = str(value)
    return dict(sorted(env.items()))


def apply(profile: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """Seed everything and set PyTorch's switches in this process; return the flags in force."""
    import torch

    try:  # Lightning's seeding also exports PL_GLOBAL_SEED and seeds DataLoader workers
        from pytorch_lightning import seed_everything
    except ImportError:  # pragma: no cover - images always carry Lightning
        from lightning.pytorch import seed_everything
    seed_everything(seed, workers=True, verbose=False)

    if profile.get("deterministic_algorithms"):
        torch.use_deterministic_algorithms(True)
    if profile.get("cudnn_deterministic") is not None:
        torch.backends.cudnn.deterministic = bool(profile["cudnn_deterministic"])
    if profile.get("cudnn_benchmark") is not None:
        torch.backends.cudnn.benchmark = bool(profile["cudnn_benchmark"])
    if profile.get("allow_tf32") is not None:
        torch.backends.cuda.matmul.allow_tf32 = bool(profile["allow_tf32"])
        torch.backends.cudnn.allow_tf32 = bool(profile["allow_tf32"])
        torch.set_float32_matmul_precision("medium" if profile["allow_tf32"] else "highest")
    threads = profile.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    return flags_in_force()


def flags_in_force() -> dict[str, Any]:
    """What this process actually runs with: read back from torch, not from the profile."""
    import torch

    return {
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "num_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {k: os.environ[k] for k in sorted(os.environ) if k in _RECORDED_ENV},
    }


_RECORDED_ENV = {
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_CBWR",
    *_THREAD_VARS,
    *SAFETY_ENV,
}
