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
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from runner.core import layout
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.manifest import Manifest

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
    model_config = ConfigDict(extra="allow")


class Signature(_Open):
    keyid: str = ""
    sig: str


class Envelope(_Open):
    """A DSSE envelope as JSON holds it: the payload base64-encoded, and its signatures."""

    payload: str
    payloadType: str  # noqa: N815 — DSSE's own spelling
    signatures: list[Signature]

    def payload_bytes(self) -> bytes:
        try:
            return base64.b64decode(self.payload, validate=True)
        except (binascii.Error, ValueError):
            raise RunnerError("its payload is not base64", EXIT_USAGE) from None


class Subject(_Open):
    name: str
    digest: dict[str, str]


class Statement(_Open):
    type_: str = Field(alias="_type")
    subject: list[Subject] = Field(min_length=1)
    predicateType: str  # noqa: N815 — in-toto's own spelling
    predicate: dict[str, Any]


@dataclass(frozen=True)
class Builder:
    """Who made a statement: this runner's version, on which host."""

    version: str
    host: str

    def id(self, role: str) -> str:
        return f"urn:runner:{role}:runner@{self.version}:host={self.host}"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: the bytes a signature covers."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def envelope(statement: Mapping[str, Any], signatures: list[Signature] | None = None) -> Envelope:
    """An envelope around a statement's JSON (sign :func:`payload_of` it, then add the signatures)."""
    return Envelope(
        payload=base64.b64encode(payload_of(statement)).decode(),
        payloadType=PAYLOAD_TYPE,
        signatures=signatures or [],
    )


def payload_of(statement: Mapping[str, Any]) -> bytes:
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()


def timestamp(seconds: float) -> str:
    """RFC 3339 in UTC, as SLSA writes times."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sha256(hexdigest: str) -> dict[str, str]:
    return {"sha256": hexdigest.removeprefix("sha256:")}


def subjects(m: Manifest, manifest_sha256: str) -> list[dict[str, Any]]:
    """The files a run's statement vouches for: its manifest, fingerprints, code and every output."""
    found = [{"name": layout.MANIFEST, "digest": _sha256(manifest_sha256)}]
    if m.fingerprints is not None:
        found.append({"name": m.fingerprints.file, "digest": _sha256(m.fingerprints.sha256)})
    if m.code is not None:
        found.append({"name": m.code.snapshot, "digest": _sha256(m.code.snapshot_sha256)})
    for name, rec in sorted(m.outputs.items()):
        found.append({"name": f"{layout.OUTPUTS_DIR}/{name}", "digest": _sha256(rec.sha256)})
    for name, rec in sorted((m.op_traces or {}).items()):
        found.append({"name": name, "digest": _sha256(rec.sha256)})
    return found


def dependencies(m: Manifest) -> list[dict[str, Any]]:
    """SLSA ``resolvedDependencies``: code (commit and snapshot), image, lock, base image, data files."""
    deps: list[dict[str, Any]] = []
    if m.code is not None:
        if m.code.commit:
            deps.append(
                {
                    "name": "git-commit",
                    "digest": {"gitCommit": m.code.commit},
                    "annotations": {"dirty": m.code.dirty},
                }
            )
        deps.append({"name": m.code.snapshot, "digest": _sha256(m.code.snapshot_sha256)})
    if m.image is not None:
        deps += image_dependencies(m.image.model_dump())
    if m.data is not None:
        for name, rec in sorted(m.data.files.items()):
            deps.append(
                {
                    "name": f"data/{m.data.name}/{name}",
                    "uri": f"{m.data.root}/{name}",
                    "digest": _sha256(rec.sha256),
                }
            )
    return deps


def registry_digest(image: Mapping[str, Any]) -> str | None:
    """Where a registry holds the image, by content (``REPOSITORY@sha256:…``), when one is recorded."""
    ref = image.get("registry_ref")
    return ref if isinstance(ref, str) and "@sha256:" in ref else None


