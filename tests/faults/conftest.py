"""The fault suite reports as it goes: each test fills one row of the table the issue's closing note
gives (fault | survived | what was lost | resume identical), and the session prints it at the end,
as Markdown; ``RUNNER_FAULT_TABLE=PATH`` writes it to PATH too (:mod:`tests.fault_table`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fault_table import FaultRow, markdown

ROWS = pytest.StashKey[list[FaultRow]]()


@pytest.fixture
def fault_row(request: pytest.FixtureRequest) -> Iterator[Callable[..., FaultRow]]:
    """``fault_row(fault, resumes=True)``: this test's row of the fault table, filled by what it sees."""
    made: list[FaultRow] = []

    def row(fault: str, resumes: bool = True) -> FaultRow:
        made.append(FaultRow(fault, request.node.nodeid, resumes))
        request.config.stash.setdefault(ROWS, []).append(made[-1])
        return made[-1]

    yield row
    for r in made:  # a test that failed before it looked: its watch ends here
        r.stop_watching()


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    rows = config.stash.get(ROWS, [])
    if not rows:
        return
    failed = {r.nodeid for key in ("failed", "error") for r in terminalreporter.stats.get(key, [])}
    table = markdown([(r, r.nodeid not in failed) for r in rows])
    terminalreporter.write_sep("=", "fault table")
    terminalreporter.write(table)
    where = os.environ.get("RUNNER_FAULT_TABLE")
    if where:
        Path(where).write_text(table)
        terminalreporter.write_line(f"fault table written to {where}")
