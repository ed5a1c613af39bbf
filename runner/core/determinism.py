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
from dataclasses import dataclass, field
from typing import Any

from runner.core.json_types import Json

# Never negotiable, whatever the profile: NVLink multicast (NVLS) off everywhere.
SAFETY_ENV = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")
# oneDNN (CPU convolutions) and MKL pick kernels by instruction set independently of ATen.
_ISA_NAMES = {"default": None, "avx2": "AVX2", "avx512": "AVX512_CORE", "avx512_vnni": "AVX512_CORE_VNNI"}


@dataclass(frozen=True)
class Profile:
    """A determinism profile (the config's ``determinism`` section), read once. What the host acts
    on is typed here: the variables it fixes before torch is imported (:meth:`environment`). ``raw``
    is the section as given, recorded and handed to the worker, which sets the switches
    (:func:`runner.worker.determinism.apply`) and runs the audit (:mod:`runner.core.audit_rules`)."""

    raw: Mapping[str, Json] = field(default_factory=dict, compare=False)
    name: str | None = None
    pythonhashseed: str | None = None
    threads: int | None = None  # threads per training process; None: the libraries' own choice
    cpu_capability: str | None = None  # ATen/oneDNN/MKL dispatch pinned to one instruction set
    cublas_workspace_config: str | None = None
    nccl: Mapping[str, str] = field(default_factory=dict)
    promises_bitwise: bool = False

    @classmethod
    def parse(cls, section: Mapping[str, Any]) -> Profile:
        """The profile, checked: a bad value is a RunnerError, in one line."""
        from runner.core.errors import EXIT_USAGE, RunnerError

        threads, cap = section.get("threads"), section.get("cpu_capability")
        if threads and (type(threads) is not int or threads < 1):
            raise RunnerError(
                f"determinism.threads={threads!r} must be a positive integer or null", EXIT_USAGE
            )
        if cap and cap not in _ISA_NAMES:
            raise RunnerError(
                f"determinism.cpu_capability={cap!r} is not one of {', '.join(sorted(_ISA_NAMES))}"
            )
        nccl = section.get("nccl") or {}
        if not isinstance(nccl, Mapping):
            raise RunnerError(f"determinism.nccl={nccl!r} must map NCCL variables to values", EXIT_USAGE)
        seed, cublas, name = (
            section.get("pythonhashseed"),
            section.get("cublas_workspace_config"),
            section.get("name"),
        )
        return cls(
            raw=dict(section),
            name=None if name is None else str(name),
            pythonhashseed=None if seed is None else str(seed),
            threads=threads or None,
            cpu_capability=str(cap) if cap else None,
            cublas_workspace_config=str(cublas) if cublas else None,
            nccl={str(k): str(v) for k, v in nccl.items()},
            promises_bitwise=section.get("promises_bitwise") is True,
        )

    def environment(self) -> dict[str, str]:
        """Environment variables the profile fixes; values are strings, sorted by name."""
        env: dict[str, str] = dict(SAFETY_ENV)
        if self.pythonhashseed is not None:
            env["PYTHONHASHSEED"] = self.pythonhashseed
        for var in _THREAD_VARS if self.threads else ():
            env[var] = str(self.threads)
        if self.cublas_workspace_config:
            env["CUBLAS_WORKSPACE_CONFIG"] = self.cublas_workspace_config
        if self.cpu_capability:
            env["ATEN_CPU_CAPABILITY"] = self.cpu_capability
            isa = _ISA_NAMES[self.cpu_capability]
            if isa:
                env["ONEDNN_MAX_CPU_ISA"] = isa
                env["DNNL_MAX_CPU_ISA"] = isa
                env["MKL_CBWR"] = "AVX2" if self.cpu_capability == "avx2" else "AVX512"
        env.update(self.nccl)
        env.update(SAFETY_ENV)  # last: no profile can switch NVLink multicast back on
        return dict(sorted(env.items()))


def environment(profile: Mapping[str, Any] | Profile) -> dict[str, str]:
    """Environment variables a profile fixes. Pure; values are strings, sorted by name."""
    return (profile if isinstance(profile, Profile) else Profile.parse(profile)).environment()


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
