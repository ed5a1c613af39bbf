"""Writing :class:`~runner.core.tracking.TrackedRun` objects to an MLflow tracking store.

The one module that imports ``mlflow`` (the optional extra ``runner[mlflow]``). A tracker run is
found again by its run-id tag (``tracking.RUN_ID_TAG``) in its experiment, so exporting twice updates it: tags
are set again, params and metric points it does not hold yet are added, files are written over;
nothing is duplicated. MLflow's own errors become one-line RunnerErrors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.core import tracking
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.core.tracking import TrackedRun

BATCH = 500  # metric points per log_batch call (MLflow takes at most 1000)
PARAMS_PER_BATCH = 100  # MLflow's limit


def default_uri(cwd: Path) -> str:
    """A SQLite store beside where the command runs: ``sqlite:///ABS/mlruns.db`` (``mlflow ui
    --backend-store-uri`` opens it)."""
    return f"sqlite:///{(cwd / 'mlruns.db').resolve()}"


def artifacts_beside(uri: str) -> Path | None:
    """For a SQLite store, ``mlartifacts/`` beside its database file (MLflow's own default is
    ``./mlruns`` under whatever dir the command ran in); None for any other store (a server
    keeps its own)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri == prefix or ":memory:" in uri:
        return None
    return Path(uri[len(prefix) :]).resolve().parent / "mlartifacts"


@contextmanager
def errors(uri: str) -> Iterator[None]:
    """MLflow's exceptions (a bad URI, a server that does not answer) as one line."""
    from mlflow.exceptions import MlflowException

    try:
        yield
    except MlflowException as exc:
        first = (str(exc.message).strip().splitlines() or [type(exc).__name__])[0]
        raise RunnerError(f"MLflow at {uri}: {first[:300]}", EXIT_ENVIRONMENT) from None


class MlflowStore:
    """One tracking store (``uri``); artifacts of experiments it creates go under ``artifact_root``
    when given (the default SQLite store keeps them beside its database)."""

    def __init__(self, uri: str, artifact_root: Path | None = None):
        from mlflow import MlflowClient

        for name in ("alembic", "mlflow"):  # schema migrations of a new store are not news
            logging.getLogger(name).setLevel(logging.WARNING)

        if "://" not in uri and not uri.startswith(("databricks", "file:")):
            raise RunnerError(
                f"--tracking-uri {uri!r} is not a tracking URI (sqlite:///…, http://…)", EXIT_USAGE
            )
        self.uri, self.artifact_root = uri, artifact_root
        with errors(uri):
            self.client = MlflowClient(tracking_uri=uri)

    def experiment_id(self, name: str) -> str:
        with errors(self.uri):
            found = self.client.get_experiment_by_name(name)
            if found is not None:
                return str(found.experiment_id)
            where = None if self.artifact_root is None else (self.artifact_root / tracking.key(name)).as_uri()
            return str(self.client.create_experiment(name, artifact_location=where))

    def find(self, experiment_id: str, tag: str, value: str) -> Any | None:
        """The tracker run tagged ``tag=value`` in the experiment, or None."""
        quoted = value.replace("\\", "\\\\").replace("'", "\\'")
        with errors(self.uri):
            runs = self.client.search_runs([experiment_id], f"tags.`{tag}` = '{quoted}'", max_results=2)
        return runs[0] if runs else None

    def upsert(
        self, run: TrackedRun, parent_id: str | None = None, key_tag: str = tracking.RUN_ID_TAG
    ) -> tuple[str, bool]:
        """Create or update the tracker run for ``run``; (its MLflow run id, whether it was created)."""
        exp = self.experiment_id(run.experiment)
        existing = self.find(exp, key_tag, run.tags.get(key_tag, run.key))
        tags = dict(run.tags, **({"mlflow.parentRunId": parent_id} if parent_id else {}))
        with errors(self.uri):
            if existing is None:
                created = self.client.create_run(exp, start_time=run.started_ms, tags=tags, run_name=run.name)
                run_id, have_params, have_points = created.info.run_id, {}, set()
            else:
                run_id = existing.info.run_id
                have_params = dict(existing.data.params)
                have_points = self._points(run_id, {p.key for p in run.metrics})
            self._log(run_id, run, tags, have_params, have_points)
            self._files(run_id, run)
            if run.status != "RUNNING":
                self.client.set_terminated(run_id, status=run.status, end_time=run.finished_ms)
        return run_id, existing is None

    def _points(self, run_id: str, keys: set[str]) -> set[tuple[str, int, float]]:
        have = set()
        for k in keys:
            for m in self.client.get_metric_history(run_id, k):
                have.add((m.key, int(m.step), float(m.value)))
        return have

    def _log(
        self,
        run_id: str,
        run: TrackedRun,
        tags: dict[str, str],
        have_params: dict[str, str],
        have_points: set[tuple[str, int, float]],
    ) -> None:
        """Params the tracker run lacks (an MLflow param cannot change), every tag, new points."""
        from mlflow.entities import Metric, Param, RunTag

        new_params = [Param(k, v) for k, v in run.params.items() if k not in have_params]
        for i in range(0, len(new_params), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=new_params[i : i + PARAMS_PER_BATCH])
        run_tags = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, len(run_tags), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=run_tags[i : i + PARAMS_PER_BATCH])
        points = [
            Metric(p.key, p.value, run.started_ms, p.step)
            for p in run.metrics
            if (p.key, p.step, p.value) not in have_points
        ]
        for i in range(0, len(points), BATCH):
            self.client.log_batch(run_id, metrics=points[i : i + BATCH])

    def _files(self, run_id: str, run: TrackedRun) -> None:
        """The run's files as artifacts (an artifact of the same name is replaced), and
        ``outputs.json`` referencing its outputs."""
        for path, under in run.files:
            self.client.log_artifact(run_id, path, artifact_path=under)
        if run.outputs:
            self.client.log_dict(run_id, run.outputs_document(), "outputs.json")

    def runs(self, experiment_ids: Sequence[str]) -> list[Any]:
        with errors(self.uri):
            return list(self.client.search_runs(list(experiment_ids)))
