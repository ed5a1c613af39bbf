"""Code snapshots: the exact source a run used, as a deterministic tar archive in the run dir.

The snapshot holds every file git tracks in the project plus untracked files that are not
ignored, as they are on disk at launch (so uncommitted edits are in it). The runner
package itself is added when it lives outside the project. Caveat: ignored files (data,
virtualenvs, caches) are never in a snapshot.

Archives are data: :func:`extract` refuses members that would land outside the target
(absolute paths, ``..``, links, devices) and checks the recorded hash first.
"""

from __future__ import annotations

import io
import lzma
import os
import subprocess
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from runner.core import layout
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.host import atomic
from runner.host.hashing import cache_dir, sha256_file


def project_root() -> Path:
    """The project whose code runs (:func:`runner.host.project.find_root`): ``RUNNER_PROJECT``,
    else the git repository the command started in, else the checkout holding this package."""
    from runner.host.project import find_root

    return find_root()


@dataclass(frozen=True)
class SnapshotInfo:
    commit: str | None
    dirty: bool
    sha256: str
    files: int
    archive: str  # file name inside the run dir


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout


def project_files(root: Path) -> list[str]:
    """Relative paths the snapshot holds, sorted. Falls back to a directory walk outside git."""
    listed = _git(root, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    if listed is None:
        rels = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
        rels = [
            r for r in rels if not any(part.startswith(".") or part == "__pycache__" for part in r.split("/"))
        ]
    else:
        rels = [r for r in listed.split("\0") if r]
    return sorted(r for r in set(rels) if (root / r).is_file() and not (root / r).is_symlink())


def take(project_root: Path, dest_dir: Path) -> SnapshotInfo:
    """Write ``dest_dir/code.tar`` from the project's working tree and describe it."""
    files = [(rel, project_root / rel) for rel in project_files(project_root)]
    pkg = Path(__file__).resolve().parents[1]  # the runner package: runner/host/snapshot.py
    if not pkg.is_relative_to(project_root.resolve()):
        files += [
            (f"runner/{p.relative_to(pkg).as_posix()}", p)
            for p in sorted(pkg.rglob("*.py"))
            if "__pycache__" not in p.parts
        ]
    archive = dest_dir / layout.CODE_ARCHIVE
    with atomic.replacing(archive) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel, path in files:
            data = path.read_bytes()
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0  # content-only: the same tree gives the same bytes
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    commit = (_git(project_root, "rev-parse", "HEAD") or "").strip() or None
    status = _git(project_root, "status", "--porcelain")
    return SnapshotInfo(
        commit=commit,
        dirty=bool(status and status.strip()),
        sha256=sha256_file(archive),
        files=len(files),
        archive=layout.CODE_ARCHIVE,
    )


def _check_member(member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts or not member.name:
        raise RunnerError(f"snapshot archive has an entry outside its root: {member.name!r}", EXIT_USAGE)
    if not (member.isfile() or member.isdir()):
        raise RunnerError(
            f"snapshot archive has a link or special file, refused: {member.name!r}", EXIT_USAGE
        )


def verify(archive: Path, expected_sha256: str) -> None:
    if not archive.is_file():
        raise RunnerError(f"code snapshot missing: {archive}", EXIT_USAGE)
    actual = sha256_file(archive)
    if actual != expected_sha256:
        raise RunnerError(
            f"code snapshot {archive} does not match the manifest (sha256 {actual[:12]}…, recorded "
            f"{expected_sha256[:12]}…): refusing to run altered code",
            EXIT_USAGE,
        )


def extract(archive: Path, expected_sha256: str, *, hashed: bool = False) -> Path:
    """Unpack a verified snapshot into the cache (once per hash) and return its directory.
    ``hashed``: ``expected_sha256`` was just computed from this very file (:func:`take`'s), so it
    is not hashed again."""
    if not hashed:
        verify(archive, expected_sha256)

    def unpack(into: Path) -> None:
        try:
            with tarfile.open(archive, "r") as tar:
                members = tar.getmembers()
                for m in members:
                    _check_member(m)
                tar.extractall(into, members=members, filter="data")
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            # damaged, or entries that cannot coexist (a file where a directory must go): refused, in one line
            why = " ".join(str(exc).split())[:200] or type(exc).__name__
            raise RunnerError(
                f"code snapshot {archive} is not a readable tar archive: {why}", EXIT_USAGE
            ) from None
        for d, _, _ in os.walk(into):  # readable by the unprivileged container user
            os.chmod(d, 0o755)

    return atomic.publish_dir(cache_dir() / "snapshots" / expected_sha256, unpack)
