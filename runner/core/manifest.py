"""The run manifest's schema: what a run records, as typed models. Pure.

Writing and reading ``manifest.json`` (whole or not at all; validated on the way back in) is
:mod:`runner.host.records`.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, NotRequired

from pydantic import BaseModel, ConfigDict, Field, GetPydanticSchema, JsonValue, with_config
from pydantic_core import core_schema
from typing_extensions import TypedDict  # pydantic reads typing's own only from Python 3.12

from runner.core.worker_io import AuditVerdict

SCHEMA_VERSION = 1
SECRET_PATTERN = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)
REDACTED = "<redacted>"

# "running": the provisional record written when a run takes its dir, replaced by how it ended; a run
# still reading "running" whose runner is gone reads "abandoned" (runner.core.record.status_read)
Status = Literal["completed", "failed", "interrupted", "running"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


JsonSection = dict[str, JsonValue]  # what the runner records as it was given, without reading into it
_FORBID = with_config(ConfigDict(extra="forbid"))
_FACTS = with_config(ConfigDict(extra="allow"))  # facts of a machine: a record may hold more of them


# The sections below are typed dicts: a record holds the keys it was written with (an older record
# fewer), and reads and writes back exactly those.
@_FACTS
class EngineVersion(TypedDict, total=False):
    """What the engine that built or found an image said of itself (``Engine.version``; an engine
    of the user's own may tell more)."""

    version: str | None
    api_version: str | None
    os: str | None
    arch: str | None
    kernel: str | None


@_FORBID
class LaunchRecord(TypedDict, total=False):
    """``launch``: how the run was started (:func:`runner.core.record.launch_section`)."""

    backend: str
    user: str | None
    gpus: int | list[int] | str | None  # None: no GPU; a count; the driver's indices; "all"
    world_size: int
    nodes: int
    accelerator: str  # cpu | gpu
    container: str | None  # its name; None: the host backend
    cpuset_cpus: str | None
    mem_limit: str | int | None


@_FACTS
class CpuFacts(TypedDict, total=False):
    model: str | None
    isa_flags: list[str]


@_FACTS
class HostFacts(TypedDict, total=False):
    """``host``: the machine the runner ran on (:func:`runner.host.facts.host`)."""

    hostname: str
    os: str
    kernel: str
    machine: str
    cpu: CpuFacts
    cpu_count: int | None
    cpus_usable: int | None
    python: str


@_FACTS
class GpuFacts(TypedDict, total=False):
    index: int
    name: str
    uuid: str
    capability: str
    memory_bytes: int


@_FACTS
class ProcessFacts(TypedDict, total=False):
    """``process``: libraries and devices as the training code saw them
    (:func:`runner.worker.facts.process`)."""

    python: str
    torch: str
    cuda_runtime: str | None
    cpu_capability: str | None
    cpus_usable: int
    gpus: list[GpuFacts]
    lightning: str | None
    cudnn: int | None
    nccl: str | None
    driver: str | None


@_FORBID
class ReplayOf(TypedDict):
    """``replay_of``: the run a replay replays (its dir, run id, and its manifest's sha256)."""

    path: str
    run_id: str
    manifest_sha256: str


@_FORBID
class Attempt(TypedDict, total=False):
    """How the attempt a resume continues had ended (:func:`runner.core.record.resumes`)."""

    status: str
    exit_code: int
    error: str | None
    container: str | None
    log_tail: list[str]
    steps: int
    timings: JsonSection


@_FORBID
class ResumeRecord(TypedDict, total=False):
    """One entry of ``resumes``: a resume of the run, and the attempt it continued."""

    started: float
    from_step: int | None
    checkpoint: str | None
    run_id: str
    command: list[str]
    container: str | None
    previous: Attempt


@_FORBID
class Allocation(TypedDict, total=False):
    cpus_on_node: int | None
    cpu_ids: list[int] | None
    gpus: list[int]
    mem_per_cpu_mb: int | None
    mem_per_node_mb: int | None


@_FORBID
class RendezvousRecord(TypedDict):
    """``cluster.rendezvous``: how the nodes of a multi-node run reached each other."""

    nodes: int
    network: str
    interface: str
    address: str
    port: int
    taken: NotRequired[list[int]]  # ports another process took before the nodes met (older records: none)


@_FORBID
class ClusterRecord(TypedDict, total=False):
    """``cluster``: the Slurm job a run ran in (:func:`runner.core.cluster.record`)."""

    scheduler: str
    cluster: str | None
    job_id: str | None
    user: str | None
    array_job_id: str | None
    array_task_id: int | None
    restart_count: int
    partition: str | None
    nodelist: str | None
    node: str | None
    num_nodes: int | None
    allocation: Allocation
    rendezvous: RendezvousRecord


def _audit(value: object) -> AuditVerdict:
    return value if isinstance(value, AuditVerdict) else AuditVerdict.from_json(value, "audit")


# the determinism audit's verdict (runner.core.worker_io), read and written through its contract
AuditRecord = Annotated[
    AuditVerdict,
    GetPydanticSchema(
        lambda _type, _handler: core_schema.no_info_plain_validator_function(
            _audit, serialization=core_schema.plain_serializer_function_ser_schema(AuditVerdict.to_json)
        )
    ),
]


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
    engine: EngineVersion | None = None
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
    profile: JsonSection  # the config's determinism section, as recorded
    seed: int
    flags: JsonSection | None = None  # read back inside the training process


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
    config: JsonSection
    experiment: JsonSection  # the config's experiment section, as handed to the worker
    code: Code | None = None
    containerized: bool
    image: Image | None = None
    engine: Engine | None = None  # None: the host backend, a run stopped before it, or an older record
    launch: LaunchRecord
    environment: dict[str, str]
    determinism: Determinism
    host: HostFacts
    process: ProcessFacts | None = None
    packages: list[str] = []
    data: Data | None = None
    outputs: dict[str, FileRecord] = {}
    outputs_partial: bool = False
    fingerprints: Fingerprints | None = None
    metrics: JsonSection = {}
    timings: Timings
    replay_of: ReplayOf | None = None
    resumes: list[ResumeRecord] = []
    # what the determinism audit found before training (runner.core.audit_rules); None: no audit ran
    audit: AuditRecord | None = None
    # per-operation traces of chosen steps (fingerprints.trace_steps): file name → its record
    op_traces: dict[str, FileRecord] | None = None
    # sha256 of the canonical JSON of every other field (runner.core.digests.record_digest),
    # written last; None in manifests written before it existed
    digest: str | None = Field(default=None, pattern=r"^sha256:[0-9a-f]{64}$")
    cluster: ClusterRecord | None = None  # the Slurm job it ran in; None outside one


def redact(env: dict[str, str]) -> dict[str, str]:
    """Environment as a manifest may hold it: values of secret-looking names are never written."""
    return {k: (REDACTED if SECRET_PATTERN.search(k) else v) for k, v in sorted(env.items())}
