"""Facts about the machine. Host facts are read on the host; device and library facts are read
inside the training process (so they describe the image, not the host). Standard library only
at module level: the worker imports this inside the image."""

from __future__ import annotations

import os
import platform
from typing import Any


def _cpuinfo() -> dict[str, Any]:
    model, flags = None, []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    isa = sorted(f for f in flags if f.startswith(("avx", "sse4", "fma", "amx", "f16c")))
    return {"model": model or platform.processor(), "isa_flags": isa}


def host() -> dict[str, Any]:
    os_release = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                os_release[k] = v.strip('"')
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "os": os_release.get("PRETTY_NAME", platform.system()),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpu": _cpuinfo(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "python": platform.python_version(),
    }


def gpu_count() -> int:
    """GPUs on this host, from ``nvidia-smi -L`` (0 when there is no NVIDIA driver)."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def process() -> dict[str, Any]:
    """Inside the training process: libraries and devices as the training code sees them."""
    import torch

    out: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "gpus": [],
    }
    try:
        import pytorch_lightning as pl

        out["lightning"] = pl.__version__
    except ImportError:
        out["lightning"] = None
    if torch.cuda.is_available():
        out["cudnn"] = torch.backends.cudnn.version()
        try:
            out["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version())
        except Exception:  # noqa: BLE001 - NCCL absent in some builds
            out["nccl"] = None
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out["gpus"].append(
                {"index": i, "name": p.name, "uuid": str(getattr(p, "uuid", "")),
                 "capability": f"{p.major}.{p.minor}", "memory_bytes": p.total_memory}
            )  # fmt: skip
        out["driver"] = _nvidia_driver()
    return out


def _nvidia_driver() -> str | None:
    try:
        with open("/proc/driver/nvidia/version") as f:
            first = f.readline()
        parts = first.split()
        return next((p for p in parts if p[0].isdigit() and "." in p), first.strip())
    except OSError:
        return None


def packages() -> list[str]:
    """`pip freeze`-style list of the distributions this interpreter sees, sorted."""
    from importlib import metadata

    return sorted(
        {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]},
        key=str.lower,
    )
