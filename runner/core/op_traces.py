"""Per-operation traces of one training step, and the first operation at which two traces part.
Pure, standard library only (the worker imports the file name from here).

A trace (``op-trace-step-NNNNNNNN.jsonl`` in the run dir, written for the steps listed in
``fingerprints.trace_steps`` or by ``replay --locate``) has one row per ATen operation of that
step (forward, backward, optimizer step), in the order they ran: its index, name, the module it ran
in (forward) or the autograd node (backward), the user-code frame, and the sha256 of its outputs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, TypedDict, cast

TEMPLATE = "op-trace-step-{step:08d}.jsonl"
_NAME = re.compile(r"^op-trace-step-(\d{8})\.jsonl$")


def file_name(step: int) -> str:
    return TEMPLATE.format(step=step)


def step_of(name: str) -> int | None:
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def trace_steps(config: Mapping[str, Any]) -> list[int]:
    """``fingerprints.trace_steps``: the optimizer steps (1 = the first) whose operations are traced."""
    steps = (config.get("fingerprints") or {}).get("trace_steps") or []
    return sorted({int(s) for s in steps if isinstance(s, int) and not isinstance(s, bool) and s >= 1})


class OpRow(TypedDict, total=False):
    """One operation of a trace (as :mod:`runner.worker.op_trace` writes it)."""

    i: int  # its index in the step
    op: str  # the ATen operation
    out: str | None  # the sha256 of its outputs; None: an op whose output is undefined (torch.empty)
    module: str | None  # forward: the module it ran in
    node: str  # backward: the autograd node
    where: str | None  # the user-code frame, file:line


class OpDifference(TypedDict):
    """Where two traces of a step part (:func:`first_difference`)."""

    index: int
    kind: Literal["different operations", "output differs", "length"]
    a: OpRow | None
    b: OpRow | None
    line: str  # in words


def parse(text: str) -> list[OpRow]:
    """A trace's rows (lines that are not JSON objects are passed over; ValueError: not JSON)."""
    rows = []
    for line in text.splitlines():
        if line.strip():
            row = json.loads(line)
            if isinstance(row, dict):
                rows.append(cast(OpRow, row))
    return rows


def describe(row: OpRow) -> str:
    """``#12 aten::randn in net.2 (Noise) at experiments/noisy.py:30``."""
    where = f" at {row['where']}" if row.get("where") else ""
    scope = (
        f" in {row['module']}"
        if row.get("module")
        else f" in the backward of {row['node']}"
        if row.get("node")
        else ""
    )
    return f"#{row.get('i')} {row.get('op')}{scope}{where}"


def first_difference(a: Sequence[OpRow], b: Sequence[OpRow]) -> OpDifference | None:
    """The first operation whose output differs between two traces of the same step (or at which
    the two ran different operations); None when the traces agree op for op."""
    for i, (ra, rb) in enumerate(zip(a, b, strict=False)):
        if ra.get("op") != rb.get("op"):
            return {
                "index": i,
                "kind": "different operations",
                "a": ra,
                "b": rb,
                "line": f"the runs ran different operations from {describe(ra)} vs {rb.get('op')}",
            }
        if ra.get("out") != rb.get("out"):
            return {
                "index": i,
                "kind": "output differs",
                "a": ra,
                "b": rb,
                "line": f"{describe(ra)}: output {str(ra.get('out'))[:12]}… vs {str(rb.get('out'))[:12]}…",
            }
    if len(a) != len(b):
        return {
            "index": min(len(a), len(b)),
            "kind": "length",
            "a": None,
            "b": None,
            "line": (
                f"one trace ends after {min(len(a), len(b))} operations, the other has {max(len(a), len(b))}"
            ),
        }
    return None