def image_dependencies(image: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The image (its id, and its registry digest when one is recorded), its lock, Dockerfile and base."""
    found = {"name": "image", "uri": image["tag"], "digest": _sha256(str(image["id"]))}
    found["annotations"] = {"kind": image["kind"], "content_hash": image["content_hash"]}
    registry = registry_digest(image)
    if registry:
        found["annotations"]["registry_ref"] = registry
    base = image.get("base_digest") or image["base_id"]
    deps = [
        found,
        {"name": image["lock"], "digest": _sha256(image["lock_sha256"])},
        {"name": image["dockerfile"], "digest": _sha256(image["dockerfile_sha256"])},
        {"name": "base-image", "uri": image["base_ref"], "digest": _sha256(str(base).rpartition("@")[2])},
    ]
    if registry:  # the same image as a registry serves it: its manifest's digest, what a pull names
        deps.insert(
            1, {"name": "image-registry", "uri": registry, "digest": _sha256(registry.rpartition("@")[2])}
        )
    return deps


def statement(m: Manifest, manifest_sha256: str, logs: Mapping[str, str], builder: Builder) -> dict[str, Any]:
    """The SLSA provenance of the run ``m`` records (``manifest_sha256``: of its manifest file as
    written; ``logs``: log file name in the run dir → sha256)."""
    build = {
        "buildType": BUILD_TYPE,
        "externalParameters": {
            "config": m.config,
            "overrides": m.overrides,
            "seed": m.determinism.seed,
            "command": m.command,
        },
        "internalParameters": {
            "determinism": {"profile": m.determinism.profile, "flags": m.determinism.flags},
            "precision": m.config.get("precision"),
            "environment": m.environment,
            "containerized": m.containerized,
            "launch": m.launch,
            "engine": m.engine.model_dump() if m.engine else None,
        },
        "resolvedDependencies": dependencies(m),
    }
    hardware = {"host": m.host, "process": m.process, "cluster": m.cluster}
    byproducts = [{"name": name, "digest": _sha256(digest)} for name, digest in sorted(logs.items())]
    byproducts.append({"name": "hardware", "annotations": hardware})
    byproducts.append(
        {"name": "outcome", "annotations": {"status": m.status, "exit_code": m.exit_code, "error": m.error}}
    )
    details = {
        "builder": {"id": builder.id("builder"), "version": {"runner": builder.version}},
        "metadata": {
            "invocationId": m.run_id,
            "startedOn": timestamp(m.timings.started),
            "finishedOn": timestamp(m.timings.finished),
        },
        "byproducts": byproducts,
    }
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects(m, manifest_sha256),
        "predicateType": PROVENANCE_TYPE,
        "predicate": {"buildDefinition": build, "runDetails": details},
    }


@dataclass(frozen=True)
class ReplayFacts:
    """What a replay's verdict says about the run it replayed."""

    original_run_id: str
    original_manifest_sha256: str
    original_provenance_sha256: str | None  # None: the original has no provenance file
    passed: bool
    replay_dir: str
    replay_run_id: str
    image: Mapping[str, Any] | None  # the replay's manifest's image record
    verified: float  # when the verdict was reached


def verification_summary(facts: ReplayFacts, builder: Builder) -> dict[str, Any]:
    """The VSA of a replay: the original run (its manifest) replayed bit for bit, or not."""
    image = facts.image or {}
    used = {"id": image.get("id"), "tag": image.get("tag")}
    registry = registry_digest(image)
    if registry:
        used["registry_ref"] = registry
    inputs = []
    if facts.original_provenance_sha256:
        inputs.append({"name": layout.PROVENANCE, "digest": _sha256(facts.original_provenance_sha256)})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": layout.MANIFEST, "digest": _sha256(facts.original_manifest_sha256)}],
        "predicateType": VSA_TYPE,
        "predicate": {
            "verifier": {"id": builder.id("verifier"), "version": {"runner": builder.version}},
            "timeVerified": timestamp(facts.verified),
            "resourceUri": f"urn:runner:run:{facts.original_run_id}",
            "policy": {"uri": REPLAY_POLICY},
            "inputAttestations": inputs,
            "verificationResult": "PASSED" if facts.passed else "FAILED",
            "verifiedLevels": [REPLAY_LEVEL] if facts.passed else [],
            "replay": {"runDir": facts.replay_dir, "runId": facts.replay_run_id, "image": used},
        },
    }


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
