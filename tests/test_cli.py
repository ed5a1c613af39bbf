"""The `runner` console script dispatches to the same commands as `python -m runner…` (no Docker)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.run_records import make_run

SCRIPT = Path(sys.executable).parent / "runner"


def _runner(*args: str) -> subprocess.CompletedProcess:
    assert SCRIPT.is_file(), "the console script is installed by `pip install -e .` (make setup)"
    return subprocess.run([str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DOCKER_HOST": "unix:///nonexistent"})  # fmt: skip


def test_usage_and_unknown_commands():
    proc = _runner()
    assert proc.returncode == 2 and "commands:" in proc.stdout and "replay" in proc.stdout
    assert _runner("--help").returncode == 0
    proc = _runner("frobnicate")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "runner: error: unknown command 'frobnicate': one of run, replay, diff, summary"
    )


def test_run_delegates_to_the_hydra_entry_with_its_checks():
    proc = _runner("run", "experiment=no_such_experiment")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("runner: error: ") and "mnist_ddp" in proc.stderr  # the options are listed


def test_diff_and_replay_through_the_script(tmp_path):
    a = make_run(tmp_path / "a")
    b = make_run(tmp_path / "b", config={"seed": 7, "experiment": {"name": "x", "script": "train.py"}})
    proc = _runner("diff", str(a), str(b), "--json")
    assert proc.returncode == 0, proc.stderr
    d = json.loads(proc.stdout)
    assert [c["key"] for c in d["sections"]["config"]] == ["launch.processes", "seed"]
    assert d["outputs_identical"] is True

    (tmp_path / "empty").mkdir()
    proc = _runner("replay", str(tmp_path / "empty"))
    assert proc.returncode == 2 and proc.stderr.strip() == f"runner: error: no manifest at {tmp_path / 'empty' / 'manifest.json'}"


@pytest.mark.skipif(importlib.util.find_spec("runner.summary") is None, reason="runner.flows.summary not present")
def test_summary_is_dispatched_lazily():
    assert _runner("summary", "--help").returncode == 0
