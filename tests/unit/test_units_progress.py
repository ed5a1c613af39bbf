"""A build's terminal output: its steps and how long it took, not every line (those go to the log)."""

from __future__ import annotations

from pathlib import Path

from runner.host.progress import BuildProgress


def test_a_build_off_a_terminal_prints_its_steps_only(tmp_path: Path):
    shown: list[str] = []
    with BuildProgress("runner:cpu-x", tmp_path / "build.log", shown.append) as progress:
        for line in ("Step 1/3 : ARG BASE", " ---> abc", "Collecting torch", "Step 2/3 : RUN pip install"):
            progress(line)
    assert shown[0].startswith("building image runner:cpu-x") and str(tmp_path / "build.log") in shown[0]
    assert shown[1:3] == ["  Step 1/3 : ARG BASE", "  Step 2/3 : RUN pip install"]
    assert shown[3].startswith("built runner:cpu-x in ") and len(shown) == 4
