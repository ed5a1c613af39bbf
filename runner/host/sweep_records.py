"""What a sweep records about its jobs: each sweep job's outcome, and whether a sweep job of a
re-run sweep is already done. The sweep itself is :mod:`runner.flows.sweep`.

A *sweep job* is one run of the task function with one set of overrides, in its own run dir
(not the worker's ``job.json``, which is what one run tells the training process).

* A sweep job that fails before it has a manifest (bad seed, run dir in use) still leaves a
  record: ``job_status.json`` in its run dir, so the summary can list it with its exit status.
* ``hydra.launcher.skip_completed=true`` re-runs a sweep, skipping the sweep jobs already
  completed for identical inputs (:func:`completed_for`). It is the launcher's setting, not the
  task's, so a sweep job's overrides and config never hold it. (``+resume=RUN_DIR`` is another
  thing: continuing one interrupted run, :mod:`runner.flows.resume`.)

Pure except for the small file helpers at the bottom.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

from runner.core import slots
from runner.core.digests import sha256_json
from runner.core.errors import EXIT_INTERRUPTED
from runner.core.json_types import Fields, JsonObject
from runner.core.stats import MetricStats
from runner.host import atomic

JOB_STATUS_FILE = "job_status.json"
SKIP_COMPLETED = "hydra.launcher.skip_completed"  # how a user asks for it
SUPERSEDED_DIR = ".superseded"  # under the sweep dir: run dirs a re-run sweep ran again


def override_key(override: str) -> str:
    """``+model.lr=0.1`` → ``model.lr``: the config key an override sets."""
    return override.lstrip("~+").partition("=")[0].strip()


def status_for(exit_code: int) -> str:
    if exit_code == 0:
        return "completed"
    return "interrupted" if exit_code == EXIT_INTERRUPTED else "failed"


def inputs_key(config: Mapping[str, Any], overrides: Sequence[str]) -> str:
    """Identity of a sweep job's inputs: its resolved config and overrides, minus where it ran.

    The slot a launcher placed the sweep job in (``launch.cpuset_cpus``, slot GPUs) changes
    nothing about the result, so it is replaced by what the job asked for before hashing.
    """
    cfg = slots.unplaced(config, as_asked=True)
    return sha256_json({"config": cfg, "overrides": sorted(overrides)})


def completed_for(
    manifest: Mapping[str, Any] | None, config: Mapping[str, Any], overrides: Sequence[str]
) -> bool:
    """Does this manifest record a completed run of exactly these inputs?"""
    if not manifest or manifest.get("status") != "completed":
        return False
    return inputs_key(manifest.get("config") or {}, manifest.get("overrides") or []) == inputs_key(
        config, overrides
    )


# -- files -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobStatus:
    """``job_status.json``: how a sweep job ended (``overrides`` None: not known when it was written)."""

    status: str  # completed | failed | interrupted
    exit_code: int
    error: str | None = None
    overrides: tuple[str, ...] | None = None

    def to_json(self) -> JsonObject:
        return {
            "status": self.status,
            "exit_code": self.exit_code,
            "error": self.error,
            "overrides": None if self.overrides is None else list(self.overrides),
        }

    @classmethod
    def from_json(cls, data: object, where: str = JOB_STATUS_FILE) -> JobStatus:
        f = Fields.of(data, where)
        overrides = f.opt_list("overrides")
        return cls(
            status=f.str_("status", "failed"),
            exit_code=f.int_("exit_code"),
            error=f.opt_str("error"),
            overrides=None if overrides is None else f.strs("overrides"),
        )


def write_job_status(
    run_dir: Path, exit_code: int, error: str | None, overrides: Sequence[str] | None = None
) -> None:
    """Record a sweep job's outcome in its run dir (atomically; the first record wins)."""
    path = Path(run_dir) / JOB_STATUS_FILE
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    record = JobStatus(
        status_for(exit_code), int(exit_code), error, None if overrides is None else tuple(overrides)
    )
    atomic.write_text(path, json.dumps(record.to_json(), indent=2))


def read_job_status(run_dir: Path) -> JobStatus | None:
    """A sweep job's recorded outcome; None when there is none or it is not one (damaged, not
    UTF-8, not of its shape): a damaged side file must not stop a summary."""
    path = Path(run_dir) / JOB_STATUS_FILE
    try:
        return JobStatus.from_json(json.loads(path.read_text()), str(path))
    except (OSError, ValueError):  # ValueError: not JSON, not UTF-8, or a ContractError
        return None


# -- summary.json: a sweep's jobs, and per group of seeds the statistics of each metric ----------------
class JobEntry(TypedDict):
    name: str  # run dir relative to the sweep dir
    run_dir: str
    overrides: list[str]
    status: str  # completed | failed | interrupted | unknown
    exit_code: int | None
    error: str | None
    run_id: str | None
    seed: int | None
    metrics: JsonObject


class MetricSummary(MetricStats):
    values: list[float]
    jobs: list[str]  # the jobs the values are of


class NotCompleted(TypedDict):
    name: str
    status: str
    exit_code: int | None


class Group(TypedDict):
    """Jobs that differ only in their seed."""

    overrides: list[str]
    jobs: list[str]
    seeds: list[int | None]
    completed: int
    not_completed: list[NotCompleted]
    metrics: dict[str, MetricSummary]


class SweepSummary(TypedDict):
    """``summary.json`` (:func:`runner.flows.summary.summarize`)."""

    schema: int
    sweep_dir: str
    jobs: list[JobEntry]
    counts: dict[str, int]
    code_snapshots: list[str]  # more than one: the jobs ran different code
    confidence: float
    groups: list[Group]
