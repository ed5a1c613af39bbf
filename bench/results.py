"""The results file's schema, goal checks and the Markdown table the README shows.

One :class:`Figure` per measured quantity. A figure carries its raw samples (one per
repetition), the median quoted, its goal (or none: a figure recorded for information), and
any yes/no checks the goal also depends on (e.g. "no build context was sent").
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
_OPS = {
    "<=": lambda v, g: v <= g,
    ">=": lambda v, g: v >= g,
    "<": lambda v, g: v < g,
    ">": lambda v, g: v > g,
}


@dataclass(frozen=True)
class Goal:
    op: str  # one of <=, >=, <, >
    value: float

    def __post_init__(self) -> None:
        if self.op not in _OPS:
            raise ValueError(f"goal operator {self.op!r} is not one of {', '.join(_OPS)}")

    def met(self, value: float) -> bool:
        return _OPS[self.op](value, self.value)

    def __str__(self) -> str:
        return f"{self.op} {self.value:g}"


@dataclass
class Figure:
    id: str
    title: str
    unit: str
    samples: list[float]  # one per repetition; the figure is their median
    goal: Goal | None = None
    checks: dict[str, bool] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    load_average: list[float] = field(default_factory=list)  # 1, 5, 15 min, when the measurement began

    @property
    def value(self) -> float:
        return median(self.samples)

    @property
    def passed(self) -> bool | None:
        """Goal met and every check true; None for a figure recorded without a goal (unless a
        check failed: then the figure is not what its title says, and that is a failure)."""
        if not all(self.checks.values()):
            return False
        return None if self.goal is None else self.goal.met(self.value)

    def to_dict(self, machine_line: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "value": self.value,
            "unit": self.unit,
            "goal": asdict(self.goal) if self.goal else None,
            "passed": self.passed,
            "repetitions": len(self.samples),
            "samples": list(self.samples),
            "checks": dict(self.checks),
            "details": self.details,
            "machine": machine_line,
            "load_average": list(self.load_average),
        }


def median(samples: Sequence[float]) -> float:
    if not samples:
        raise ValueError("a figure needs at least one sample")
    return float(statistics.median(samples))


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def document(figures: list[Figure], machine: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    line = machine_line(machine)
    return {
        "schema_version": SCHEMA_VERSION,
        **meta,
        "machine": machine,
        "figures": [f.to_dict(line) for f in figures],
    }


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine.get('cpu_model')}, {machine.get('cpu_count')} cores, "
        f"{machine.get('memory_gib')} GiB, docker {machine.get('docker_server')}"
    )


def write(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """``latest.json`` and ``latest.md`` in ``out_dir``, each written whole (temp file + rename)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = (out_dir / "latest.json", out_dir / "latest.md")
    for path, text in zip(
        paths, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n", markdown(doc)), strict=True
    ):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return paths


def _num(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    a = abs(x)
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def markdown(doc: dict[str, Any]) -> str:
    """The table for the README: one row per figure, then where and when it was measured."""
    m = doc["machine"]
    rows = ["| Measurement | Median | Goal | Result | Reps |", "|---|---|---|---|---|"]
    for f in doc["figures"]:
        goal = f"{f['goal']['op']} {f['goal']['value']:g} {f['unit']}" if f["goal"] else "recorded"
        result = {True: "pass", False: "**FAIL**", None: "—"}[f["passed"]]
        rows.append(
            f"| {f['title']} | {_num(f['value'])} {f['unit']} | {goal} | {result} | {f['repetitions']} |"
        )
    load = m.get("load_average_start")
    notes = [
        "",
        f"Measured {doc['finished_utc'][:16].replace('T', ' ')} UTC by `make bench`"
        f"{' (--quick: tiny sizes, not for quoting)' if doc.get('quick') else ''} on {machine_line(m)}; "
        f"{m.get('os')}, kernel {m.get('kernel')}, Python {m.get('python')}, torch {m.get('torch')}; "
        f"load average at start {load[0] if load else '?'} (1 min). "
        "Each figure is the median of its repetitions, the two sides measured interleaved in one run; "
        "raw samples and details in `bench/results/latest.json`.",
    ]
    return "\n".join(rows + notes) + "\n"
