"""One row of ``runner ls``: what a run dir says about itself at a glance. Pure.

The row is built from a manifest (or from its absence: a dir a runner claimed but that holds no
manifest is ``incomplete``) and the verdicts of the run's replays; the host reads the files
(:mod:`runner.host.run_index`), the command prints them (:mod:`runner.flows.ls`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from runner.core import numbers
from runner.core.compare import is_measurement
from runner.core.json_types import Json, JsonObject

INCOMPLETE = "incomplete"  # claimed by a runner, no manifest (yet, or ever)
UNREADABLE = "unreadable"  # a manifest this runner cannot read
KEY_METRICS = 3  # metrics shown in the table; --json has them all
_COUNTERS = ("global_step", "step", "epoch")


@dataclass(frozen=True)
class ReplayVerdict:
    """A replay of the run, as its ``verdict.json`` judged it."""

    dir: str
    bit_identical: bool | None  # None: the verdict could not be read


@dataclass(frozen=True)
class RunRow:
    dir: str
    status: str  # the manifest's status, or INCOMPLETE / UNREADABLE
    started: float | None = None
    experiment: str | None = None
    seed: int | None = None
    metrics: JsonObject = field(default_factory=dict)
    replays: list[ReplayVerdict] = field(default_factory=list)
    digest: str | None = None  # "ok", "edited", "none" (a record written before digests); None: no record
    note: str | None = None  # why the record could not be read

    def to_json(self) -> JsonObject:
        return asdict(self)

    def when(self) -> str:
        if self.started is None:
            return "—"
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.started))

    def replays_cell(self) -> str:
        """``2 same, 1 differ``: replays bit-identical or not (``1 unreadable``: a verdict not read)."""
        return replays_summary(self.replays) or "—"

    def metrics_cell(self) -> str:
        return "\n".join(f"{k}={numbers.human(v, k)}" for k, v in key_metrics(self.metrics).items()) or "—"


def replays_summary(replays: list[ReplayVerdict]) -> str:
    """``2 same, 1 differ`` (``1 unreadable``: a verdict that could not be read); "" for none."""
    counts = {"same": 0, "differ": 0, "unreadable": 0}
    for r in replays:
        counts["unreadable" if r.bit_identical is None else "same" if r.bit_identical else "differ"] += 1
    return ", ".join(f"{n} {what}" for what, n in counts.items() if n)


def key_metrics(metrics: Mapping[str, Json], limit: int = KEY_METRICS) -> JsonObject:
    """The few metrics a table shows: results (test_*, val_* first), not counters or speeds."""
    names = [
        k for k, v in metrics.items() if numbers.is_number(v) and k not in _COUNTERS and not is_measurement(k)
    ]
    names.sort(key=lambda k: (not k.startswith(("test", "val")), k))
    return {k: metrics[k] for k in names[:limit]}


def row_from_record(
    run_dir: str, raw: Mapping[str, Any], digest: str, replays: list[ReplayVerdict]
) -> RunRow:
    """A row from a manifest's JSON object (read as JSON, so a table of a thousand runs stays fast;
    ``digest`` is the result of checking it)."""
    config, experiment = _mapping(raw, "config"), _mapping(raw, "experiment")
    timings, metrics = _mapping(raw, "timings"), _mapping(raw, "metrics")
    seed = config.get("seed")
    started = timings.get("started")
    return RunRow(
        dir=run_dir,
        status=str(raw.get("status", UNREADABLE)),
        started=float(started) if isinstance(started, (int, float)) else None,
        experiment=str(experiment.get("name")) if experiment.get("name") is not None else None,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        metrics=dict(metrics),
        replays=replays,
        digest=digest,
    )


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key)
    return value if isinstance(value, Mapping) else {}
