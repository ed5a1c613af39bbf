"""Facts read inside the training process: libraries and devices as the training code sees them
(so they describe the image, not the host). Standard library only at module level."""

from __future__ import annotations

import os
import platform

from runner.core import installed
from runner.core.json_types import Json, JsonObject


def process() -> JsonObject:
    """Inside the training process: libraries and devices as the training code sees them."""
    import torch

    gpus: list[Json] = []
    out: JsonObject = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "gpus": gpus,
    }
    out["lightning"] = _version("pytorch_lightning", "pytorch-lightning")
    if torch.cuda.is_available():
        out["cudnn"] = torch.backends.cudnn.version()
        try:
            out["nccl"] = ".".join(str(x) for x in torch.cuda.nccl.version())
        except Exception:  # noqa: BLE001 - NCCL absent in some builds
            out["nccl"] = None
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append(
                {
                    "index": i,
                    "name": p.name,
                    "uuid": str(getattr(p, "uuid", "")),
                    "capability": f"{p.major}.{p.minor}",
                    "memory_bytes": p.total_memory,
                }
            )
        out["driver"] = _nvidia_driver()
    return out


def _version(module: str, distribution: str) -> str | None:
    """A library's version without importing it (Lightning takes seconds to import; a plain
    script's run should not wait for that), or its ``__version__`` when it is already loaded."""
    import sys
    from importlib import metadata

    if module in sys.modules:
        return getattr(sys.modules[module], "__version__", None)
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


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
    return installed.packages()
