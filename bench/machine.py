"""The machine a benchmark ran on: CPU, cores, memory, Docker, library versions, load."""

from __future__ import annotations

import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from runner.host import facts


def describe(engine) -> dict[str, Any]:
    """Facts recorded with every result, so a figure is never quoted without its machine."""
    host = facts.host()
    docker = engine.version()
    try:
        import docker as docker_py

        docker_py_version = docker_py.__version__
    except ImportError:  # pragma: no cover - a dependency of the runner
        docker_py_version = None
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = None
    flags = _cpu_flags()
    return {
        "cpu_model": host["cpu"]["model"],
        "cpu_flags": sorted(flags & {"avx2", "avx512f", "sha_ni", "vaes"}),  # what sha256 and kernels use
        "cpu_count": host["cpu_count"],
        "cpus_usable": host["cpus_usable"],
        "memory_gib": _memory_gib(),
        "os": host["os"],
        "kernel": host["kernel"],
        "python": host["python"],
        "torch": torch_version,
        "docker_server": docker.get("version"),
        "docker_api": docker.get("api_version"),
        "docker_py": docker_py_version,
    }


def git_state(root: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            return next(
                (set(line.partition(":")[2].split()) for line in f if line.startswith("flags")), set()
            )
    except OSError:
        return set()


def _memory_gib() -> float | None:
    try:
        pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        return None
    return round(pages * size / 2**30, 1)
