"""``runner ls`` over a thousand run dirs: how long listing them takes.

    python -m bench.ls RUN_DIR [--runs 1000] [--reps 5] [--out bench/results/ls.json]

RUN_DIR is a real run (its ``manifest.json`` and ``fingerprints.jsonl`` are copied); the tree made
from it in a temporary directory holds ``--runs`` run dirs in sweeps of 50 jobs, each with one
replay and its verdict, as a long-used ``runs/`` does. Two figures, each the median of ``--reps``:

* reading the rows in-process (:func:`runner.host.run_index.rows`: walk, read every manifest,
  check its digest, read the replays' verdicts) — goal < 1 s for 1000 runs;
* the whole command, ``runner ls DIR --json`` in a fresh Python (its start-up included), and the
  table (``runner ls DIR`` to a pipe) — recorded.

The first listing of each repetition runs after the page cache was dropped for nothing: the files
were just written, as a user's runs usually were not. A cold cache is not measured.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.results import load_average, median
from runner.core import layout
from runner.host import run_index

PER_SWEEP = 50


def make_tree(source: Path, root: Path, runs: int) -> None:
    """``runs`` copies of ``source``'s record under ``root/sweep-NN/J``, each with a replay verdict."""
    manifest = (source / layout.MANIFEST).read_bytes()
    fingerprints = source / layout.FINGERPRINTS
    verdict = json.dumps({"bit_identical": True, "status": "completed"})
    for i in range(runs):
        run = root / f"sweep-{i // PER_SWEEP:02d}" / str(i % PER_SWEEP)
        replay = run / layout.REPLAYS_DIR / "2026-01-01_00-00-00-000001"
        replay.mkdir(parents=True)
        (run / layout.MANIFEST).write_bytes(manifest)
        if fingerprints.is_file():
            shutil.copyfile(fingerprints, run / layout.FINGERPRINTS)
        (replay / layout.VERDICT).write_text(verdict)


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _command(root: Path, *extra: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "runner.cli", "ls", str(root), *extra], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"runner ls failed: {proc.stderr.strip()}")


def measure(source: Path, runs: int, reps: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-ls-") as tmp:
        root = Path(tmp)
        make_tree(source, root, runs)
        found = run_index.rows(root)
        assert len(found) == runs and all(r.digest == "ok" for r in found), "the copies must read as runs"
        load = load_average()
        rows_s = [_timed(lambda: run_index.rows(root)) for _ in range(reps)]
        json_s = [_timed(lambda: _command(root, "--json")) for _ in range(reps)]
        table_s = [_timed(lambda: _command(root)) for _ in range(reps)]
    return {
        "runs": runs,
        "manifest_bytes": (source / layout.MANIFEST).stat().st_size,
        "load_average": load,
        "rows_s": {"median": median(rows_s), "samples": rows_s, "goal": "< 1 s"},
        "ls_json_command_s": {"median": median(json_s), "samples": json_s},
        "ls_table_command_s": {"median": median(table_s), "samples": table_s},
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ls", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a real run dir to copy")
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = p.parse_args(argv)
    doc = measure(args.run, args.runs, args.reps)
    text = json.dumps(doc, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
