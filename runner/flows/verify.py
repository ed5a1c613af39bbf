"""``runner verify RUN_DIR [--key PUB | --allowed-signers FILE]``: is this run what its signer signed?

It holds when, and only when, all of these do:

* ``provenance.intoto.jsonl`` carries a signature by a trusted key (``--key`` or ``--allowed-signers``);
* every file the statement names (``manifest.json``, ``fingerprints.jsonl``, ``code.tar``, every
  output) is on disk with the sha256 it was signed with, and no output was added since;
* the statement is this run's: the run id it names is the one in the run dir's manifest (an
  envelope copied over from another run is refused).

Otherwise it names each file that differs or is missing, and exits non-zero. The replays found under
``RUN_DIR/replays/`` are listed with their signed verdicts; they do not change the exit status. No
engine, no network: files, hashes and signatures only.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from runner.core import commands, layout, provenance
from runner.core.errors import EXIT_FAILED, EXIT_USAGE, RunnerError
from runner.host import attest, signing


@dataclass
class Report:
    run_dir: Path
    run_id: str | None = None
    signers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    files: int = 0
    replays: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.signers)


def verify(run_dir: Path, trust: signing.Trust | None) -> Report:
    """Check the run in ``run_dir`` against its provenance; RunnerError only when it is no run dir."""
    if not run_dir.is_dir():
        raise RunnerError(f"{run_dir} is not a directory", EXIT_USAGE)
    report = Report(run_dir, run_id=_run_id(run_dir))
    try:
        envelopes = attest.read_envelopes(run_dir / layout.PROVENANCE)
    except RunnerError as exc:
        report.problems.append(exc.message)
        return report
    for env in envelopes:
        _check(env, trust, report)
    report.replays = [_replay_line(d, run_dir, trust) for d in _replay_dirs(run_dir)]
    return report


def _check(env: provenance.Envelope, trust: signing.Trust | None, report: Report) -> None:
    """One envelope: its statement, its signature, its subjects on disk and whose run it is."""
    name = layout.PROVENANCE
    try:
        st = provenance.read_statement(env, provenance.PROVENANCE_TYPE)
    except RunnerError as exc:
        report.problems.append(f"{name}: {exc.message}")
        return
    signer = _signature(env, trust, name, report.problems)
    if signer:
        report.signers.append(signer)
    on_disk = attest.on_disk(report.run_dir, [s.name for s in st.subject])
    report.problems += provenance.subject_problems(st, on_disk)
    report.files += len(st.subject)
    signed = {s.name for s in st.subject}
    extra = [f for f in attest.files_under(report.run_dir, layout.OUTPUTS_DIR) if f not in signed]
    report.problems += [f"{_shown(f)}: not signed (added after the run)" for f in extra]
    named = provenance.invocation_id(st)
    if named != report.run_id:
        report.problems.append(
            f"{name}: the statement of run {named!r}, not of this run dir's run {report.run_id!r} "
            "(an envelope from another run)"
        )


def _signature(
    env: provenance.Envelope, trust: signing.Trust | None, name: str, problems: list[str]
) -> str | None:
    """Who signed the envelope among the trusted keys, or None with the reason added to ``problems``."""
    if not env.signatures:
        problems.append(f"{name}: unsigned (the run had no signing key)")
        return None
    if trust is None:
        problems.append(
            f"{name}: signature not checked: name the key to trust (--key PUB or --allowed-signers FILE)"
        )
        return None
    data = provenance.pae(env.payloadType, env.payload_bytes())
    for sig in env.signatures:
        who = signing.check(sig, data, trust)
        if who:
            return who
    keyids = ", ".join(_shown(s.keyid[:60]) or "?" for s in env.signatures)
    problems.append(f"{name}: signature does not verify with {trust.describe()} (signed by {keyids})")
    return None


def _shown(text: str) -> str:
    """A name as one printable line."""
    return text.encode("unicode_escape").decode("ascii")[:200]


def _run_id(run_dir: Path) -> str | None:
    """The run id in the run dir's manifest, read loosely (an edited manifest is named by its digest)."""
    try:
        found = json.loads((run_dir / layout.MANIFEST).read_text()).get("run_id")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, str) else None


def _replay_dirs(run_dir: Path) -> list[Path]:
    root = run_dir / layout.REPLAYS_DIR
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if (d / layout.VERIFICATION).is_file())


def _replay_line(replay_dir: Path, run_dir: Path, trust: signing.Trust | None) -> str:
    """One line on a replay's verdict: its result, whether it is about this run, and who signed it."""
    where = replay_dir.relative_to(run_dir).as_posix()
    try:
        env = attest.read_envelopes(replay_dir / layout.VERIFICATION)[0]
        st = provenance.read_statement(env, provenance.VSA_TYPE)
    except RunnerError as exc:
        return f"replay {where}: unreadable verdict: {exc.message}"
    result = _shown(str(st.predicate.get("verificationResult", "?"))[:20])
    manifest = attest.on_disk(run_dir, [layout.MANIFEST])[layout.MANIFEST]
    if [s.digest.get("sha256") for s in st.subject] != [manifest]:
        return f"replay {where}: {result}, but about another manifest than this run's"
    problems: list[str] = []
    who = _signature(env, trust, layout.VERIFICATION, problems)
    return f"replay {where}: {result}, " + (f"signed by {who}" if who else problems[0].partition(": ")[2])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="runner verify", description=commands.COMMANDS["verify"])
    p.add_argument("run", help="a run dir")
    keys = p.add_mutually_exclusive_group()
    keys.add_argument("--key", help="the public key to trust (`runner keygen`'s .pub, or an SSH .pub)")
    keys.add_argument(
        "--allowed-signers", help="an ssh-keygen allowed_signers file: the keys to trust, by name"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    trust = None
    if args.key:
        trust = signing.trust_key(args.key)
    elif args.allowed_signers:
        trust = signing.trust_allowed_signers(args.allowed_signers)
    report = verify(Path(args.run), trust)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": report.ok,
                    "run_id": report.run_id,
                    "signers": report.signers,
                    "problems": report.problems,
                    "replays": report.replays,
                },
                indent=2,
            )
        )
    else:
        _print(report)
    return 0 if report.ok else EXIT_FAILED


def _print(report: Report) -> None:
    for line in report.replays:
        print(line)
    if report.ok:
        print(
            f"verified: run {report.run_id} signed by {', '.join(report.signers)}; {report.files} files match"
        )
        return
    for line in report.problems:
        print(f"runner: verify: {line}", file=sys.stderr)
    print(
        f"NOT verified: run {report.run_id or '?'} in {report.run_dir} ({len(report.problems)} problem(s))",
        file=sys.stderr,
    )
