"""Run records on disk: ``manifest.json`` written whole or not at all, and read back validated.

``manifest.json`` is the record a result is published on, so it is written atomically (temp file,
fsync, rename) and read back through the schema: a manifest from an unknown schema version, or one
that is malformed, is refused with a message, never half-trusted. :func:`load` reads a run dir back
for comparison: its validated manifest, the manifest's hash, its fingerprints.

Replay and diff both start here. Everything a manifest names inside its run dir (the code
snapshot, the fingerprint file) must be a plain file name: a record cannot point a reader at
files outside its own directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from runner.core import audit_rules, fingerprints, layout, manifest, op_traces, worker_io
from runner.core.digests import DIGEST_FIELD, check_digest, record_digest, sha256_bytes
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.json_types import JsonObject
from runner.core.worker_io import AuditVerdict, ContractError
from runner.host import atomic
from runner.host.hashing import sha256_file


@dataclass(frozen=True)
class RunRecord:
    path: Path  # the manifest file
    dir: Path  # the run dir holding it
    sha256: str  # of the manifest file's bytes: what a replay's `replay_of` points to
    manifest: manifest.Manifest
    fingerprints: list[fingerprints.Row] | None  # None: none recorded, missing, or not the recorded file
    fingerprints_note: str | None = None
    edited: bool = False  # the manifest's content no longer matches the digest it records
    digest_note: str | None = None  # why the content could not be checked, or that it was edited


def member(run_dir: Path, name: str, what: str) -> Path:
    """``run_dir/name`` for a name the manifest records; refuses anything but a plain file name."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise RunnerError(f"manifest field {what}={name!r} is not a file name inside the run dir", EXIT_USAGE)
    return run_dir / name


def load(path: str | os.PathLike) -> RunRecord:
    """Read a run dir (or its manifest.json); RunnerError for anything that is not a valid record."""
    mpath = locate_manifest(path).resolve()
    raw, m = _read(mpath)
    edited, digest_note = check_digest(raw)
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
                rows = fingerprints.parse(text, strict=True, where=str(fp))
    return RunRecord(
        path=mpath,
        dir=mpath.parent,
        sha256=digest,
        manifest=m,
        fingerprints=rows,
        fingerprints_note=note,
        edited=edited,
        digest_note=digest_note and f"{mpath} {digest_note}",
    )


def read_fingerprints(run_dir: Path) -> list[fingerprints.Row]:
    """The fingerprint rows a run has written so far, as far as they read: a run killed mid-line
    leaves a torn last line, which is skipped. No fingerprint file: no rows. For a recorded run
    whose file the manifest vouches for, :func:`load` reads it strictly instead."""
    path = run_dir / layout.FINGERPRINTS
    if not path.is_file():
        return []
    return fingerprints.parse(path.read_text(errors="replace"), strict=False, where=str(path))


def write_manifest(run_dir: Path, m: manifest.Manifest) -> Path:
    """Write ``manifest.json`` atomically: readers see the old file or the whole new one."""
    # sealed over exactly what is written: the JSON text read back, not the model (NaN → null)
    content = json.loads(m.model_dump_json(exclude={DIGEST_FIELD}))
    content[DIGEST_FIELD] = record_digest(content)
    # a full disk or Ctrl-C mid-write: the old manifest stays, no stray temp file
    path = atomic.write_text(run_dir / layout.MANIFEST, json.dumps(content, indent=2), durable=True)
    return path


def locate_manifest(path: str | os.PathLike) -> Path:
    """A run dir or a manifest path → the manifest path (which must exist)."""
    p = Path(path)
    if p.is_dir():
        p = p / layout.MANIFEST
    if not p.is_file():
        raise RunnerError(f"no manifest at {p}", EXIT_USAGE)
    return p


def read_manifest(path: str | os.PathLike) -> manifest.Manifest:
    return _read(locate_manifest(path))[1]


def _read(p: Path) -> tuple[JsonObject, manifest.Manifest]:
    """The manifest file's JSON object, and the same validated; RunnerError for anything else."""
    try:
        raw = json.loads(p.read_text())
    except ValueError as exc:  # not UTF-8, not JSON, or an integer past Python's digit limit
        raise RunnerError(f"{p} is not valid JSON: {' '.join(str(exc).split())[:200]}", EXIT_USAGE) from None
    except RecursionError:
        raise RunnerError(f"{p} is not a manifest (JSON nested too deep to read)", EXIT_USAGE) from None
    except OSError as exc:
        raise RunnerError(f"cannot read {p}: {exc.strerror}", EXIT_USAGE) from None
    if not isinstance(raw, dict):
        raise RunnerError(f"{p} is not a manifest (expected a JSON object)", EXIT_USAGE)
    version = raw.get("schema_version")
    if version != manifest.SCHEMA_VERSION:
        raise RunnerError(
            f"{p} has schema version {version!r}; this runner reads version {manifest.SCHEMA_VERSION}",
            EXIT_USAGE,
        )
    try:
        return raw, manifest.Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = (
            ".".join(str(x) for x in first["loc"]).encode("unicode_escape").decode("ascii")[:120] or "(top)"
        )
        raise RunnerError(
            f"{p} is not a valid manifest: {where}: {first['msg']} ({exc.error_count()} problem(s))",
            EXIT_USAGE,
        ) from None


def read_audit(run_dir: Path) -> AuditVerdict | None:
    """The determinism audit's verdict on the run in ``run_dir`` (``audit/audit.json``); None when
    no audit ran. RunnerError when the file holds something else (an audit cut off mid-write)."""
    path = run_dir / audit_rules.DIR / audit_rules.FILE
    try:
        return worker_io.read(path, AuditVerdict.from_json)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunnerError(f"cannot read {path}: {exc.strerror}", EXIT_USAGE) from None
    except ContractError as exc:
        raise RunnerError(f"not an audit verdict: {exc}", EXIT_USAGE) from None


def op_traces_written(run_dir: Path) -> dict[str, manifest.FileRecord] | None:
    """The operation traces a run wrote (file name → sha256 and size), for its manifest; None when none."""
    found = {
        p.name: manifest.FileRecord(sha256=sha256_file(p), bytes=p.stat().st_size)
        for p in sorted(run_dir.glob("op-trace-step-*.jsonl"))
        if op_traces.step_of(p.name) is not None
    }
    return found or None


def resume_point(run_dir: Path) -> tuple[int, Path] | None:
    """The checkpoint a ``+resume`` of ``run_dir`` starts from, and its step: the newest one the
    fingerprints reach (a run killed outright may have checkpointed steps whose rows it never wrote,
    and a resume from there could not give the same record). None: start from the beginning."""
    return layout.latest_checkpoint(run_dir / layout.CHECKPOINT_DIR, at_most=_fingerprinted(run_dir))


def _fingerprinted(run_dir: Path) -> int | None:
    """The last step up to which ``fingerprints.jsonl`` holds every step's row (None: no file)."""
    if not (run_dir / layout.FINGERPRINTS).is_file():
        return None
    steps = {int(row["step"]) for row in read_fingerprints(run_dir) if not row.get("final")}
    last = 0
    while last + 1 in steps:
        last += 1
    return last
