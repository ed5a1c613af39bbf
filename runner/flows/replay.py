"""``python -m runner.replay RUN_DIR``: run a recorded run again and say whether it came out bit for bit.

The replay starts from the manifest, not from today's tree: the recorded code snapshot
(hash-checked, unpacked with every entry confined to its root), the recorded image (reused, or
rebuilt from the snapshot's Dockerfile and lock on the recorded base), the recorded config,
seed and environment variables. Drift in the environment stops it before anything runs unless
``--allow-env-drift``. Afterwards every recorded output hash and the per-step fingerprints are
compared; the verdict is printed (and written to ``verdict.json`` in the replay's run dir),
and the exit status is 0 only when the replay is bit-identical.

The replay's run dir (``<run>/replays/<time>`` or ``--out``) holds a manifest of its own whose
``replay_of`` names the original: path, run id and the sha256 of its manifest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table

from runner.core import cluster, commands, compare, layout, numbers, settings, slots, spec
from runner.core import config as config_mod
from runner.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, RunnerError
from runner.core.json_types import JsonObject
from runner.core.manifest import ReplayOf
from runner.core.run_input import RecordedCode, RunInput
from runner.flows import run
from runner.flows.cli_common import engine_for, fail
from runner.host import atomic, attest, console, rebuild, records, rundir
from runner.host.console import echo as _echo  # replay()'s printer unless told otherwise
from runner.host.interrupts import sigterm_as_interrupt

if TYPE_CHECKING:
    from runner.core.manifest import Manifest
    from runner.host.engine import Engine


@dataclass
class ReplayOutcome:
    verdict: compare.Verdict
    run_dir: Path  # the replay's
    original: records.RunRecord
    how: str  # how the image was had
    failure: str | None  # the replay run's own error, when it did not complete


def default_out(original_dir: Path) -> Path:
    """``<run>/replays/<time>``: a new run dir under the original for each replay."""
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S") + f"-{time.time_ns() // 1000 % 10**6:06d}"
    return original_dir / layout.REPLAYS_DIR / stamp


def _check_writable(run_dir: Path) -> None:
    """Fail early (before any build) when the replay's run dir could not be created, e.g. a
    read-only copy of the original; nothing is created here."""
    parent = run_dir
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise RunnerError(
            f"cannot create the replay's run dir {run_dir}: {parent} is not writable (use --out DIR)",
            EXIT_USAGE,
        )


@dataclass(frozen=True)
class ReplayOptions:
    """How a replay runs besides the record: its command line (to record; default: ``runner.replay
    TARGET``), a change to the recorded config before it runs (``--locate`` trains to a step and
    traces it; its verdict is not signed), the engine by name (an option of the ``engine`` group;
    default: the one the record names), and an image file (``runner export``'s; loaded, and it must
    hold the recorded image)."""

    command: list[str] | None = None
    edit_config: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None
    engine: str | None = None
    image_file: str | os.PathLike | None = None


def replay(
    target: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    allow_env_drift: bool = False,
    echo: Callable[[str], None] = _echo,
    options: ReplayOptions | None = None,
) -> ReplayOutcome:
    """Replay the run at ``target``. Bad input and environment drift raise RunnerError before
    anything is run or written; a replay that runs always ends in a verdict."""
    options = options or ReplayOptions()
    original = records.load(target)
    if original.edited:
        raise RunnerError(f"cannot replay: {original.digest_note} — nothing was run", EXIT_USAGE)
    signer = attest.signer_for({}, fresh=False)  # whoever replays signs the verdict; a bad key: refused here
    run_dir = Path(out).resolve() if out else default_out(original.dir)
    command = options.command or [sys.executable, "-m", "runner.replay", str(target)]
    engine = _engine_spec(original.manifest, options.engine)
    image_file = Path(options.image_file) if options.image_file else None
    asked = _Asked(command, allow_env_drift, options.edit_config, engine, image_file)
    ready, prepared = _prepare(original, run_dir, asked, echo)
    echo(f"replaying {original.manifest.run_id} from {original.dir} into {run_dir} — image: {prepared.how}")
    failure = None
    try:
        run.execute(ready, echo)
    except RunnerError as exc:
        if exc.exit_code == EXIT_INTERRUPTED or not (run_dir / layout.MANIFEST).is_file():
            raise
        failure = exc.message  # the replay ran and failed: still a verdict (not identical)
    outcome = _conclude(original, run_dir, prepared, failure)
    if options.edit_config is None and (
        note := attest.write_verdict(original.dir, run_dir, outcome.verdict.bit_identical, signer)
    ):
        echo(note)  # a faithful replay's verdict is signed, about the original run; this: it could not be
    return outcome


def _conclude(
    original: records.RunRecord, run_dir: Path, prepared: rebuild.Prepared, failure: str | None
) -> ReplayOutcome:
    """The replay's verdict against the original, written to its run dir's ``verdict.json``."""
    replayed = records.load(run_dir)
    verdict = _verdict(original, replayed, prepared.drift)
    _write_json(
        run_dir / layout.VERDICT,
        compare.VerdictFile(str(original.dir), str(run_dir), prepared.how, failure, verdict).to_json(),
    )
    return ReplayOutcome(verdict, run_dir, original, prepared.how, failure)


@dataclass(frozen=True)
class _Asked:
    """What a replay is asked besides the record: its command line, whether drift is allowed, and a
    change to the recorded config (``--locate``)."""

    command: list[str]
    allow_env_drift: bool
    edit_config: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None
    engine: Mapping[str, Any] | None  # launch.engine of the engine chosen by name; None: the host backend
    image_file: Path | None = None  # --image FILE: the recorded image, from a file


def _engine_spec(m: Manifest, name: str | None) -> Mapping[str, Any] | None:
    """The engine named ``name``, else the one the record names (by name: a record does not choose
    code to run), as the user's ``engine`` group gives it; None for a run recorded on the host."""
    if not m.containerized:
        return None
    return engine_for(m.engine.name if m.engine else None, name, "--engine NAME")


