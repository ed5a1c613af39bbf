"""A run's provenance and a replay's verdict as in-toto statements in DSSE envelopes. Pure.

* :func:`statement` — what a run was made of and what it made, from its manifest: an in-toto
  Statement v1 whose predicate is SLSA Provenance v1. Its subjects are the files a reader relies on
  (``manifest.json``, ``fingerprints.jsonl``, ``code.tar``, every output), each with its sha256.
* :func:`verification_summary` — a replay's verdict about the run it replayed: a SLSA Verification
  Summary Attestation (VSA) whose subject is the original's ``manifest.json``.
* :func:`pae` and :class:`Envelope` — DSSE: a signature covers ``PAE(payloadType, payload)``, the
  payload's exact bytes, so no JSON canonicalisation is needed to check one.
* :func:`read_envelope`, :func:`read_statement` and :func:`subject_problems` — reading an envelope
  back (anything malformed is a :class:`~runner.core.errors.RunnerError`, never a traceback) and
  comparing its subjects with the digests of the files found on disk.

Signing, hashing files and writing them are :mod:`runner.host.attest` and :mod:`runner.host.signing`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.core import layout
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.manifest import Image, JsonSection, Manifest

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PROVENANCE_TYPE = "https://slsa.dev/provenance/v1"
VSA_TYPE = "https://slsa.dev/verification_summary/v1"
# This runner's own names: what a run is (its buildType), who ran it, what a replay checks.
BUILD_TYPE = "urn:runner:buildtype:run:v1"
REPLAY_POLICY = "urn:runner:policy:bit-identical-replay:v1"
REPLAY_LEVEL = "RUNNER_BIT_IDENTICAL_REPLAY_V1"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class _Open(BaseModel):
    """What is read back: fields this runner does not write are kept, not refused."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class Signature(_Open):
    keyid: str = ""
    sig: str


class Envelope(_Open):
    """A DSSE envelope as JSON holds it: the payload base64-encoded, and its signatures."""

    payload: str
    payloadType: str
    signatures: list[Signature]

    def payload_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError):
            raise RunnerError("its payload is not base64", EXIT_USAGE) from None


class Resource(_Open):
    """An in-toto ResourceDescriptor: a subject, a dependency or a byproduct."""

    name: str
    uri: str | None = None
    digest: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, object] | None = None


class Statement(_Open):
    """An in-toto Statement v1. Its predicate is JSON read back as it stands (untrusted: narrowed
    where it is used); this runner writes it from :class:`Provenance` or :class:`VerificationSummary`."""

    type_: str = Field(default=STATEMENT_TYPE, alias="_type")
    subject: list[Resource] = Field(min_length=1)
    predicateType: str
    predicate: dict[str, object]


class _Doc(BaseModel):
    """What this runner writes: exactly these fields."""

    model_config = ConfigDict(extra="forbid")


class Agent(_Doc):
    """SLSA's builder (of a run) or verifier (of a replay)."""

    id: str
    version: dict[str, str]


class ExternalParameters(_Doc):
    config: JsonSection
    overrides: list[str]
    seed: int
    command: list[str]


class InternalParameters(_Doc):
    determinism: dict[str, object]
    precision: object
    environment: dict[str, str]
    containerized: bool
    launch: dict[str, object]
    engine: dict[str, object] | None


class BuildDefinition(_Doc):
    buildType: str = BUILD_TYPE
    externalParameters: ExternalParameters
    internalParameters: InternalParameters
    resolvedDependencies: list[Resource]


class Metadata(_Doc):
    invocationId: str
    startedOn: str
    finishedOn: str


class RunDetails(_Doc):
    builder: Agent
    metadata: Metadata
    byproducts: list[Resource]


class Provenance(_Doc):
    """SLSA Provenance v1: how a run was made."""

    buildDefinition: BuildDefinition
    runDetails: RunDetails


class ImageUsed(_Doc):
    id: str
    tag: str
    registry_ref: str | None = None


class ReplayRecord(_Doc):
    runDir: str
    runId: str
    image: ImageUsed | None  # None: replayed on the host, in no image


class Policy(_Doc):
    uri: str = REPLAY_POLICY


class VerificationSummary(_Doc):
    """SLSA VSA v1: a replay's verdict on the run it replayed (``replay``: this runner's own field)."""

    verifier: Agent
    timeVerified: str
    resourceUri: str
    policy: Policy = Field(default_factory=Policy)
    inputAttestations: list[Resource]
    verificationResult: Literal["PASSED", "FAILED"]
    verifiedLevels: list[str]
    replay: ReplayRecord


