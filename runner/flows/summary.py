"""A sweep's summary, rebuilt from its run dirs: ``summary.json`` and ``summary.png`` at the sweep root.

``python -m runner.summary SWEEP_DIR`` reads every job's run dir under ``SWEEP_DIR`` (its
manifest, or the ``job_status.json`` a job that failed before it had one leaves) and writes:

* ``summary.json``: each job's overrides, status, exit code, run dir and final metrics; and for
  each group of jobs that differ only in ``seed``, per metric the mean, sample std, min, max and
  a 95% Student-t confidence interval over the completed seeds;
* ``summary.png``: every job's loss per step (from ``fingerprints.jsonl``) and each metric's
  spread over seeds (see :mod:`runner.host.summary_plot`).

A *job* here is a sweep job: one run of the sweep, in its own run dir (not the worker's
``job.json``). The launcher calls :func:`write` at the end of every sweep; the command rebuilds
both files from the run dirs alone, e.g. after a sweep re-run with
``hydra.launcher.skip_completed=true`` or a manual clean-up.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core import commands, fingerprints, layout, numbers, stats
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.json_types import Json, JsonObject
from runner.host import atomic, records, sweep_records
from runner.host.sweep_records import Group, JobEntry, MetricSummary, SweepSummary

SUMMARY_JSON = "summary.json"
SUMMARY_PNG = "summary.png"
SCHEMA = 1
_GROUPING_IGNORES = {"seed"}


@dataclass
class JobRecord:
    """One sweep job as the summary lists it."""

    name: str  # run dir relative to the sweep dir
    run_dir: Path
    overrides: list[str]
    status: str  # completed | failed | interrupted | unknown
    exit_code: int | None
    error: str | None = None
    run_id: str | None = None
    seed: int | None = None
    metrics: JsonObject = field(default_factory=dict)
    code_sha256: str | None = None

    def to_dict(self) -> JobEntry:
        return {
            "name": self.name,
            "run_dir": str(self.run_dir),
            "overrides": self.overrides,
            "status": self.status,
            "exit_code": self.exit_code,
            "error": self.error,
            "run_id": self.run_id,
            "seed": self.seed,
            "metrics": self.metrics,
        }


# -- reading run dirs ----------------------------------------------------------------------------------
def _is_run_dir(d: Path) -> bool:
    return any(
        (d / f).is_file() for f in (layout.MANIFEST, sweep_records.JOB_STATUS_FILE, ".hydra/overrides.yaml")
    )


def find_run_dirs(sweep_dir: Path) -> list[Path]:
    """Run dirs under a sweep dir (not inside one another; hidden dirs skipped), in job order."""
    found: list[Path] = []
    for root, dirs, _files in os.walk(sweep_dir):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if here != sweep_dir and _is_run_dir(here):
            found.append(here)
            dirs[:] = []
    return sorted(found, key=lambda p: _job_order(p.relative_to(sweep_dir).as_posix()))


def _job_order(name: str) -> tuple:
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in name.split("/"))


def _hydra_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    from omegaconf import OmegaConf

    try:
        overrides = OmegaConf.to_container(OmegaConf.load(path))
    except Exception:  # noqa: BLE001 - a damaged side file must not hide the job
        return []
    return [str(x) for x in overrides] if isinstance(overrides, list) else []


def read_job(sweep_dir: Path, run_dir: Path) -> JobRecord:
    """One job as its run dir records it: the manifest when there is one, else its status file."""
    name = run_dir.relative_to(sweep_dir).as_posix()
    if (run_dir / layout.MANIFEST).is_file():
        try:
            m = records.read_manifest(run_dir)
        except RunnerError as exc:
            return JobRecord(name, run_dir, _hydra_overrides(run_dir), "unknown", None, exc.message)
        return JobRecord(
            name,
            run_dir,
            list(m.overrides),
            m.status,
            m.exit_code,
            m.error,
            m.run_id,
            m.determinism.seed,
            dict(m.metrics),
            m.code.snapshot_sha256 if m.code else None,
        )
    status_rec = sweep_records.read_job_status(run_dir)
    overrides = list(status_rec.overrides or []) if status_rec else []
    overrides = overrides or _hydra_overrides(run_dir)
    if status_rec:
        return JobRecord(name, run_dir, overrides, status_rec.status, status_rec.exit_code, status_rec.error)
    return JobRecord(
        name, run_dir, overrides, "unknown", None, "no manifest and no job status: still running, or killed"
    )


def read_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, loss) pairs from a run's fingerprints; a resumed run's repeated steps keep the last."""
    try:
        return fingerprints.losses(
            records.read_fingerprints(run_dir)
        )  # a run killed mid-line: that line is skipped
    except OSError:
        return []


