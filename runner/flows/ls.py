"""``runner ls [DIR]``: the runs under DIR (default ``runs``), one row each, oldest first.

Time, experiment, seed, status, a few result metrics, the replays' verdicts and whether the
manifest's digest checks; ``--json`` for every field and metric. Reads only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from runner.core import commands
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.run_list import RunRow
from runner.flows.cli_common import fail
from runner.host import run_index

_STATUS_STYLE = {"completed": "green", "failed": "red", "interrupted": "yellow", "running": "cyan"}
_MIN = {"run": 12, "experiment": 10, "status": 11, "metrics": 18}  # a narrow terminal folds, not squeezes
_DIGEST = {"ok": "[green]ok[/]", "edited": "[bold red]EDITED[/]", "none": "[yellow]none[/]"}


def table(rows: list[RunRow], root: Path) -> Table:
    t = Table(title=f"{len(rows)} run(s) under {root}", title_justify="left")
    for col in ("started", "run", "experiment", "seed", "status", "metrics", "replays", "digest"):
        t.add_column(
            col, overflow="fold", no_wrap=col in ("started", "seed", "digest"), min_width=_MIN.get(col)
        )
    for r in rows:
        status = f"[{_STATUS_STYLE.get(r.status, 'magenta')}]{r.status}[/]"
        t.add_row(
            r.when(),
            escape(_relative(r.dir, root)),
            escape(r.experiment or "—"),
            "—" if r.seed is None else str(r.seed),
            status + (f" ({escape(r.note)})" if r.note else ""),
            r.metrics_cell(),
            r.replays_cell(),
            _DIGEST.get(r.digest or "", "—"),
        )
    return t


def _relative(path: str, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root)) or "."
    except ValueError:
        return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runner ls",
        description=commands.COMMANDS["ls"],
        epilog="A dir a runner claimed that holds no manifest is listed as incomplete; a manifest "
        "that cannot be read as unreadable. digest: ok, EDITED (changed after its run) or none "
        "(a record from before digests). Exit status: 0, or 2 when DIR is not a directory.",
    )
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR", help="where to look (default: runs)")
    p.add_argument("--json", action="store_true", help="one JSON list, every field and metric")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    root = Path(args.dir)
    if not root.is_dir():
        fail(RunnerError(f"no directory at {root}", EXIT_USAGE))
    rows = run_index.rows(root)
    if args.json:
        print(json.dumps([r.to_json() for r in rows], indent=2, default=str))
    else:
        out = Console(highlight=False)
        if not out.is_terminal:  # a pipe or a file has no width to keep to: one line per row where it fits
            out.width = max(out.width, 160)
        out.print(table(rows, root))
    return 0
