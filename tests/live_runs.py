"""Runs a test watches while they happen: started in the background, waited on, interrupted.

A test that needs to act mid-run (send Ctrl-C, inspect or kill the container) starts
``python -m runner`` with :func:`start` and polls with :func:`wait_for`. The probe experiment
(``tests/data/probe_experiment/probe.py``) is a script that reports on the box it runs in.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import docker
import docker.errors
import docker.models.containers

from runner.host.engine import Engine
from tests.conftest import ROOT

PROBE = [
    "experiment.target=null",
    "experiment.script=tests/data/probe_experiment/probe.py",
    "launch.processes=1",
]


def probe_args(*args: str) -> str:
    """``experiment.args=[...]`` for the probe, quoted for Hydra."""
    return "experiment.args=[" + ",".join(f"'{a}'" for a in args) + "]"


_started: list[subprocess.Popen] = []


def start(run_dir: Path, *overrides: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m runner hydra.run.dir=RUN_DIR overrides…`` in the background, output captured."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    _started.append(proc)
    return proc


def stop_leftovers() -> None:
    """After each test: a runner it started and left running (the test failed half-way) gets
    SIGTERM, so that it stops and removes its container instead of outliving the test."""
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=60)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def wait_for(
    what: Callable[[], object],
    timeout: float = 300,
    every: float = 0.05,
    proc: subprocess.Popen | None = None,
):
    """Poll ``what()`` until it is truthy and return it; fail if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(
                f"the runner ended (status {proc.returncode}) before the wait was over:\n{err[-3000:]}"
            )
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def last_step(run_dir: Path) -> int:
    """The highest optimizer step in the run's fingerprints so far (0 when none)."""
    try:
        lines = (Path(run_dir) / "fingerprints.jsonl").read_text().splitlines()
    except OSError:
        return 0
    steps = [0]
    for line in lines:
        with contextlib.suppress(ValueError, AttributeError):  # a line being written right now
            steps.append(int(json.loads(line).get("step", 0)))
    return max(steps)


def containers_of(engine: Engine, run_dir: Path) -> list[docker.models.containers.Container]:
    """Every container (running or exited) the runner started for ``run_dir``, found through the
    engine's labels, as docker-py objects a test can inspect, stop or kill (asked of ``engine``'s
    own client where it has one: a private dockerd's containers are not the machine's)."""
    found = []
    client = getattr(engine, "client", None) or _docker()
    for handle in engine.containers_labelled("org.runner.run-dir", str(Path(run_dir).resolve())):
        with contextlib.suppress(docker.errors.NotFound):  # removed since it was listed
            found.append(client.containers.get(handle.id))
    return found


@functools.cache
def _docker() -> docker.DockerClient:
    return docker.from_env()


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def one_error_line(stderr: str, training_traceback: bool = False) -> str:
    """The runner's one line of error (and no traceback, unless training printed one: the peer of
    a killed rank does, and it is training's log, echoed; torch's anomaly-mode warning, "Traceback of
    forward call", is no traceback of this process)."""
    lines = [x for x in stderr.strip().splitlines() if x.startswith("runner: error:")]
    assert len(lines) == 1, stderr[-3000:]
    assert training_traceback or "Traceback (most recent call last)" not in stderr, stderr[-3000:]
    return lines[0]
