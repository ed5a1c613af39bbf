"""The `runner` console script dispatches to the same commands as `python -m runner…` (no Docker)."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from runner.core.commands import COMMANDS
from tests.conftest import ROOT
from tests.run_records import make_run

SCRIPT = Path(sys.executable).parent / "runner"


def _runner(*args: str) -> subprocess.CompletedProcess:
    assert SCRIPT.is_file(), "the console script is installed by `pip install -e .` (make setup)"
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "DOCKER_HOST": "unix:///nonexistent"},
    )


def test_usage_and_unknown_commands():
    proc = _runner()
    assert proc.returncode == 2 and "commands:" in proc.stdout and "replay" in proc.stdout
    assert _runner("--help").returncode == 0
    proc = _runner("frobnicate")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        "runner: error: unknown command 'frobnicate': one of " + ", ".join(COMMANDS)
    )
    assert {"audit", "verify", "keygen"} <= set(COMMANDS)


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
    assert (
        proc.returncode == 2
        and proc.stderr.strip() == f"runner: error: no manifest at {tmp_path / 'empty' / 'manifest.json'}"
    )


HEAVY = ("hydra", "omegaconf", "matplotlib", "torch", "pytorch_lightning", "lightning", "docker")
FLOWS = {
    "run": "runner.flows.app",
    "replay": "runner.flows.replay",
    "diff": "runner.flows.diff",
    "summary": "runner.flows.summary",
}


def _imported_by(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``runner ARGS`` (the console script's own dispatch, ``runner.cli:main``) and list every
    module the process imported, from ``python -X importtime``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "runner.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    names = {
        line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")
    }
    assert "runner.cli" in names or "runner" in names, proc.stderr[-2000:]
    return proc, names


@pytest.mark.parametrize(
    "command, usage",
    [
        ("diff", "usage: runner diff [-h] [--json] [--plot FILE.png] [--plot-size WxH]"),
        ("replay", "usage: runner replay [-h] [--out OUT] [--allow-env-drift] [--engine NAME]"),
        ("summary", "usage: runner summary [-h] sweep_dir"),
    ],
)
def test_diff_replay_and_summary_are_dispatched_lazily(command, usage):
    """``runner diff|replay|summary`` print their own command's usage, and load that command and
    nothing heavy: no Hydra, no plotting, no torch, no Docker client, and none of the other commands."""
    proc, names = _imported_by(command, "--help")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0] == usage
    assert FLOWS[command] in names
    assert not {n for n in names if n.split(".")[0] in HEAVY}
    others = {m for c, m in FLOWS.items() if c != command}
    assert not names & others


def test_run_loads_hydra_but_not_the_comparison_code():
    proc, names = _imported_by("run", "--help")
    assert proc.returncode == 0 and "hydra" in names and FLOWS["run"] in names, proc.stderr[-2000:]
    assert not names & {"runner.core.compare", "runner.flows.diff", "runner.flows.summary", "matplotlib"}


def test_ctrl_c_while_an_image_loads_is_one_line(tmp_path):
    """`runner import` interrupted while the engine takes the file: status 130 and one line (an
    engine socket that takes the request and never answers holds it there)."""
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"[]"))
    sock = tmp_path / "engine.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock))
        server.listen()
        server.settimeout(60)
        proc = subprocess.Popen(
            [str(SCRIPT), "import", str(archive)],
            cwd=ROOT,
            env={**os.environ, "DOCKER_HOST": f"unix://{sock}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        conn, _ = server.accept()  # the runner is waiting for the engine
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        conn.close()
    assert proc.returncode == 130 and err.startswith("runner: error: interrupted"), err[-2000:]
    assert err.count("\n") == 1


def test_ctrl_c_in_any_command_is_one_line(tmp_path):
    """`runner verify` interrupted while it reads the key (a pipe that never ends): 130, one line."""
    (tmp_path / "run").mkdir()
    fifo = tmp_path / "key.pub"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [str(SCRIPT), "verify", str(tmp_path / "run"), "--key", str(fifo)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while True:  # the write end opens once the runner has the read end open: it is reading
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError:
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
    try:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == 130 and err == "runner: error: interrupted\n", err[-2000:]
