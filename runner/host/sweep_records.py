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
from pathlib import Path
from typing import Any

from runner.core import slots
from runner.core.digests import sha256_json
from runner.core.errors import EXIT_INTERRUPTED
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
def write_job_status(
    run_dir: Path, exit_code: int, error: str | None, overrides: Sequence[str] | None = None
) -> None:
    """Record a sweep job's outcome in its run dir (atomically; the first record wins)."""
    path = Path(run_dir) / JOB_STATUS_FILE
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "status": status_for(exit_code),
        "exit_code": int(exit_code),
        "error": error,
        "overrides": list(overrides) if overrides is not None else None,
    }
    atomic.write_text(path, json.dumps(record, indent=2))


def read_job_status(run_dir: Path) -> dict[str, Any] | None:
    """A sweep job's recorded outcome; None when there is none or it is not a JSON object
    (damaged, not UTF-8)."""
    path = Path(run_dir) / JOB_STATUS_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):  # ValueError: not JSON, or not UTF-8
        return None
    return record if isinstance(record, dict) else None
