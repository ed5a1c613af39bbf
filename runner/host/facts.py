"""Facts about the host machine: CPU, memory, OS, and how many GPUs its driver reports.

What the training process itself sees (libraries, devices) is :mod:`runner.worker.facts`."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

from runner.core.config import Launch
from runner.core.devices import VisibleGpus, asks_for_gpus, gpu_refusal
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.manifest import CpuFacts, HostFacts


def _cpuinfo() -> CpuFacts:
    model: str | None = None
    flags: list[str] = []
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


def host() -> HostFacts:
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


def _nvidia_smi_list() -> tuple[list[int], str]:
    """GPU indices from ``nvidia-smi -L`` (the driver's own numbering), and why there are none."""
    import shutil
    import subprocess

    if not shutil.which("nvidia-smi"):
        return [], "nvidia-smi not found"
    try:
        proc = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return [], "nvidia-smi -L did not answer within 30 s"
    except OSError as exc:
        return [], f"nvidia-smi could not be started: {exc.strerror or exc}"
    ids = []  # from lines "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-…)"; MIG devices' lines are indented
    for line in proc.stdout.splitlines():
        head = line.partition(":")[0].split()
        if len(head) == 2 and head[0] == "GPU" and head[1].isdigit():
            ids.append(int(head[1]))
    if ids:
        return ids, ""
    said = " ".join((proc.stdout.strip() or proc.stderr.strip()).splitlines()[:1])
    if proc.returncode != 0:
        return [], f"nvidia-smi -L failed (exit status {proc.returncode})" + (f": {said}" if said else "")
    return [], "nvidia-smi -L lists no GPU"


def gpu_count() -> int:
    """GPUs on this host, from ``nvidia-smi -L`` (0 when there is no NVIDIA driver)."""
    return len(_nvidia_smi_list()[0])


def visible_gpus() -> VisibleGpus:
    """The GPUs the driver lists (``nvidia-smi -L``): what Docker's device requests and the host
    backend's ``CUDA_VISIBLE_DEVICES`` index into."""
    ids, why = _nvidia_smi_list()
    return VisibleGpus(tuple(ids), why)


def check_gpus(launch: Launch) -> None:
    """Refuse, before anything is fetched, built or started, a launch asking for GPUs this host does
    not show (``launch.gpus``: N, [ids] or all). The driver is asked only when GPUs are asked for."""
    asked = launch.gpus
    if not asks_for_gpus(asked):
        return
    message = gpu_refusal(asked, visible_gpus())
    if message:
        raise RunnerError(message, EXIT_USAGE)


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


def detected_gpus(launch: Launch) -> int:
    """The host's GPU count when the launch asks for ``launch.gpus=all`` (it is not probed otherwise)."""
    return gpu_count() if launch.gpus == "all" else 0