def _engine(asked: _Asked) -> Engine | None:
    """The engine asked for by name (not connected yet); None for a run recorded on the host."""
    if asked.engine is None:
        return None
    from runner.host import engine as engines

    return engines.make(asked.engine)


def _prepare(
    original: records.RunRecord, run_dir: Path, asked: _Asked, echo: Callable[[str], None]
) -> tuple[run.Prepared, rebuild.Prepared]:
    """The replay, prepared — recorded code (unpacked and hash-checked once), config, image and
    variables — and checked against the record before anything runs; raises RunnerError
    (EnvironmentDrift for drift) when it cannot be had."""
    allow_env_drift, edit_config = asked.allow_env_drift, asked.edit_config
    m = original.manifest
    if m.code is None:
        raise RunnerError(f"{original.path} records no code snapshot: it cannot be replayed", EXIT_USAGE)
    archive = records.member(original.dir, m.code.snapshot, "code.snapshot")
    rundir.refuse_held(run_dir)  # here, before any build; the claim checks again
    _check_writable(run_dir)
    config: Mapping[str, Any] = slots.unplaced(
        m.config
    )  # a sweep job's cores and GPU ids were that machine's, not the run's
    config = _on_this_machine(config, echo)
    config = edit_config(config) if edit_config else config
    code = RecordedCode(
        archive, m.code.snapshot_sha256, commit=m.code.commit, dirty=m.code.dirty, files=m.code.files
    )
    replay_of = ReplayOf(path=str(original.dir), run_id=m.run_id, manifest_sha256=original.sha256)
    inp = RunInput.replay(config, asked.command, list(m.overrides), code=code, replay_of=replay_of)
    ready = run.prepare(inp, run_dir, _engine(asked))
    env_drift = _env_drift(m, ready.plan, ready.root)
    if env_drift and not allow_env_drift:  # before any build: the record disagrees with its own config
        raise rebuild.EnvironmentDrift(env_drift)
    if ready.engine is not None:
        ready.engine.connect()
    if asked.image_file is not None:  # loaded now, refused unless it holds the recorded image
        _load_image(ready.engine, m, asked.image_file, echo)
    prepared = rebuild.prepare(
        ready.engine, m, ready.root, ready.plan, allow_drift=allow_env_drift, echo=echo
    )
    prepared.drift[:0] = env_drift
    return ready.recorded(prepared.image, prepared.environment), prepared


def _load_image(engine: Engine | None, m: Manifest, image_file: Path, echo: Callable[[str], None]) -> None:
    """``--image FILE``: the recorded image, from the file (:func:`runner.host.image_builder.exact`)."""
    from runner.host import image_builder

    if engine is None or m.image is None:
        raise RunnerError(f"--image {image_file}: the run ran in no image (launch.backend=host)", EXIT_USAGE)
    echo(image_builder.exact(engine, m.image, image_file, echo).how)


def _on_this_machine(config: Mapping[str, Any], echo: Callable[[str], None]) -> Mapping[str, Any]:
    """A multi-node run replays across nodes inside a Slurm allocation that has them, else in one
    container with the same world size. Over gloo (CPU) the bits depend on the ranks, not on where
    they run (tests/e2e/test_slurm.py shows it); NCCL may build its rings differently within one
    node than across nodes, so a GPU run folded this way can differ: the verdict says so if it does."""
    with run.recorded_config():
        folded, nodes = cluster.folded(config)
    if nodes == 1:
        return config
    if cluster.allocation_problem(nodes, os.environ) is None:
        return config
    launch = config_mod.launch_of(folded)
    world = launch.gpu_count or launch.processes
    echo(f"a {nodes}-node run, replayed in one container with the same world size ({world})")
    return folded


