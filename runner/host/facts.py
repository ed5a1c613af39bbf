"""Facts about the host machine: CPU, memory, OS, and how many GPUs its driver reports.

What the training process itself sees (libraries, devices) is :mod:`runner.worker.facts`."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
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


def detect_cpus() -> list[int]:
    """Cores this process may run on (its affinity mask: respects taskset / cgroup cpusets)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return list(range(os.cpu_count() or 1))


def detect_gpus(env: Mapping[str, str] | None = None) -> list[int]:
    """NVIDIA GPU indices: ``CUDA_VISIBLE_DEVICES`` when it lists indices, else the driver's count."""
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v.strip() for v in visible.split(",") if v.strip()]
        if all(v.isdigit() for v in ids):
            return [int(v) for v in ids]
    try:
        return list(range(len(os.listdir("/proc/driver/nvidia/gpus"))))
    except OSError:
        return list(range(gpu_count()))  # the driver's own count, as a launch reads it


def detected_gpus(cfg: Mapping[str, Any]) -> int:
    """The host's GPU count when the config asks for ``launch.gpus=all`` (it is not probed otherwise)."""
    launch = cfg.get("launch") or {}
    return gpu_count() if isinstance(launch, Mapping) and launch.get("gpus") == "all" else 0