@dataclass(frozen=True)
class Builder:
    """Who made a statement: this runner's version, on which host."""

    version: str
    host: str

    def agent(self, role: str) -> Agent:
        return Agent(
            id=f"urn:runner:{role}:runner@{self.version}:host={self.host}", version={"runner": self.version}
        )


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: the bytes a signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def envelope(statement: Statement, signatures: list[Signature] | None = None) -> Envelope:
    """An envelope around a statement's JSON, unsigned (sign ``pae(payloadType, payload)``, then add
    the signature)."""
    payload = statement.model_dump_json(by_alias=True, exclude_none=True).encode()
    return Envelope(
        payload=base64.b64encode(payload).decode(), payloadType=PAYLOAD_TYPE, signatures=signatures or []
    )


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, as SLSA writes times."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _file(name: str, hexdigest: str, uri: str | None = None) -> Resource:
    return Resource(name=name, uri=uri, digest={"sha256": hexdigest.removeprefix("sha256:")})


def subjects(m: Manifest, manifest_sha256: str) -> list[Resource]:
    """The files a run's statement vouches for: its manifest, fingerprints, code and every output."""
    found = [_file(layout.MANIFEST, manifest_sha256)]
    if m.fingerprints is not None:
        found.append(_file(m.fingerprints.file, m.fingerprints.sha256))
    if m.code is not None:
        found.append(_file(m.code.snapshot, m.code.snapshot_sha256))
    found += [_file(f"{layout.OUTPUTS_DIR}/{name}", rec.sha256) for name, rec in sorted(m.outputs.items())]
    found += [_file(name, rec.sha256) for name, rec in sorted((m.op_traces or {}).items())]
    return found


def dependencies(m: Manifest) -> list[Resource]:
    """SLSA ``resolvedDependencies``: code (commit and snapshot), image, lock, base image, data files."""
    deps: list[Resource] = []
    if m.code is not None:
        if m.code.commit:
            commit = {"gitCommit": m.code.commit}
            deps.append(Resource(name="git-commit", digest=commit, annotations={"dirty": m.code.dirty}))
        deps.append(_file(m.code.snapshot, m.code.snapshot_sha256))
    if m.image is not None:
        deps += image_dependencies(m.image)
    if m.data is not None:
        for name, rec in sorted(m.data.files.items()):
            deps.append(_file(f"data/{m.data.name}/{name}", rec.sha256, uri=f"{m.data.root}/{name}"))
    return deps


def registry_ref(image: Image) -> str | None:
    """Where a registry holds the image, by content (``REPOSITORY@sha256:…``), when one is recorded."""
    ref = getattr(image, "registry_ref", None)  # recorded by runs that pushed their image
    return ref if isinstance(ref, str) and "@sha256:" in ref else None


def image_dependencies(image: Image) -> list[Resource]:
    """The image (its id, and its registry digest when one is recorded), its lock, Dockerfile and base."""
    ref = registry_ref(image)
    about: dict[str, object] = {"kind": image.kind, "content_hash": image.content_hash}
    if ref:
        about["registry_ref"] = ref
    base = image.base_digest or image.base_id
    deps = [
        Resource(
            name="image",
            uri=image.tag,
            digest={"sha256": image.id.removeprefix("sha256:")},
            annotations=about,
        ),
        _file(image.lock, image.lock_sha256),
        _file(image.dockerfile, image.dockerfile_sha256),
        _file("base-image", base.rpartition("@")[2], uri=image.base_ref),
    ]
    if ref:  # the same image as a registry serves it: its manifest's digest, what a pull names
        deps.insert(1, _file("image-registry", ref.rpartition("@")[2], uri=ref))
    return deps


def statement(m: Manifest, manifest_sha256: str, logs: Mapping[str, str], builder: Builder) -> Statement:
    """The SLSA provenance of the run ``m`` records (``manifest_sha256``: of its manifest file as
    written; ``logs``: log file name in the run dir → sha256)."""
    build = BuildDefinition(
        externalParameters=ExternalParameters(
            config=m.config, overrides=m.overrides, seed=m.determinism.seed, command=m.command
        ),
        internalParameters=InternalParameters(
            determinism={"profile": m.determinism.profile, "flags": m.determinism.flags},
            precision=m.config.get("precision"),
            environment=m.environment,
            containerized=m.containerized,
            launch=dict(m.launch),
            engine=m.engine.model_dump() if m.engine else None,
        ),
        resolvedDependencies=dependencies(m),
    )
    hardware: dict[str, object] = {"host": m.host, "process": m.process, "cluster": m.cluster}
    ending: dict[str, object] = {"status": m.status, "exit_code": m.exit_code, "error": m.error}
    details = RunDetails(
        builder=builder.agent("builder"),
        metadata=Metadata(
            invocationId=m.run_id,
            startedOn=timestamp(m.timings.started),
            finishedOn=timestamp(m.timings.finished),
        ),
        byproducts=[
            *(_file(name, digest) for name, digest in sorted(logs.items())),
            Resource(name="hardware", annotations=hardware),
            Resource(name="outcome", annotations=ending),
        ],
    )
    predicate = Provenance(buildDefinition=build, runDetails=details)
    return Statement(
        subject=subjects(m, manifest_sha256),
        predicateType=PROVENANCE_TYPE,
        predicate=predicate.model_dump(mode="json", exclude_none=True),
    )


