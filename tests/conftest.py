"""Shared fixtures. Tests marked ``docker`` run against the real Docker engine (``make test``
starts it); they never mock docker-py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FAST = ["trainer.max_steps=12", "model.train_samples=4096", "fingerprints.every_k_steps=4"]


def run_runner(
    *args: str, module: str = "runner", env: dict | None = None, timeout: int = 600, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    """``python -m <module> args…`` as a user would type it; returns the finished process."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "manifest.json").read_text())


@pytest.fixture(autouse=True)
def _no_runner_outlives_its_test():
    yield
    from tests.live_runs import stop_leftovers

    stop_leftovers()


@pytest.fixture(scope="session")
def engine():
    """The runner's default engine (Docker), connected; the test session fails loudly when no engine
    answers. What it hands out are the runner's own handles; a test that inspects a container asks
    docker-py (:func:`tests.live_runs.containers_of`)."""
    from runner.host import engine as engines

    engine = engines.connect()
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def charliecloud_image(engine):
    """The CPU image, unpacked for Charliecloud in the CI user's cache (tag, id, unpack seconds or
    None when it was there): once per machine, ~80 s."""
    from tests import ci_user

    return ci_user.charliecloud_image(engine)
