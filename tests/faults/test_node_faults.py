"""A run across nodes dies, or nearly, in one of its node containers: each fault is told as what it is.

Runs span the two Slurm nodes ``make slurm`` starts on this machine (n1, n2), one container per node
on the real Docker engine, started by the node agents ``srun`` runs; the runner runs on the
allocation's first node (``salloc -N 2 srun -N 1 python -m runner …``), as a user's batch script
would. One test per fault:

* the kernel kills a node's container for memory: one line names the node, its memory limit and
  the kernel, and the record's reason says out of memory (not a bare exit status 137);
* a node's container ends at once (its experiment's module needs a package the image lacks): the
  user's error line reaches the terminal, ``logs/train.log`` and the node's log, even when the
  container was gone before its log was read (``tests.late_logs.LateReader``);
* another process takes the rendezvous port before the first node's store listens on it: the nodes
  meet again on a new port, and the record names both.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.core import layout
from runner.core.spec import RUN_ID_LABEL
from tests.conftest import FAST, ROOT, manifest, run_runner
from tests.live_runs import PROBE, finish, one_error_line, probe_args, wait_for

pytestmark = [pytest.mark.slurm, pytest.mark.docker]

NODES = ["launch.nodes=2", "launch.processes=1"]  # one process on each node
TORCHRUN_PROBE = [*PROBE, "+experiment.launcher=torchrun", *NODES]


@pytest.fixture(autouse=True)
def _slurm_up() -> None:
    if shutil.which("sinfo") is None or subprocess.run(["sinfo"], capture_output=True).returncode != 0:
        pytest.fail("no Slurm cluster answers: `make slurm` (scripts/ensure-slurm.sh) starts the local one")


@contextlib.contextmanager
def across_two_nodes(run_dir: Path, *overrides: str, env: dict | None = None) -> Iterator[subprocess.Popen]:
    """The runner on the first node of an allocation of two, in the background (``env``: added to
    the environment, which srun hands on to the node agents); stopped (SIGTERM) if the test leaves
    it running."""
    proc = subprocess.Popen(
        ["salloc", "-N", "2", "--quiet", "srun", "-N", "1", "-n", "1"]
        + [sys.executable, "-m", "runner", f"hydra.run.dir={run_dir}", *overrides],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            finish(proc)


def end_of(run_dir: Path, node: int) -> dict:
    """How node ``node``'s container ended, as its agent wrote it for the runner."""
    return json.loads((run_dir / layout.LOGS_DIR / layout.NODE_END.format(node=node)).read_text())


def _nothing_left(engine, run_id: str) -> None:
    wait_for(lambda: engine.containers_labelled(RUN_ID_LABEL, run_id) == [], timeout=30, every=0.2)


def test_a_node_killed_for_memory_is_told_as_such(tmp_path, engine, fault_row):
    row = fault_row("node: a node's container OOM (the probe script, no training)", resumes=False)
    run_dir = tmp_path / "run"
    with across_two_nodes(
        run_dir, *TORCHRUN_PROBE, "launch.mem_limit=768m", probe_args("hog", "2048", "1")
    ) as proc:
        code, out, err = finish(proc)
    _nothing_left(engine, manifest(run_dir)["run_id"])
    row.observe(run_dir, engine, "failed", code=code, stderr=err, reason="out of memory")
    assert code == 1, err[-3000:]
    line = one_error_line(err, training_traceback=True)
    said = "killed: out of memory (the kernel killed node 1's container on n2, memory limit 768m)"
    assert said in line, line
    m = manifest(run_dir)
    assert m["status"] == "failed" and m["error"] == said, m["error"]
    assert m["exit_code"] == end_of(run_dir, 1)["exit_code"] != 0  # the node's status, not srun's
    # the node's own line, in the run's log and the node's
    told = "runner: node 1: killed: out of memory (the kernel killed node 1's container on n2"
    assert told in (run_dir / layout.LOGS_DIR / layout.TRAIN_LOG).read_text()
    assert told in (run_dir / layout.LOGS_DIR / "node-1.log").read_text()
    end = end_of(run_dir, 1)
    assert end["oom_killed"] is True and end["host"] == "n2" and end["mem_limit"] == "768m", end


def test_a_node_whose_container_ends_at_once_keeps_its_log(tmp_path, engine, fault_row):
    row = fault_row("node: a node's container that ends at once (nothing ran)", resumes=False)
    run_dir = tmp_path / "run"
    with across_two_nodes(
        run_dir,
        *FAST,
        *NODES,
        "experiment.target=tests.data.needs_a_missing_package:train",
        "launch.engine._target_=tests.late_logs.LateReader",  # logs read only once the container is gone
    ) as proc:
        code, out, err = finish(proc)
    _nothing_left(engine, manifest(run_dir)["run_id"])
    row.observe(run_dir, engine, "failed", code=code, stderr=err)
    assert code == 1, err[-3000:]
    users = "No module named 'a_package_the_image_lacks'"
    assert users in err, err[-3000:]  # the terminal
    assert users in (run_dir / layout.LOGS_DIR / layout.TRAIN_LOG).read_text()
    assert any(users in (run_dir / layout.LOGS_DIR / f"node-{k}.log").read_text() for k in (0, 1))
    m = manifest(run_dir)
    assert m["status"] == "failed" and any(users in x for x in m["log_tail"]), m["log_tail"]


def test_a_rendezvous_port_taken_by_another_process_is_met_again_and_recorded(tmp_path, engine, fault_row):
    """Another process listens on the port the runner picked before the first node's store does:
    the store cannot listen (EADDRINUSE), the nodes never met; they meet again on a new port."""
    row = fault_row("node: the rendezvous port taken by another process", resumes=False)
    run_dir = tmp_path / "run"
    request = run_dir / layout.NODE_REQUEST
    with across_two_nodes(run_dir, *FAST, *NODES) as proc, socket.socket() as squatter:

        def picked() -> int | None:
            with contextlib.suppress(OSError, ValueError, KeyError):
                return int(json.loads(request.read_text())["request"]["environment"]["MASTER_PORT"])
            return None

        port = wait_for(picked, timeout=300, every=0.01, proc=proc)
        squatter.bind(("127.0.0.1", port))  # before the first node's training process is up
        squatter.listen()
        code, out, err = finish(proc)
    _nothing_left(engine, manifest(run_dir)["run_id"])
    row.observe(run_dir, engine, "completed", code=code, stderr=err)
    assert code == 0, err[-3000:]
    m = manifest(run_dir)
    meet = m["cluster"]["rendezvous"]
    assert m["status"] == "completed" and meet["taken"] == [port] and meet["port"] != port, meet
    assert stat.S_IMODE(request.stat().st_mode) == 0o600  # it holds the environment: the user's alone
    said = f"the rendezvous port 127.0.0.1:{port} was taken by another process before the nodes met"
    assert said in err and f"they meet again on port {meet['port']}" in err, err[-3000:]
    log = (run_dir / layout.LOGS_DIR / layout.TRAIN_LOG).read_text()
    assert said in log and "EADDRINUSE" in log.split(said)[0]  # the first node's store said so first
    # the try that never met left nothing behind: the bits of two processes in one container
    ref = run_runner(f"hydra.run.dir={tmp_path / 'one'}", *FAST, "launch.processes=2")
    assert ref.returncode == 0, ref.stderr[-3000:]
    one = manifest(tmp_path / "one")
    assert m["outputs"]["model.pt"] == one["outputs"]["model.pt"]
    assert m["fingerprints"]["sha256"] == one["fingerprints"]["sha256"]
