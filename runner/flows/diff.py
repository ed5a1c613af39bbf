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
from pathlib import Path

from rich.console import Console
from rich.table import Table

from runner.core import commands, compare, fingerprints, numbers, record
from runner.core.errors import EXIT_FAILED, EXIT_USAGE, RunnerError
from runner.flows.cli_common import fail
from runner.host import records, rundir
from runner.host.diff_plot import FORMATS as PLOT_FORMATS


def diff(path_a: str, path_b: str) -> compare.RunDiff:
    """Load two run dirs (or manifests) and compare them; RunnerError for a bad record."""
    return compare_records(records.load(path_a), records.load(path_b))


def compare_records(a: records.RunRecord, b: records.RunRecord) -> compare.RunDiff:
    """Compare two loaded records, with a note for each that cannot be taken at its word."""
    d = compare.diff_runs(a.manifest, b.manifest, a.fingerprints, b.fingerprints, str(a.dir), str(b.dir))
    for label, rec in (("A", a), ("B", b)):
        if rec.edited:  # shown first, in one line: nothing else about this run can be taken at its word
            d.notes.insert(0, f"{label}: EDITED: {rec.digest_note}")
        elif rec.digest_note:
            d.notes.append(f"{label}: {rec.digest_note}")
        if rec.fingerprints_note:
            d.notes.append(f"{label}: {rec.fingerprints_note}")
        if rundir.run_status(rec.dir, rec.manifest.status) == record.ABANDONED:
            d.notes.append(
                f"{label}: abandoned: its runner was killed mid-run (+resume={rec.dir} continues it)"
            )
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
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="also draw (PNG, SVG or PDF, by the suffix) both runs' loss per step, the first diverging "
        "step and the steps whose parameter fingerprints differ",
    )
    p.add_argument(
        "--plot-size",
        metavar="WxH",
        type=_size,
        help="with --plot: the PNG's size in pixels (default 1000x600)",
    )
    return p


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.lower().partition("x")
    if not (w.isdigit() and h.isdigit() and 100 <= int(w) <= 10000 and 100 <= int(h) <= 10000):
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT in pixels (100 to 10000 each)")
    return int(w), int(h)


def draw(a: records.RunRecord, b: records.RunRecord, d: compare.RunDiff, path: str, size) -> None:
    """``--plot``: the picture of where the two runs part (both need readable fingerprints)."""
    from runner.host import diff_plot

    for label, rec in (("A", a), ("B", b)):
        if rec.fingerprints is None:
            why = rec.fingerprints_note or "it recorded no fingerprints"
            raise RunnerError(f"--plot: run {label} has no per-step record to draw ({why})", EXIT_USAGE)
    rows_a, rows_b = a.fingerprints or [], b.fingerprints or []
    picture = diff_plot.DiffPicture(
        losses_a=fingerprints.losses(rows_a),
        losses_b=fingerprints.losses(rows_b),
        divergence=d.divergence,
        params_differ=compare.parameter_differences(rows_a, rows_b),
        label_a=f"A ({a.dir.name})",
        label_b=f"B ({b.dir.name})",
    )
    try:
        diff_plot.plot(picture, Path(path), size)
    except OSError as exc:
        raise RunnerError(f"--plot: cannot write {path}: {exc.strerror or exc}", EXIT_USAGE) from None


def main(argv: list[str] | None = None) -> int:
    """Print the comparison; 1 when the runs differ (as diff(1) and ``git diff --exit-code``), else 0."""
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.plot_size and not args.plot:
        parser.error("--plot-size needs --plot FILE.png")
    if args.plot and Path(args.plot).suffix.lower().lstrip(".") not in PLOT_FORMATS:
        parser.error(f"--plot {args.plot}: the picture is written as .png, .svg or .pdf (by its suffix)")
    try:
        a, b = records.load(args.a), records.load(args.b)
        d = compare_records(a, b)
        if args.plot:
            draw(a, b, d, args.plot, args.plot_size or (1000, 600))
    except RunnerError as exc:
        fail(exc)
    if args.json:
        print(json.dumps(d.to_json(), indent=2, sort_keys=True, default=str))
    else:
        render(d, Console(highlight=False))
    if args.plot and not args.json:
        Console(highlight=False, stderr=True).print(f"plot: {args.plot}", markup=False, soft_wrap=True)
    return EXIT_FAILED if d.differs else 0


if __name__ == "__main__":
    sys.exit(main())
