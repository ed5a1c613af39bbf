"""``python -m runner.audit experiment=… [overrides]``: the determinism audit alone, no training.

The audit runs as a run of its own (same image, same environment, same data as the run those
overrides describe, with ``determinism.audit=only``): each training process draws its first batch
twice and runs its first step twice from the same state, watched, then ends; the findings are
printed and recorded in that run's manifest under ``audit``. A strict run audits itself the same
way in its own processes before it trains (``determinism.audit=true``, the strict profile's default).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runner.core import audit_rules as rules
from runner.core import commands
from runner.core.config import parse_experiment, section
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.worker_io import AuditFindings, AuditVerdict
from runner.host import records
from runner.host.console import stderr as console


def audit(overrides: list[str], echo=console.print) -> tuple[Path, AuditVerdict | None]:
    """Compose the config as ``python -m runner`` would, audit it, return the run dir and the verdict."""
    from runner.core.run_input import RunInput
    from runner.flows import run
    from runner.flows.cli_common import compose, resolved, validate_overrides

    validate_overrides(overrides)
    cfg = resolved(compose(overrides))
    experiment = parse_experiment(section(cfg, "experiment"))
    if experiment.program:
        raise RunnerError(
            "runner audit runs a target experiment's first step twice; a script or module has no step "
            "the runner can run: a strict run watches its processes while it runs (README: Audit)",
            EXIT_USAGE,
        )
    cfg["determinism"] = {**section(cfg, "determinism"), "audit": "only"}
    name = experiment.name or "run"
    run_dir = (
        Path("runs")
        / "audits"
        / name
        / (time.strftime("%Y-%m-%d_%H-%M-%S") + f"-{time.time_ns() // 1000 % 10**6:06d}")
    )
    try:
        run.run(
            RunInput.new(cfg, [sys.executable, "-m", "runner.audit", *overrides], overrides),
            run_dir,
            echo=lambda line: echo(line, markup=False, soft_wrap=True),
        )
    except RunnerError as exc:
        try:
            found = records.read_audit(run_dir.resolve())
        except RunnerError:
            raise exc from None
        if found is None or found.findings is None:  # no audit step ran: the error is the answer
            raise
        return run_dir, found
    return run_dir, records.read_audit(run_dir.resolve())


def render(run_dir: Path, found: AuditVerdict, out: Console) -> None:
    """The operations the step met (each allowed or not), the switches user code turned, the verdict."""
    findings = found.findings or AuditFindings(ops_seen=0)
    ops = findings.nondeterministic_ops
    t = Table(title=f"operations without a deterministic implementation ({len(ops)})", title_justify="left")
    for col in ("operation", "called at", "backward", "calls", "allowed"):
        t.add_column(col)
    for o in ops:
        t.add_row(
            o.op,
            o.where or "—",
            "yes" if o.in_backward else "",
            str(o.calls),
            "yes" if rules.allowed(o.op, found.allowed_ops) else "[red]no[/]",
        )
    out.print(t)
    for s in findings.switched:
        out.print(
            f"[yellow]switch:[/] {s.switch} is {s.in_force} after the step (the profile sets {s.profile})"
        )
    for name, d in (("step twin", findings.twin), ("data twin", findings.data)):
        if d is not None:
            allowed = "allowed" if rules.allowed(d.op, found.allowed_ops) else "[red]not allowed[/]"
            place = f"{d.module or '—'}, {d.where or '—'}"
            out.print(f"[yellow]{name}:[/] first differed at {d.op} ({place}): {allowed}")
    data = (
        "the first batch drawn twice was the same" if findings.data_checked and findings.data is None else ""
    )
    out.print(
        f"{findings.ops_seen} operations seen on {findings.device}, twice"
        f"{'; ' + data if data else ''}; record: {run_dir}"
    )
    if found.refused:
        out.print(found.message, style="bold red", markup=False, soft_wrap=True)
    else:
        out.print("nothing to refuse", style="bold green")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runner audit",
        description=commands.COMMANDS["audit"],
        epilog="The overrides are those of `runner run` (no -m sweeps); the findings are printed and "
        "recorded under runs/audits/. Exit status: 0 nothing to refuse, 3 an operation is refused "
        "(allow it with determinism.allow_nondeterministic_ops=[…]), 2 bad input.",
    )
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE", help="Hydra overrides, as for `runner run`")
    return p


def main(argv: list[str] | None = None) -> None:
    from runner.flows.cli_common import fail

    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        build_parser().print_help()
        sys.exit(0)
    if any(a in ("-m", "--multirun") for a in args):
        fail(RunnerError("runner.audit audits one configuration: no -m sweeps", EXIT_USAGE))
    try:
        run_dir, found = audit(args)
    except RunnerError as exc:
        fail(exc)
    except KeyboardInterrupt:
        fail(RunnerError("interrupted", 130))
    if found is None:
        fail(RunnerError(f"the audit left no findings in {run_dir}"))
    render(run_dir, found, Console(highlight=False))
    sys.exit(rules.EXIT_REFUSED if found.refused else 0)
