"""Signed statements beside a run: its provenance, and a replay's verdict about the run it replayed.

:func:`write_provenance` runs wherever a run's final manifest is written (completed, failed or
interrupted): it hashes the manifest file and the logs, builds the statement
(:func:`runner.core.provenance.statement`), signs it when a key is set and writes
``provenance.intoto.jsonl`` whole. An unsigned run gets the same envelope with no signatures, so
its digests are still there to read; ``runner verify`` refuses it as unsigned.
:func:`write_verdict` does the same for a replay's VSA (``verification.intoto.jsonl`` in the
replay's run dir). Reading them back for ``runner verify`` is :func:`read_envelopes` and
:func:`on_disk`.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from runner.core import layout, provenance
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.manifest import Manifest
from runner.host import atomic, signing
from runner.host.hashing import sha256_file

MAX_ENVELOPE_BYTES = 64 * 1024 * 1024  # a provenance file past this is not one this runner wrote


def builder() -> provenance.Builder:
    """This runner, on this host."""
    try:
        version = metadata.version("runner")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return provenance.Builder(version=version, host=platform.node())


def signer_for(config: Mapping[str, Any], fresh: bool) -> signing.Signer | None:
    """The key a run signs with: ``signing.key`` of a new run's config (its default is the
    ``RUNNER_SIGNING_KEY`` variable), or that variable for a replay or a resume, which the person
    running them signs rather than whoever made the record. None: the run is unsigned."""
    section = config.get("signing") if fresh else None
    key = section.get("key") if isinstance(section, Mapping) else None
    key = key or os.environ.get(signing.ENV_KEY)
    if not key:
        return None
    signer = signing.load_signer(str(key))
    signer.sign(b"runner: can this key sign?")  # now, not when the run is over (an agent gone, say)
    return signer


def unsigned_line() -> str:
    return (
        f"unsigned: set signing.key or {signing.ENV_KEY} (`runner keygen` makes a key) "
        f"to sign this run's {layout.PROVENANCE}"
    )


def write_provenance(run_dir: Path, m: Manifest, signer: signing.Signer | None) -> str | None:
    """Write the run's signed provenance beside its manifest; returns a line when it had to be
    written unsigned because signing failed (the record is written either way)."""
    logs = {
        f"{layout.LOGS_DIR}/{p.name}": sha256_file(p)
        for p in sorted((run_dir / layout.LOGS_DIR).glob("*"))
        if p.is_file() and not p.is_symlink()
    }
    statement = provenance.statement(m, sha256_file(run_dir / layout.MANIFEST), logs, builder())
    return _write(run_dir / layout.PROVENANCE, statement, signer)


def write_verdict(
    original_dir: Path, replay_dir: Path, passed: bool, signer: signing.Signer | None
) -> str | None:
    """Write a replay's signed verdict (a SLSA VSA) about the run in ``original_dir`` into the
    replay's run dir; returns a line when it had to be written unsigned."""
    from runner.host import records

    original, replayed = records.read_manifest(original_dir), records.read_manifest(replay_dir)
    prov = original_dir / layout.PROVENANCE
    facts = provenance.ReplayFacts(
        original_run_id=original.run_id,
        original_manifest_sha256=sha256_file(original_dir / layout.MANIFEST),
        original_provenance_sha256=sha256_file(prov) if prov.is_file() else None,
        passed=passed,
        replay_dir=str(replay_dir),
        replay_run_id=replayed.run_id,
        image=replayed.image,
        verified=time.time(),
    )
    return _write(replay_dir / layout.VERIFICATION, provenance.verification_summary(facts, builder()), signer)


def _write(path: Path, statement: provenance.Statement, signer: signing.Signer | None) -> str | None:
    env = provenance.envelope(statement)
    note = None
    if signer is not None:
        try:
            env.signatures.append(signer.sign(provenance.pae(env.payloadType, env.payload_bytes())))
        except RunnerError as exc:
            note = f"{path.name} written unsigned: {exc.message}"
    atomic.write_text(path, env.model_dump_json() + "\n", durable=True)
    return note


def read_envelopes(path: Path) -> list[provenance.Envelope]:
    """Every envelope in a ``.intoto.jsonl`` file; RunnerError naming the file for anything else."""
    try:
        if path.stat().st_size > MAX_ENVELOPE_BYTES:
            raise RunnerError(f"{path.name}: larger than any this runner writes", EXIT_USAGE)
        text = path.read_bytes().decode()
    except FileNotFoundError:
        raise RunnerError(f"{path.name}: missing", EXIT_USAGE) from None
    except OSError as exc:
        raise RunnerError(f"{path.name}: cannot read it: {exc.strerror}", EXIT_USAGE) from None
    except UnicodeDecodeError:
        raise RunnerError(f"{path.name}: not UTF-8 text", EXIT_USAGE) from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise RunnerError(f"{path.name}: empty", EXIT_USAGE)
    found = []
    for i, line in lines:
        try:
            found.append(provenance.read_envelope(line))
        except RunnerError as exc:
            raise RunnerError(f"{path.name} line {i}: {exc.message}", EXIT_USAGE) from None
    return found


def on_disk(run_dir: Path, names: Iterable[str]) -> dict[str, str | None]:
    """sha256 of each named file inside ``run_dir`` (None: missing, or not a plain file in it). A
    name is only looked at when it stays inside the run dir, through no link."""
    found: dict[str, str | None] = {}
    for name in names:
        found[name] = None
        if not provenance.safe_name(name):
            continue
        path = run_dir / name
        try:
            if not _through_a_link(run_dir, name) and path.is_file():
                found[name] = sha256_file(path)
        except (OSError, ValueError):
            continue
    return found


def _through_a_link(run_dir: Path, name: str) -> bool:
    """Whether ``run_dir/name`` or a directory on the way to it is a symbolic link."""
    parts = Path(name).parts
    return any((run_dir.joinpath(*parts[: i + 1])).is_symlink() for i in range(len(parts)))


def files_under(run_dir: Path, sub: str) -> list[str]:
    """Every plain file under ``run_dir/sub`` (what a run's record hashes there: no links), as names
    relative to the run dir."""
    root = run_dir / sub
    if not root.is_dir() or root.is_symlink():
        return []
    return sorted(
        p.relative_to(run_dir).as_posix() for p in root.rglob("*") if p.is_file() and not p.is_symlink()
    )