# -- pure summary --------------------------------------------------------------------------------------
def group_key(overrides: Sequence[str]) -> tuple[str, ...]:
    """Jobs that differ only in their seed belong to one group."""
    return tuple(sorted(o for o in overrides if sweep_records.override_key(o) not in _GROUPING_IGNORES))


def _numeric(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _number(v: Json) -> float:
    """A metric :func:`_numeric` admitted, as a float."""
    assert isinstance(v, (int, float))
    return float(v)


def summarize(sweep_dir: Path, jobs: Sequence[JobRecord]) -> SweepSummary:
    """The content of ``summary.json``: jobs, and per group of seeds the statistics of each metric."""
    groups: dict[tuple[str, ...], list[JobRecord]] = {}
    for job in jobs:
        groups.setdefault(group_key(job.overrides), []).append(job)
    out_groups: list[Group] = []
    for key, members in groups.items():
        done = [j for j in members if j.status == "completed"]
        names = sorted({k for j in done for k, v in j.metrics.items() if _numeric(v)})
        metrics: dict[str, MetricSummary] = {}
        for name in names:
            have = [j for j in done if _numeric(j.metrics.get(name))]
            if have:
                values = [_number(j.metrics[name]) for j in have]
                metrics[name] = {
                    **stats.describe(values).to_dict(),
                    "values": values,
                    "jobs": [j.name for j in have],
                }
        out_groups.append(
            {
                "overrides": list(key),
                "jobs": [j.name for j in members],
                "seeds": [j.seed for j in done],
                "completed": len(done),
                "not_completed": [
                    {"name": j.name, "status": j.status, "exit_code": j.exit_code}
                    for j in members
                    if j.status != "completed"
                ],
                "metrics": metrics,
            }
        )
    codes = sorted({j.code_sha256 for j in jobs if j.code_sha256})
    return {
        "schema": SCHEMA,
        "sweep_dir": str(sweep_dir),
        "jobs": [j.to_dict() for j in jobs],
        "counts": {s: sum(1 for j in jobs if j.status == s) for s in sorted({j.status for j in jobs})},
        "code_snapshots": codes,  # more than one: the jobs ran different code
        "confidence": 0.95,
        "groups": out_groups,
    }


# -- writing -------------------------------------------------------------------------------------------
def write(sweep_dir: str | os.PathLike) -> SweepSummary:
    """Rebuild ``summary.json`` and ``summary.png`` from the run dirs under ``sweep_dir``."""
    sweep_dir = Path(sweep_dir).resolve()
    if not sweep_dir.is_dir():
        raise RunnerError(f"no sweep dir at {sweep_dir}", EXIT_USAGE)
    run_dirs = find_run_dirs(sweep_dir)
    if not run_dirs:
        raise RunnerError(
            f"{sweep_dir} holds no run dirs (no manifest.json, job_status.json or .hydra/)", EXIT_USAGE
        )
    jobs = [read_job(sweep_dir, d) for d in run_dirs]
    summary = summarize(sweep_dir, jobs)
    _atomic_write(sweep_dir / SUMMARY_JSON, json.dumps(_strict_json(summary), indent=2, allow_nan=False))
    from runner.host import summary_plot

    curves = {j.name: read_curve(j.run_dir) for j in jobs}
    summary_plot.plot(summary, curves, sweep_dir / SUMMARY_PNG)
    return summary


def _strict_json(obj: Any) -> Any:
    """JSON has no NaN or infinity: a diverged run's ``nan`` loss is written as the string "nan"."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict_json(v) for v in obj]
    return obj


def _atomic_write(path: Path, text: str) -> None:
    atomic.write_text(path, text)


def describe_line(summary: SweepSummary) -> list[str]:
    """A few lines for the terminal: counts, and each group's metrics as mean ± CI half-width."""
    lines = [", ".join(f"{n} {s}" for s, n in summary["counts"].items())]
    for g in summary["groups"]:
        label = " ".join(g["overrides"]) or "all"
        parts = []
        for name, s in g["metrics"].items():
            ci = s.get("ci95_halfwidth")
            half = f" ± {numbers.human(ci, name)}" if ci is not None else ""
            parts.append(f"{name}={numbers.human(s['mean'], name)}{half}")
        lines.append(f"{label} (n={g['completed']}): {', '.join(parts) or 'no completed jobs'}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="runner summary", description=commands.COMMANDS["summary"])
    parser.add_argument("sweep_dir", help="the sweep dir (hydra.sweep.dir) holding one run dir per job")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from runner.flows.cli_common import fail

    args = build_parser().parse_args(argv)
    try:
        summary = write(args.sweep_dir)
    except RunnerError as exc:
        fail(exc)
    root = Path(summary["sweep_dir"])
    for line in describe_line(summary):
        print(line)
    print(f"wrote {root / SUMMARY_JSON} and {root / SUMMARY_PNG}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