def _verdict(
    original: records.RunRecord, replayed: records.RunRecord, drift: list[compare.Drift]
) -> compare.Verdict:
    """The replay against the original: outputs, fingerprints, and what it ran with."""
    m = original.manifest
    verdict = compare.verdict(
        original.manifest, replayed.manifest, original.fingerprints, replayed.fingerprints, drift
    )
    verdict.notes += [n for n in (original.fingerprints_note, original.digest_note) if n]
    flags = settings.flag_drift(m.determinism.flags, replayed.manifest.determinism.flags)
    ran_with = settings.env_drift(m.environment, replayed.manifest.environment) + flags
    if ran_with:
        verdict.drift += ran_with
        verdict.notes.append(
            "the replay ran with settings that differ from the record: "
            + "; ".join(d.describe() for d in ran_with)
        )
    return settings.hold_to_switches(verdict, flags)


def _env_drift(m, plan: spec.RunPlan, snap_dir: Path) -> list[compare.Drift]:
    """Every variable the replay would set against the recorded one (variables passed through from
    the host are set from the record, so they cannot differ)."""
    planned = plan.worker_env(os.environ, snap_dir)
    passthrough = plan.launch.env_passthrough
    return settings.env_drift(m.environment, planned, ignore=(*settings.RUN_PATHS, *passthrough))


def _write_json(path: Path, data: JsonObject) -> None:
    atomic.write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


# -- printing -----------------------------------------------------------------------------------------
def render(outcome: ReplayOutcome, console: Console) -> None:
    """The verdict as tables: what was restored, any drift, outputs, fingerprints, notes."""
    v, m = outcome.verdict, outcome.original.manifest
    console.print(_head_table(outcome))
    if v.drift:
        console.print(_drift_table("environment drift (ran with --allow-env-drift)", v.drift))
    console.print(_outputs_table(v, m))
    console.print(f"[bold]fingerprints:[/] {_fingerprints_line(v, m)}")
    _print_changes(v, console)
    for note in v.notes:
        console.print(f"[yellow]note:[/] {note}")
    style = "bold green" if v.bit_identical else "bold red"
    console.print(f"[{style}]verdict: {v.headline()}[/]")


