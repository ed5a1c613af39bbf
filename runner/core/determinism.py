"""Determinism profiles as environment variables. Pure.

A profile has two halves, kept apart on purpose:

* :func:`environment` (here) runs on the host. Its variables reach the training process at exec
  time (container env or subprocess env), i.e. *before* torch is imported, which is the only time
  thread pools, CPU kernel dispatch and NCCL read them.
* :func:`runner.worker.determinism.apply` runs inside the training process, after the environment
  is in place: seeds and PyTorch's deterministic switches.

Standard library only: the worker imports :data:`RECORDED_ENV` inside the image.
"""

from __future__ import annotations

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
            from runner.core.errors import RunnerError

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
    env.update(SAFETY_ENV)  # last: no profile can switch NVLink multicast back on
    return dict(sorted(env.items()))


# The variables the training process reads back and records with the flags in force.
RECORDED_ENV = {
    "PYTHONHASHSEED",
    "CUBLAS_WORKSPACE_CONFIG",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_CBWR",
    *_THREAD_VARS,
    *SAFETY_ENV,
}
