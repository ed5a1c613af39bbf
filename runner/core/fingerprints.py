"""Per-step fingerprints: the loss at every optimizer step and a parameter hash every K steps.

Two runs that should be identical can then be compared step by step, and the first step at
which they part is the place to look. One JSON object a line, written by rank 0 only (after
DDP's all-reduce every rank holds the same parameters). This module is the format (hash, read)
and imports neither torch nor Lightning at module level, so the host can read records cheaply;
the Lightning callback that writes them is :mod:`runner.fingerprint_callback`.
"""

from __future__ import annotations

import json
from pathlib import Path


def read(path: Path) -> list[dict]:
    """The records of a fingerprint file. A killed run can leave a torn last line: records that
    do not parse are skipped, so a failed run's manifest is still written."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            rows.append(rec)
    return rows
