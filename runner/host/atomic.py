"""Writing a file whole or not at all: readers see the old file or the complete new one.

Standard library only: the worker writes its result with it inside the image.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_text(path: str | os.PathLike, text: str, durable: bool = False) -> Path:
    """Write ``text`` to a temp file beside ``path`` and rename it over ``path``. A failure or an
    interrupt mid-write leaves the old file and no temp file. ``durable`` also fsyncs the file and
    its directory, so the new content survives a crash of the machine."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path
