"""The run dirs under a directory, and what each one's files say: the reading side of ``runner ls``.

A run dir is a dir with a ``manifest.json`` or a runner's claim (``.runner.claim``); the walk does
not go into one (its replays are read as its verdicts), nor into hidden dirs (``.hydra``) or an
MLflow store's artifact dirs (``mlartifacts``, ``mlruns``: copies of manifests). Each
manifest is read as JSON and its digest checked, nothing more, so that a thousand runs list in
well under a second (bench/ls.py). A record that cannot be read is a row that says so, never an
error that hides the other rows.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

from runner.core import compare, json_types, layout, manifest, record, run_list
from runner.core.digests import check_digest
from runner.core.run_list import ReplayVerdict, RunRow
from runner.host import rundir

_TRACKER_DIRS = ("mlartifacts", "mlruns")  # MLflow's copies of manifests are not runs


def find_run_dirs(root: Path) -> list[Path]:
    """Every run dir under ``root`` (``root`` itself when it is one), in path order."""
    found = []
    for here, dirs, files in os.walk(root):
        if layout.MANIFEST in files or layout.CLAIM in files:
            found.append(Path(here))
            dirs[:] = []
        else:
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _TRACKER_DIRS)
    return sorted(found)


def read_row(run_dir: Path) -> RunRow:
    """The row of one run dir: its manifest's fields, whether its digest checks, its replays' verdicts."""
    path = run_dir / layout.MANIFEST
    if not path.is_file():
        return RunRow(dir=str(run_dir), status=run_list.INCOMPLETE, note="claimed by a runner, no manifest")
    try:
        raw = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as exc:
        note = getattr(exc, "strerror", None) or " ".join(str(exc).split())[:120]
        return RunRow(dir=str(run_dir), status=run_list.UNREADABLE, note=f"manifest.json: {note}")
    if not isinstance(raw, dict) or raw.get("schema_version") != manifest.SCHEMA_VERSION:
        version = raw.get("schema_version") if isinstance(raw, dict) else None
        note = f"manifest.json: schema version {version!r}, not {manifest.SCHEMA_VERSION}"
        return RunRow(dir=str(run_dir), status=run_list.UNREADABLE, note=note)
    edited, why = check_digest(raw)
    digest = "edited" if edited else "none" if why else "ok"
    row = run_list.row_from_record(str(run_dir), raw, digest, replay_verdicts(run_dir))
    if row.status == record.RUNNING:  # under way, or its runner is gone: the claim's lock tells
        row = dataclasses.replace(row, status=rundir.run_status(run_dir, row.status))
    return row


def replay_verdicts(run_dir: Path) -> list[ReplayVerdict]:
    """The verdicts under ``run_dir/replays/`` (not the traced replays of ``--locate``), oldest first."""
    try:
        entries = sorted(os.scandir(run_dir / layout.REPLAYS_DIR), key=lambda e: e.name)
    except OSError:  # no replays (or no dir to read)
        return []
    verdicts = []
    for entry in entries:
        if not entry.is_dir() or "-locate-" in entry.name:
            continue
        identical: bool | None
        try:
            identical = json_types.read(
                Path(entry.path, layout.VERDICT), compare.VerdictFile.from_json
            ).verdict.bit_identical
        except FileNotFoundError:
            continue  # a replay that ended before its verdict (or is running): no verdict to show
        except (OSError, json_types.ContractError):  # torn, or not a verdict a runner wrote
            identical = None
        verdicts.append(ReplayVerdict(entry.path, identical))
    return verdicts


def rows(root: Path) -> list[RunRow]:
    """Every run under ``root``, oldest first (runs without a start time last, by path)."""
    found = [read_row(d) for d in find_run_dirs(root)]
    return sorted(found, key=lambda r: (r.started is None, r.started or 0.0, r.dir))


def logged_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows the experiment logged with Lightning's CSV logger (``metrics/**/metrics.csv``:
    a ``step`` column and one per metric), in file order; none when it logged none."""
    rows: list[dict[str, str]] = []
    for path in sorted((run_dir / layout.METRICS_DIR).rglob("metrics.csv")):
        try:
            with open(path, newline="") as f:
                rows.extend(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error):
            continue  # a torn or unreadable log: the fingerprints' loss is still exported
    return rows
