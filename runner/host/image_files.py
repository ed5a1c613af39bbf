"""Images as files: what ``runner export`` writes and ``runner import`` / ``replay --image`` read.

A file holds one image, and the same image always gives the same bytes, so a file's sha256 can be
recorded, compared and published beside a paper:

* ``docker-archive`` — what ``docker save`` writes (``manifest.json``, the image config, one tar per
  layer), its entries sorted, owned by root and dated 1970-01-01. Docker, Podman (``load``),
  Apptainer (``build x.sif docker-archive:FILE``) and Charliecloud (``ch-convert``) read it.

Loading any of them gives the image its id back: the sha256 of its config, which names every
layer's content, so an id that matches the record is the recorded image, bit for bit.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from runner.core.errors import EXIT_USAGE, RunnerError
from runner.host.engine import Engine

DOCKER_ARCHIVE = "docker-archive"


def sniff(path: Path) -> str:
    """The format of an image file, from its content; one line when it is none the runner reads."""
    if not path.is_file():
        raise RunnerError(f"{path}: no such image file", EXIT_USAGE)
    try:
        with tarfile.open(path, "r:") as tar:
            names = set(tar.getnames()[:4096])
    except (tarfile.TarError, OSError) as exc:
        raise RunnerError(
            f"{path} is not an image file the runner reads (a tar archive): {exc}", EXIT_USAGE
        ) from None
    if "manifest.json" in names:
        return DOCKER_ARCHIVE
    raise RunnerError(f"{path} is a tar archive but no image (no manifest.json)", EXIT_USAGE)


def load(engine: Engine, path: Path) -> list[str]:
    """Load the image file into ``engine``; the ids of the images it held."""
    sniff(path)
    return engine.load(path)
