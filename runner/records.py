"""A run dir read back for comparison: its validated manifest, the manifest's hash, its fingerprints.

Replay and diff both start here. Everything a manifest names inside its run dir (the code
snapshot, the fingerprint file) must be a plain file name: a record cannot point a reader at
files outside its own directory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner import manifest
from runner.compare import parse_fingerprints
from runner.errors import EXIT_USAGE, RunnerError
from runner.hashing import sha256_bytes, sha256_file


@dataclass(frozen=True)
class RunRecord:
    path: Path  # the manifest file
    dir: Path  # the run dir holding it
    sha256: str  # of the manifest file's bytes: what a replay's `replay_of` points to
    manifest: manifest.Manifest
    fingerprints: list[dict[str, Any]] | None  # None: none recorded, missing, or not the recorded file
    fingerprints_note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.manifest.model_dump(mode="json")


def member(run_dir: Path, name: str, what: str) -> Path:
    """``run_dir/name`` for a name the manifest records; refuses anything but a plain file name."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise RunnerError(f"manifest field {what}={name!r} is not a file name inside the run dir", EXIT_USAGE)
    return run_dir / name


def load(path: str | os.PathLike) -> RunRecord:
    """Read a run dir (or its manifest.json); RunnerError for anything that is not a valid record."""
    mpath = manifest.locate(path).resolve()
    m = manifest.read(mpath)
    try:
        digest = sha256_file(mpath)
    except OSError as exc:
        raise RunnerError(f"cannot read {mpath}: {exc.strerror}", EXIT_USAGE) from None
    rows, note = None, None
    if m.fingerprints is not None:
        fp = member(mpath.parent, m.fingerprints.file, "fingerprints.file")
        if not fp.is_file():
            note = f"{fp} is missing"
        else:
            try:
                data = fp.read_bytes()  # read once: hashed, then parsed
            except OSError as exc:
                raise RunnerError(f"cannot read {fp}: {exc}", EXIT_USAGE) from None
            if sha256_bytes(data) != m.fingerprints.sha256:
                note = f"{fp} does not match the sha256 its manifest records"
            else:
                try:
                    text = data.decode()
                except UnicodeDecodeError as exc:
                    raise RunnerError(f"cannot read {fp}: {exc}", EXIT_USAGE) from None
                rows = parse_fingerprints(text, str(fp))
    return RunRecord(path=mpath, dir=mpath.parent, sha256=digest, manifest=m, fingerprints=rows, fingerprints_note=note)
