"""The run manifest's schema: what a run records, as typed models. Pure.

Writing and reading ``manifest.json`` (whole or not at all; validated on the way back in) is
:mod:`runner.host.records`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
SECRET_PATTERN = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
REDACTED = "<redacted>"

# "running": the provisional record written when a run takes its dir, replaced by how it ended; a run
# still reading "running" whose runner is gone reads "abandoned" (runner.core.record.status_read)
Status = Literal["completed", "failed", "interrupted", "running"]


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
    # where image.registry holds it, by content: REPOSITORY@sha256:… (the registry's manifest digest,
    # what a pull names; ``id`` is the image config's digest, what every engine calls the image)
    registry_ref: str | None = Field(default=None, pattern=r"^[^@\s]+@sha256:[0-9a-f]{64}$")


class Engine(_Model):
    """The container engine a run ran on (:class:`runner.core.engine_types.EngineInfo`), and what of
    the container's limits and locks it could not enforce (``field=value``; the run said so)."""

    name: str
    version: str | None
    rootless: bool
    unenforced: list[str] = []


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
    # the determinism audit's own time (its twin step and data check, in the training process)
    audit_seconds: float | None = None
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
    engine: Engine | None = None  # None: the host backend, a run stopped before it, or an older record
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
    # what the determinism audit found before training (runner.core.audit_rules); None: no audit ran
    audit: dict[str, Any] | None = None
    # per-operation traces of chosen steps (fingerprints.trace_steps): file name → its record
    op_traces: dict[str, FileRecord] | None = None
    # sha256 of the canonical JSON of every other field (runner.core.digests.record_digest),
    # written last; None in manifests written before it existed
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    cluster: dict[str, Any] | None = (
        None  # the Slurm job it ran in (runner.core.cluster.record); None outside one
    )


def redact(env: dict[str, str]) -> dict[str, str]:
    """Environment as a manifest may hold it: values of secret-looking names are never written."""
    return {k: (REDACTED if SECRET_PATTERN.search(k) else v) for k, v in sorted(env.items())}
