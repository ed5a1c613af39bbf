"""``python -m runner.diff RUN_A RUN_B``: what differs between two runs, side by side.

Sections: config (flattened keys), environment variables, packages, image, host, devices,
determinism, launch, code, data, output hashes, metrics — and the first training step at which
the two runs' fingerprints part. Tables for a terminal; ``--json`` for machines. Reads only;
the comparison rules live in :mod:`runner.core.compare`.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table

from runner.core import commands, compare, numbers
from runner.core.errors import EXIT_FAILED, RunnerError
from runner.flows.cli_common import fail
from runner.host import records


def diff(path_a: str, path_b: str) -> compare.RunDiff:
    """Load two run dirs (or manifests) and compare them; RunnerError for a bad record."""
    a, b = records.load(path_a), records.load(path_b)
    d = compare.diff_runs(a.manifest, b.manifest, a.fingerprints, b.fingerprints, str(a.dir), str(b.dir))
    for label, rec in (("A", a), ("B", b)):
        if rec.edited:  # shown first, in one line: nothing else about this run can be taken at its word
            d.notes.insert(0, f"{label}: EDITED: {rec.digest_note}")
        elif rec.digest_note:
            d.notes.append(f"{label}: {rec.digest_note}")
        if rec.fingerprints_note:
            d.notes.append(f"{label}: {rec.fingerprints_note}")
    from runner.flows.locate import recorded_differences

    d.notes += recorded_differences(a, b)
    return d


def render(d: compare.RunDiff, console: Console) -> None:
    console.print(f"[bold]A[/] {d.a}\n[bold]B[/] {d.b}")
    same = []
    for name in compare.SECTIONS:
        rows = d.sections[name]
        if not rows:
            same.append(name)
            continue
        t = Table(title=f"{name} ({len(rows)} differ)", title_justify="left", min_width=len(name) + 14)
        t.add_column("key", style="bold")
        t.add_column("A")
        t.add_column("B")
        for c in rows:
            note = numbers.hidden_difference(c.a, c.b, c.key)
            b = compare.short(c.b, key=c.key) + (f" ({note})" if note else "")
            t.add_row(c.key, compare.short(c.a, key=c.key), b)
        console.print(t)
    if same:
        console.print(f"[green]same:[/] {', '.join(same)}")
    if d.divergence is not None:
        console.print(f"[bold]first diverging step:[/] [red]{d.divergence.describe()}[/]")
    elif d.fingerprints_identical or (d.fingerprints_identical is None and not d.notes):
        console.print("[bold]first diverging step:[/] none — fingerprints agree at every recorded step")
    else:
        console.print("[bold]first diverging step:[/] none found in the steps both recorded")
    for note in d.notes:
        console.print(f"[bold red]warning:[/] {note}" if ": EDITED: " in note else f"[yellow]note:[/] {note}")
    console.print(f"[bold]{verdict(d)}[/]")


def verdict(d: compare.RunDiff) -> str:
    """The last line: what the exit status says (1: something the runs produced differs)."""
    if not d.differs:
        return "same outputs, fingerprints and metrics"
    parts = [] if d.outputs_identical else ["outputs"]
    if d.divergence is not None or d.fingerprints_identical is False:
        parts.append("fingerprints")
    if d.result_changes:
        parts.append("metrics (" + ", ".join(c.key for c in d.result_changes) + ")")
    return "differ: " + ", ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runner diff",
        description=commands.COMMANDS["diff"],
        epilog="Exit status: 0 when outputs, fingerprints and metrics are the same (rates and seconds "
        "are not compared), 1 when any differs, 2 for a bad record. Numbers are rounded to 5 "
        "significant figures; --json keeps every digit.",
    )
    p.add_argument("a", metavar="RUN_A", help="a run dir or its manifest.json")
    p.add_argument("b", metavar="RUN_B", help="a run dir or its manifest.json")
    p.add_argument("--json", action="store_true", help="machine-readable output, every value in full")
    return p


def main(argv: list[str] | None = None) -> int:
    """Print the comparison; 1 when the runs differ (as diff(1) and ``git diff --exit-code``), else 0."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        d = diff(args.a, args.b)
    except RunnerError as exc:
        fail(exc)
    if args.json:
        print(json.dumps(d.to_json(), indent=2, sort_keys=True, default=str))
    else:
        render(d, Console(highlight=False))
    return EXIT_FAILED if d.differs else 0


if __name__ == "__main__":
    sys.exit(main())