def _head_table(outcome: ReplayOutcome) -> Table:
    """Which run was replayed where, with what code, image and determinism profile, and how it ended."""
    v, m = outcome.verdict, outcome.original.manifest
    head = Table(title=f"replay of {m.run_id}", show_header=False, title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    head.add_row("original", str(outcome.original.dir))
    head.add_row("replay", str(outcome.run_dir))
    if m.code:
        head.add_row(
            "code",
            f"snapshot sha256 {m.code.snapshot_sha256[:12]}… (commit {(m.code.commit or '?')[:12]}"
            f"{', dirty' if m.code.dirty else ''}) restored and verified",
        )
    head.add_row("image", outcome.how)
    profile = m.determinism.profile
    head.add_row(
        "determinism",
        f"{profile.get('name', '?')} (seed {m.determinism.seed})"
        + ("" if profile.get("promises_bitwise") else " — does not promise identical bits"),
    )
    head.add_row("replay status", v.status + (f": {outcome.failure}" if outcome.failure else ""))
    return head


def _outputs_table(v: compare.Verdict, m: Manifest) -> Table:
    """Each recorded output file against the replay's, and any file only the replay wrote."""
    short = compare.short
    t = Table(title="outputs", title_justify="left")
    for col in ("file", "recorded sha256", "replay sha256", ""):
        t.add_column(col)
    changed = {c.key: c for c in v.outputs}
    for name, rec in sorted((m.outputs or {}).items()):
        c = changed.pop(name, None)
        t.add_row(
            name,
            rec.sha256[:16] + "…",
            short(c.b) if c else rec.sha256[:16] + "…",
            "[red]differs[/]" if c else "[green]identical[/]",
        )
    for name, c in sorted(changed.items()):  # only in the replay
        t.add_row(name, "—", short(c.b), "[red]extra[/]")
    return t


def _fingerprints_line(v: compare.Verdict, m: Manifest) -> str:
    """The fingerprints' verdict in a few words (rich markup)."""
    if v.fingerprints_identical is None:
        return "none recorded"
    if v.fingerprints_identical:
        return (
            f"[green]identical[/] ({m.fingerprints.steps} steps)" if m.fingerprints else "[green]identical[/]"
        )
    if v.divergence:
        return f"[red]first divergence at {v.divergence.describe()}[/]"
    return "[red]differ[/] (no step-by-step comparison possible)"


def _print_changes(v: compare.Verdict, console: Console) -> None:
    """One line per metric, environment variable and package that differs from the original's."""
    short = compare.short
    for c in v.metrics:
        note = numbers.hidden_difference(c.a, c.b, c.key)
        console.print(
            f"[bold]metric[/] {c.key}: {short(c.a, key=c.key)} → {short(c.b, key=c.key)}"
            + (f" ({note})" if note else "")
        )
    for c in v.environment:
        console.print(f"[bold]variable[/] {c.key}: {short(c.a)} → {short(c.b)}")
    for c in v.packages:
        console.print(
            f"[bold]package[/] {c.key}: {short(c.a)} → {short(c.b)} (as the training process saw it)"
        )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runner replay",
        description=commands.COMMANDS["replay"],
        epilog="Exit status: 0 bit-identical, 1 it differs, 2 bad input, 3 environment or drift, 130 "
        "interrupted. With --locate: 1 when a diverging operation is named, 0 when none diverges.",
    )
    p.add_argument("run", help="a run dir or its manifest.json")
    p.add_argument("--out", help="run dir for the replay (default: RUN/replays/<time>)")
    p.add_argument(
        "--allow-env-drift",
        action="store_true",
        help="run even when the environment cannot be rebuilt exactly; the verdict lists the drift",
    )
    p.add_argument(
        "--engine",
        metavar="NAME",
        help="the container engine, an option of the engine group (docker, podman, …; "
        "default: the one the record ran on)",
    )
    p.add_argument(
        "--image",
        metavar="FILE",
        help="load the recorded image from FILE (`runner export` writes it); refused unless it is that image",
    )
    p.add_argument("--json", action="store_true", help="print the verdict as JSON instead of tables")
    p.add_argument(
        "--locate",
        action="store_true",
        help="name the first operation whose output differs at the step the runs diverge at",
    )
    p.add_argument(
        "--step", type=int, help="with --locate: the step to trace (default: where a replay diverged)"
    )
    return p


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    sigterm_as_interrupt()
    if args.locate:
        _locate(args)
    try:
        outcome = replay(
            args.run,
            args.out,
            allow_env_drift=args.allow_env_drift,
            options=ReplayOptions(
                command=[sys.executable, "-m", "runner.replay", *argv],
                engine=args.engine,
                image_file=args.image,
            ),
        )
    except (RunnerError, KeyboardInterrupt) as exc:
        _fail(exc)
    if args.json:
        print(
            json.dumps({"replay": str(outcome.run_dir), **outcome.verdict.to_json()}, indent=2, default=str)
        )
    else:
        render(outcome, Console(highlight=False))
    sys.exit(0 if outcome.verdict.bit_identical else EXIT_FAILED)


def _fail(exc: RunnerError | KeyboardInterrupt) -> NoReturn:
    """The edge's way out: drift as a table first, then the one error line and its exit status."""
    if isinstance(exc, KeyboardInterrupt):
        fail(RunnerError("interrupted", EXIT_INTERRUPTED))
    if isinstance(exc, rebuild.EnvironmentDrift) and exc.drift:
        console.stderr.print(_drift_table("the recorded environment cannot be rebuilt exactly", exc.drift))
    fail(exc)


def _locate(args: argparse.Namespace) -> None:
    from runner.flows import locate

    def rerun(suffix: str, edit: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None) -> ReplayOutcome:
        """A replay of the run into ``<base><suffix>``: every replay of one locate shares a base."""
        out = base.with_name(base.name + suffix)
        return replay(
            args.run,
            out,
            allow_env_drift=args.allow_env_drift,
            echo=_echo,
            options=ReplayOptions(edit_config=edit, engine=args.engine),
        )

    try:
        original = records.load(args.run)
        base = default_out(original.dir)
        found = locate.locate(original, rerun, step=args.step, echo=_echo)
    except locate.NothingToLocate as exc:
        print(exc.message)
        sys.exit(0)
    except (RunnerError, KeyboardInterrupt) as exc:
        _fail(exc)
    if args.json:
        print(
            json.dumps(
                {
                    "step": found.step,
                    "against": found.against,
                    "difference": found.difference,
                    "line": found.line(),
                    "runs": [str(p) for p in found.runs],
                },
                indent=2,
                default=str,
            )
        )
    else:
        Console(highlight=False).print(found.line(), markup=False, soft_wrap=True)
    sys.exit(EXIT_FAILED if found.difference else 0)  # 1: a divergence found, as `runner diff` says


def _drift_table(title: str, drift: list[compare.Drift]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("what", "recorded", "here"):
        t.add_column(col)
    for d in drift:
        t.add_row(d.what, d.recorded, d.found)
    return t


if __name__ == "__main__":
    main()
