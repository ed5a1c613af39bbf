"""A run as an experiment tracker holds it: params, tagged facts, metric series, files. Pure.

``runner export mlflow`` (:mod:`runner.flows.export_mlflow`) turns each run dir into one
:class:`TrackedRun` here, and :mod:`runner.host.mlflow_tracking` writes it to an MLflow store. The
run's identity in the tracker is its manifest's ``run_id``, held in a tag (:data:`RUN_ID_TAG`), so
exporting again finds the same tracker run and updates it. The rules MLflow sets (key characters,
value lengths) are applied here, so what is written is what was planned.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict

from runner.core import fingerprints
from runner.core.compare import flatten
from runner.core.manifest import Manifest

MAX_PARAM_VALUE = 6000  # MLflow's limit on a param's value (characters)
MAX_TAG_VALUE = 8000
_KEY_CHARS = re.compile(r"[^\w\-. /]")  # MLflow keys: alphanumerics, _ - . space /
RUN_ID_TAG = "runner.run_id"  # the key a tracker run is found by
SWEEP_TAG = "runner.sweep_dir"
STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED", "running": "RUNNING"}
LOSS = "loss"  # the per-step training loss, from fingerprints.jsonl


@dataclass(frozen=True)
class Point:
    key: str
    value: float
    step: int


class OutputEntry(TypedDict):
    """One output as ``outputs.json`` references it."""

    uri: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class OutputRef:
    """A file a run wrote, referenced (not copied): where it is and what it hashes to."""

    name: str
    uri: str
    sha256: str
    bytes: int


@dataclass
class TrackedRun:
    key: str  # the manifest's run_id (a sweep's parent: its dir)
    name: str
    experiment: str
    started_ms: int
    finished_ms: int | None
    status: str  # FINISHED, FAILED, KILLED, RUNNING
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[Point] = field(default_factory=list)
    files: list[tuple[str, str | None]] = field(default_factory=list)  # (local path, artifact dir) copied
    outputs: list[OutputRef] = field(default_factory=list)

    def outputs_document(self) -> dict[str, OutputEntry]:
        """``outputs.json``, the artifact that references the run's outputs."""
        return {o.name: {"uri": o.uri, "sha256": o.sha256, "bytes": o.bytes} for o in self.outputs}


def key(name: str) -> str:
    """``name`` as an MLflow key: characters MLflow refuses become ``_``, at most 250 characters."""
    return _KEY_CHARS.sub("_", name)[:250] or "_"


def text(value: Any, limit: int = MAX_PARAM_VALUE) -> str:
    """A param or tag value: strings as they are, anything else as JSON; cut to ``limit`` with ``…``."""
    s = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def params(config: Mapping[str, Any]) -> dict[str, str]:
    """The resolved config, flattened (``model.lr``), as params."""
    return {key(k): text(v) for k, v in flatten(config).items()}


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v)


def metric_points(
    rows: Sequence[fingerprints.Row] | None,
    logged: Iterable[Mapping[str, str]],
    final: Mapping[str, Any],
) -> list[Point]:
    """Every metric with its steps: the loss per step (fingerprints), each column the experiment
    logged (Lightning's CSV logger: one row per logging step), and the final metrics of the
    manifest at the last step. One point per (key, step); NaN and infinities are kept (MLflow
    stores them)."""
    points: dict[tuple[str, int], float] = {}
    for step, loss in fingerprints.losses(rows or []):
        points[(LOSS, step)] = loss
    last = 0
    for row in logged:
        at = _int(row.get("step"))
        if at is None:
            continue
        last = max(last, at)
        for name, raw in row.items():
            if name in ("step", "epoch") or raw in ("", None):
                continue
            try:
                points[(key(name), at)] = float(raw)
            except ValueError:
                continue
    recorded_end = _int(final.get("global_step"))
    end = last if recorded_end is None else recorded_end
    for name, v in final.items():
        number = _number(v)
        if number is not None:
            points.setdefault((key(name), end), number)
    return [Point(k, v, s) for (k, s), v in sorted(points.items())]


def _int(v: Any) -> int | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f >= 0 else None


def tags(m: Manifest, digest_check: str, replays: str, run_dir: str) -> dict[str, str]:
    """What the tracker shows beside the numbers: where the run came from and whether it holds."""
    image = m.image
    out = {
        RUN_ID_TAG: m.run_id,
        "runner.run_dir": run_dir,
        "runner.status": m.status,
        "runner.manifest_digest": m.digest or "none",
        "runner.digest_check": digest_check,
        "runner.replays": replays,
        "runner.seed": str(m.config.get("seed", "")),
    }
    if m.code is not None and m.code.commit:
        out["runner.git_commit"] = m.code.commit
        out["mlflow.source.git.commit"] = m.code.commit
    if m.code is not None:
        out["runner.code_sha256"] = m.code.snapshot_sha256
        out["runner.git_dirty"] = str(m.code.dirty).lower()
    if image is not None:
        out["runner.image_id"] = image.id
        out["runner.image_digest"] = image.registry_ref or image.id
        out["runner.image_tag"] = image.tag
    return {key(k): text(v, MAX_TAG_VALUE) for k, v in out.items()}
