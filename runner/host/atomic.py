"""Writing a file or a directory whole or not at all: readers see the old one or the complete new one.

Everything here builds under a temporary name beside the target and renames it into place, and
removes the temporary on any failure or interrupt, so nothing half-written is ever trusted:

* :func:`replacing` — a file written through an open binary handle (an archive, an image);
* :func:`write_text` — a file from a string (a manifest);
* :func:`write_stream` — a file from a stream of chunks, kept only when its sha256 is the one expected
  (a download);
* :func:`publish_dir` — a directory filled once and published whole (a cache entry).

Standard library only.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

COMPLETE = ".complete"  # inside a directory published by publish_dir: it was filled to the end


def _beside(path: Path, kind: str = "tmp") -> Path:
    """A temporary name next to ``path``: same file system (so the rename is atomic), hidden, per process."""
    return path.with_name(f".{path.name}.{os.getpid()}.{kind}")


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replacing(path: str | os.PathLike, durable: bool = False, mode: int | None = None) -> Iterator[BinaryIO]:
    """An open binary file that becomes ``path`` when the block ends without an exception. An
    exception (or an interrupt) in the block leaves the old ``path`` and no temp file. ``durable``
    also fsyncs the file and its directory, so the new content survives a crash of the machine;
    ``mode`` (0o600, say) is set before a byte is written."""
    path = Path(path)
    tmp = _beside(path)
    try:
        with open(tmp, "wb") as f:
            if mode is not None:
                os.fchmod(f.fileno(), mode)
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        _fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str, durable: bool = False, mode: int | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` whole or not at all; see :func:`replacing`."""
    with replacing(path, durable=durable, mode=mode) as f:
        f.write(text.encode())
    return Path(path)


class _Discard(Exception):
    """Leaves a :func:`replacing` block without publishing its file."""


def write_stream(path: str | os.PathLike, chunks: Iterable[bytes], sha256: str | None = None) -> str:
    """Write ``chunks`` to ``path``, hashing them on the way, and return their sha256. With ``sha256``
    given, ``path`` is written only when the digest equals it: a mismatch returns the digest and
    leaves ``path`` as it was (compare the result to tell). An error mid-stream leaves it as well."""
    h = hashlib.sha256()
    try:
        with replacing(path) as f:
            for chunk in chunks:
                h.update(chunk)
                f.write(chunk)
            if sha256 is not None and h.hexdigest() != sha256:
                raise _Discard
    except _Discard:
        pass
    return h.hexdigest()


def _remove_tree(path: Path) -> None:
    """Remove a directory tree, also one with read-only subdirectories (an extracted archive keeps
    its modes); a tree that is already gone is fine."""

    def writable_then_retry(func: Callable[[str], object], name: str, _exc_info: object) -> None:
        parent = os.path.dirname(name)
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
        func(name)

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path, onerror=writable_then_retry)


def publish_dir(target: str | os.PathLike, fill: Callable[[Path], None]) -> Path:
    """``target``, filled by ``fill`` once: ``fill`` gets an empty temp directory beside ``target``,
    which is marked :data:`COMPLETE` and renamed to ``target`` when ``fill`` returns. A target
    already complete is returned as it is, without calling ``fill``. An exception (or an interrupt)
    in ``fill`` removes the temp directory and propagates: no partial directory is left to be
    trusted. When another process publishes the same target first, its copy is kept."""
    target = Path(target)
    if (target / COMPLETE).exists():
        return target
    tmp = _beside(target, "part")
    _remove_tree(tmp)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        (tmp / COMPLETE).touch()
    except BaseException:
        _remove_tree(tmp)
        raise
    try:
        os.rename(tmp, target)
    except OSError:  # a concurrent publisher got there first
        _remove_tree(tmp)
    return target
