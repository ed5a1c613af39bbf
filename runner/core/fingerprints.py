"""Per-step fingerprints: the loss at every optimizer step and a parameter hash every K steps.

Two runs that should be identical can then be compared step by step, and the first step at
which they part is the place to look. One JSON object a line, each with a non-negative integer
``step``, written by rank 0 only (after DDP's all-reduce every rank holds the same parameters).
This module is the format, read one way everywhere. Pure, standard library only; the Lightning
callback that writes the rows is :mod:`runner.worker.fingerprint_callback`.

Two readings of the same text, chosen by the caller:

* ``strict=True`` — a recorded file whose sha256 the manifest vouches for (a replay, a diff):
  a line that is not a row is a :class:`~runner.core.errors.RunnerError` naming it.
* ``strict=False`` — a file a run may still be writing, or one a killed run left with a torn
  last line (the manifest of a failed run, a sweep's loss curves): such lines are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Required, TypedDict, cast

from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.layout import FINGERPRINTS


class Row(TypedDict, total=False):
    """One line of ``fingerprints.jsonl``: its step, the loss there, and (every K steps, and when
    training ended) the sha256 of the parameters after it. Readers keep any other key a line holds."""

    step: Required[int]
    loss: float | None
    params_sha256: str
    final: bool  # the row written when training ended (parameters only)


def _row(line: str) -> tuple[Row | None, str]:
    """A line as a row, or (None, why it is not one)."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, f"is not JSON ({exc.msg})"
    step = row.get("step") if isinstance(row, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return None, "has no non-negative integer `step`"
    return cast(Row, row), ""


def parse(text: str, *, strict: bool, where: str = FINGERPRINTS) -> list[Row]:
    """``fingerprints.jsonl`` text → its rows, in file order. Blank lines are ignored. A line that
    is not a row (not JSON, or no non-negative integer ``step``) is skipped when not ``strict``,
    and a RunnerError naming ``where`` and the line number when ``strict``."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        row, why = _row(line)
        if row is not None:
            rows.append(row)
        elif strict:
            raise RunnerError(f"{where}: line {n} {why}", EXIT_USAGE)
    return rows


def last_step(rows: Iterable[Row]) -> int:
    """The highest step the rows record (0 for none): how far the run trained."""
    return max((int(r["step"]) for r in rows), default=0)


def losses(rows: Iterable[Row]) -> list[tuple[int, float]]:
    """(step, loss) pairs sorted by step. A resumed run records the steps after its checkpoint
    again: the later row for a step wins. Rows without a numeric loss are left out."""
    by_step: dict[int, float] = {}
    for row in rows:
        loss = row.get("loss")
        if isinstance(loss, (int, float)) and not isinstance(loss, bool):
            by_step[int(row["step"])] = float(loss)
    return sorted(by_step.items())