@dataclass(frozen=True)
class ReplayFacts:
    """What a replay's verdict says about the run it replayed."""

    original_run_id: str
    original_manifest_sha256: str
    original_provenance_sha256: str | None  # None: the original has no provenance file
    passed: bool
    replay_dir: str
    replay_run_id: str
    image: Image | None  # the image the replay ran in (None: on the host)
    verified: float  # when the verdict was reached


def verification_summary(facts: ReplayFacts, builder: Builder) -> Statement:
    """The VSA of a replay: the original run (its manifest) replayed bit for bit, or not."""
    image = facts.image
    used = ImageUsed(id=image.id, tag=image.tag, registry_ref=registry_ref(image)) if image else None
    inputs = []
    if facts.original_provenance_sha256:
        inputs.append(_file(layout.PROVENANCE, facts.original_provenance_sha256))
    summary = VerificationSummary(
        verifier=builder.agent("verifier"),
        timeVerified=timestamp(facts.verified),
        resourceUri=f"urn:runner:run:{facts.original_run_id}",
        inputAttestations=inputs,
        verificationResult="PASSED" if facts.passed else "FAILED",
        verifiedLevels=[REPLAY_LEVEL] if facts.passed else [],
        replay=ReplayRecord(runDir=facts.replay_dir, runId=facts.replay_run_id, image=used),
    )
    return Statement(
        subject=[_file(layout.MANIFEST, facts.original_manifest_sha256)],
        predicateType=VSA_TYPE,
        predicate=summary.model_dump(mode="json", exclude_none=True),
    )


# -- reading back ---------------------------------------------------------------------------------------
def read_envelope(line: str) -> Envelope:
    """One line of a ``.intoto.jsonl`` file as a DSSE envelope; RunnerError for anything else."""
    try:
        env = Envelope.model_validate_json(line)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]).encode("unicode_escape").decode("ascii")[:80]
        raise RunnerError(f"not a DSSE envelope: {where or '(top)'}: {first['msg']}", EXIT_USAGE) from None
    if env.payloadType != PAYLOAD_TYPE:
        raise RunnerError(f"payloadType is {env.payloadType[:80]!r}, not {PAYLOAD_TYPE}", EXIT_USAGE)
    return env


def read_statement(env: Envelope, predicate_type: str) -> Statement:
    """The in-toto statement an envelope carries, which must be of ``predicate_type``."""
    try:
        st = Statement.model_validate_json(env.payload_bytes())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]).encode("unicode_escape").decode("ascii")[:80]
        raise RunnerError(
            f"not an in-toto statement: {where or '(top)'}: {first['msg']}", EXIT_USAGE
        ) from None
    if st.type_ != STATEMENT_TYPE:
        raise RunnerError(f"statement _type is {st.type_[:80]!r}, not {STATEMENT_TYPE}", EXIT_USAGE)
    if st.predicateType != predicate_type:
        raise RunnerError(f"predicateType is {st.predicateType[:80]!r}, not {predicate_type}", EXIT_USAGE)
    return st


def safe_name(name: str) -> bool:
    """Whether a subject's name is a relative path that stays inside the run dir."""
    if not name or "\\" in name or "\0" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


def invocation_id(st: Statement) -> str | None:
    """The run id a provenance statement names (``runDetails.metadata.invocationId``)."""
    details = st.predicate.get("runDetails")
    meta = details.get("metadata") if isinstance(details, dict) else None
    found = meta.get("invocationId") if isinstance(meta, dict) else None
    return found if isinstance(found, str) else None


def subject_problems(st: Statement, on_disk: Mapping[str, str | None]) -> list[str]:
    """One line per subject whose file is missing or differs (``on_disk``: name → sha256, or None
    when there is no such file), or whose name or digest no statement of this runner would hold."""
    problems = []
    for s in st.subject:
        want = s.digest.get("sha256")
        shown = s.name.encode("unicode_escape").decode("ascii")[:200]
        if not safe_name(s.name):
            problems.append(f"{shown}: not a file name inside the run dir")
        elif want is None or not _HEX64.match(want):
            problems.append(f"{shown}: no sha256 recorded for it")
        elif on_disk.get(s.name) is None:
            problems.append(f"{shown}: missing")
        elif on_disk[s.name] != want:
            problems.append(f"{shown}: differs (sha256 {str(on_disk[s.name])[:12]}…, signed {want[:12]}…)")
    return problems
