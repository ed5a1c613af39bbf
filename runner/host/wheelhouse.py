"""Fetch a lock's wheels on the host, hash-checked, into a cache dir the image build copies from.

Builds then need no network: the Dockerfile installs from this wheelhouse with
``--no-index --require-hashes``. One directory per lock hash, complete or absent.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from runner.core.errors import EXIT_ENVIRONMENT, RunnerError
from runner.host import atomic
from runner.host.hashing import cache_dir

# The base is Debian bookworm (glibc 2.36): every manylinux tag up to 2.36 runs on it. pip matches
# --platform tags exactly, so they are all listed.
GLIBC_MAX = 36
PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MAX, 4, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
)


def wheelhouse(lock: Path, lock_sha256: str, python_version: str, log=print) -> Path:
    """Directory holding every wheel of ``lock``; downloaded (hash-checked by pip) once per lock.
    A refused or interrupted download leaves no partial wheelhouse in the cache."""
    target = cache_dir() / "wheels" / lock_sha256[:20]

    def download(into: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--require-hashes",
            "--disable-pip-version-check",
            "--progress-bar",
            "off",
            "--python-version",
            python_version,
            "--implementation",
            "cp",
            *[a for p in PLATFORMS for a in ("--platform", p)],
            "-d",
            str(into),
            "-r",
            str(lock),
        ]
        log(f"fetching wheels for {lock.name} into {target}")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = " | ".join(line.strip() for line in proc.stderr.strip().splitlines()[-3:])
            raise RunnerError(f"cannot fetch the wheels pinned by {lock}: {tail}", EXIT_ENVIRONMENT)

    return atomic.publish_dir(target, download)
