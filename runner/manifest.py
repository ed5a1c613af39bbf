"""The run manifest: schema, atomic write, validated read.

``manifest.json`` is the record a result is published on, so it is written whole or not at
all (temp file, fsync, rename) and read back through the schema: a manifest from an unknown
schema version, or one that is malformed, is refused with a message, never half-trusted.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner import atomic
from runner.errors import EXIT_USAGE, RunnerError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
SECRET_PATTERN = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
REDACTED = "<redacted>"

Status = Literal["completed", "failed", "interrupted"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FileRecord(_Model):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class Code(_Model):
    commit: str | None
    dirty: bool
    snapshot: str
    snapshot_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    files: int


class Image(_Model):
    tag: str
    id: str
    kind: str
    content_hash: str
    dockerfile: str
    dockerfile_sha256: str
    lock: str
    lock_sha256: str
    base_ref: str
    base_digest: str | None
    base_id: str
    python_version: str
    build_args: dict[str, str]
    built_now: bool
    build_seconds: float | None = None
    engine: dict[str, Any] | None = None


class Determinism(_Model):
    profile: dict[str, Any]
    seed: int
    flags: dict[str, Any] | None = None  # read back inside the training process


class Data(_Model):
    name: str
    root: str
    files: dict[str, FileRecord]


class Fingerprints(_Model):
    file: str
    sha256: str
    every_k_steps: int
    steps: int


class Timings(_Model):
    started: float
    finished: float
    image_seconds: float | None = None
    train_seconds: float | None = None
    container_seconds: float | None = None
    total_seconds: float


class Manifest(_Model):
    schema_version: Literal[1]
    run_id: str
    status: Status
    exit_code: int
    error: str | None = None
    log_tail: list[str] = []
    command: list[str]
    overrides: list[str]
    config: dict[str, Any]
    experiment: dict[str, Any]
    code: Code | None = None
    containerized: bool
    image: Image | None = None
    launch: dict[str, Any]
    environment: dict[str, str]
    determinism: Determinism
    host: dict[str, Any]
    process: dict[str, Any] | None = None
    packages: list[str] = []
    data: Data | None = None
    outputs: dict[str, FileRecord] = {}
    outputs_partial: bool = False
    fingerprints: Fingerprints | None = None
    metrics: dict[str, Any] = {}
    timings: Timings
    replay_of: dict[str, Any] | None = None
    resumes: list[dict[str, Any]] = []


def redact(env: dict[str, str]) -> dict[str, str]:
    """Environment as a manifest may hold it: values of secret-looking names are never written."""
    return {k: (REDACTED if SECRET_PATTERN.search(k) else v) for k, v in sorted(env.items())}


def write(run_dir: Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically: readers see the old file or the whole new one."""
    # a full disk or Ctrl-C mid-write: the old manifest stays, no stray temp file
    path = atomic.write_text(run_dir / MANIFEST_NAME, manifest.model_dump_json(indent=2), durable=True)
    return path


def locate(path: str | os.PathLike) -> Path:
    """A run dir or a manifest path → the manifest path (which must exist)."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    if not p.is_file():
        raise RunnerError(f"no manifest at {p}", EXIT_USAGE)
    return p


def read(path: str | os.PathLike) -> Manifest:
    p = locate(path)
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
    if version != SCHEMA_VERSION:
        raise RunnerError(
            f"{p} has schema version {version!r}; this runner reads version {SCHEMA_VERSION}", EXIT_USAGE
        )
    try:
        return Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]).encode("unicode_escape").decode("ascii")[:120] or "(top)"
        raise RunnerError(
            f"{p} is not a valid manifest: {where}: {first['msg']} ({exc.error_count()} problem(s))", EXIT_USAGE
        ) from None
