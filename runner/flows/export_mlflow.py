"""``runner export mlflow PATH… [--tracking-uri URI]``: runs into an MLflow tracking store.

PATH is a run dir, a sweep dir (a parent run, each job a child run) or any dir of runs (each a run
of its own). One MLflow run per run, in the experiment named after the run's experiment: params
the resolved config flattened; metrics the loss per step, every logged metric with its steps and
the final metrics; tags the git commit, image digest, manifest digest, status and replay verdicts;
artifacts ``manifest.json``, ``provenance.intoto.jsonl`` when there is one and ``summary.png``;
outputs (weights) referenced in ``outputs.json``, copied only with ``--copy-outputs``. Exporting
again updates the same MLflow runs. The default store is ``sqlite:///$PWD/mlruns.db`` (or
``$MLFLOW_TRACKING_URI``): ``mlflow ui --backend-store-uri sqlite:///$PWD/mlruns.db`` opens it.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from runner.core import layout, run_list, tracking
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.core.tracking import OutputRef, TrackedRun
from runner.flows.cli_common import fail
from runner.host import console, records, run_index

SWEEP_FILES = ("summary.png", "summary.json", "multirun.yaml")


@dataclass(frozen=True)
class Exported:
    path: Path
    mlflow_run_id: str
    created: bool
    experiment: str


def tracked(run_dir: Path, copy_outputs: bool = False) -> TrackedRun:
    """The tracker's view of one run dir (RunnerError for a record that cannot be read)."""
    rec = records.load(run_dir)
    m, run_dir = rec.manifest, rec.dir
    digest = "edited" if rec.edited else "none" if rec.digest_note else "ok"
    replays = run_list.replays_summary(run_index.replay_verdicts(run_dir)) or "none"
    files: list[tuple[str, str | None]] = [(str(rec.path), None)]
    files += [(str(run_dir / f), None) for f in (layout.PROVENANCE, "summary.png") if (run_dir / f).is_file()]
    outputs = [
        OutputRef(name, (run_dir / layout.OUTPUTS_DIR / name).as_uri(), f.sha256, f.bytes)
        for name, f in sorted(m.outputs.items())
    ]
    if copy_outputs:
        files += [(str(run_dir / layout.OUTPUTS_DIR / o.name), "outputs") for o in outputs]
    name = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.isdigit() else run_dir.name
    return TrackedRun(
        key=m.run_id,
        name=name,
        experiment=str(m.experiment.get("name") or "runner"),
        started_ms=int(m.timings.started * 1000),
        finished_ms=int(m.timings.finished * 1000),
        status=tracking.STATUS.get(m.status, "FAILED"),
        params=tracking.params(m.config),
        tags=tracking.tags(m, digest, replays, str(run_dir)),
        metrics=tracking.metric_points(rec.fingerprints, run_index.logged_metrics(run_dir), m.metrics),
        files=files,
        outputs=outputs,
    )


def sweep_parent(sweep_dir: Path, children: list[TrackedRun]) -> TrackedRun:
    """The parent run of a sweep: its summary files, the span and outcome of its jobs."""
    experiments = collections.Counter(c.experiment for c in children)
    done = all(c.status == "FINISHED" for c in children)
    key = str(sweep_dir.resolve())
    return TrackedRun(
        key=key,
        name=sweep_dir.name,
        experiment=experiments.most_common(1)[0][0],
        started_ms=min(c.started_ms for c in children),
        finished_ms=max(c.finished_ms or c.started_ms for c in children),
        status="FINISHED" if done else "FAILED",
        tags={
            tracking.SWEEP_TAG: tracking.text(key, tracking.MAX_TAG_VALUE),
            "runner.jobs": str(len(children)),
        },
        files=[(str(sweep_dir / f), None) for f in SWEEP_FILES if (sweep_dir / f).is_file()],
    )


def _is_sweep(path: Path) -> bool:
    return any((path / f).is_file() for f in ("multirun.yaml", "summary.json"))


def export(paths: list[Path], store, copy_outputs: bool = False, echo=console.echo) -> list[Exported]:
    """Export each PATH (run, sweep or dir of runs) into ``store``
    (:class:`runner.host.mlflow_tracking.MlflowStore`)."""
    done: list[Exported] = []
    _check_paths(paths)
    for path in paths:
        if (path / layout.MANIFEST).is_file() or path.is_file():
            done.append(_one(store, path, tracked(path, copy_outputs), None, echo))
            continue
        dirs = [d for d in run_index.find_run_dirs(path) if (d / layout.MANIFEST).is_file()]
        if not dirs:
            raise RunnerError(f"{path} holds no run dirs (no manifest.json under it)", EXIT_USAGE)
        runs = [(d, tracked(d, copy_outputs)) for d in dirs]
        parent = None
        if _is_sweep(path):
            parent_run = sweep_parent(path, [r for _, r in runs])
            parent = _one(store, path, parent_run, None, echo, key_tag=tracking.SWEEP_TAG)
            done.append(parent)
        parent_id = None if parent is None else parent.mlflow_run_id
        done += [_one(store, d, r, parent_id, echo) for d, r in runs]
    return done


def _check_paths(paths: list[Path]) -> None:
    """Refuse a path that is nothing before anything is written (a new store included)."""
    for path in paths:
        if not path.is_dir() and not path.is_file():
            raise RunnerError(f"no run dir or sweep dir at {path}", EXIT_USAGE)


def _one(
    store, path: Path, run: TrackedRun, parent_id: str | None, echo, key_tag: str = tracking.RUN_ID_TAG
) -> Exported:
    run_id, created = store.upsert(run, parent_id, key_tag=key_tag)
    echo(f"{'created' if created else 'updated'} MLflow run {run_id} ({run.experiment}): {path}")
    return Exported(path, run_id, created, run.experiment)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="runner export mlflow",
        description="runs into an MLflow tracking store: one MLflow run per run, a sweep as a parent "
        "with a child run per job; exporting again updates them",
        epilog="Needs the mlflow extra (pip install 'runner[mlflow]'). Exit status: 0 exported, "
        "2 bad input (a path that is not a run), 3 the store cannot be reached or mlflow is missing.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="a run dir, a sweep dir or a dir of runs")
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="any MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///$PWD/mlruns.db)",
    )
    p.add_argument("--copy-outputs", action="store_true", help="copy the outputs (weights) as artifacts too")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if importlib.util.find_spec("mlflow") is None:
        fail(RunnerError("runner export mlflow needs mlflow: pip install 'runner[mlflow]'", EXIT_ENVIRONMENT))
    from runner.host import mlflow_tracking

    uri = (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow_tracking.default_uri(Path.cwd())
    )
    try:
        _check_paths([Path(p) for p in args.paths])
        store = mlflow_tracking.MlflowStore(uri, artifact_root=mlflow_tracking.artifacts_beside(uri))
        done = export([Path(p) for p in args.paths], store, args.copy_outputs)
    except RunnerError as exc:
        fail(exc)
    except KeyboardInterrupt:
        fail(RunnerError("interrupted: the runs exported so far are in the store", 130))
    console.echo(
        f"{len(done)} MLflow run(s) in {uri}"
        + (f"; open with: mlflow ui --backend-store-uri {uri}" if uri.startswith("sqlite") else "")
    )
    return 0
