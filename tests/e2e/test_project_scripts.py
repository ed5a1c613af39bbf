"""Scripts from a user's own repository run unmodified: a fresh git repository outside this
checkout, whose script writes ``weights.pt`` to its working directory, runs twice bit-identically
and replays; a torchrun-style DDP script (it reads ``LOCAL_RANK``/``RANK``/``WORLD_SIZE``) runs
with 2 processes on the CPU, in the locked-down container."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, manifest, run_runner

pytestmark = pytest.mark.docker

TRAIN = """\
import os, sys
import torch
import torch.distributed as dist

ddp = "LOCAL_RANK" in os.environ
if ddp:
    dist.init_process_group("gloo")
torch.manual_seed(int(os.environ["RUNNER_SEED"]))
model = torch.nn.Linear(8, 2)
net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
opt = torch.optim.SGD(net.parameters(), lr=0.1)
for step in range(5):
    loss = net(torch.randn(16, 8)).pow(2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
    print(f"\\rtraining {step + 1}/5", end="", flush=True)  # a progress bar, redrawn in place
print()
print("💡 Tip: For seamless cloud logging, try installing [litlogger](https://pypi.org/project/litlogger/)")
if not ddp or dist.get_rank() == 0:
    torch.save(model.state_dict(), "weights.pt")  # the working directory, as scripts in the wild do
    with open("world.txt", "w") as f:
        f.write(os.environ.get("WORLD_SIZE", "-"))
if ddp:
    dist.destroy_process_group()
"""


def git_project(path: Path) -> Path:
    """A fresh git repository with one training script and the image inputs it builds from."""
    path.mkdir(parents=True)
    (path / "train.py").write_text(TRAIN)
    (path / "images").mkdir()
    shutil.copy(ROOT / "Dockerfile.cpu", path / "Dockerfile.cpu")
    shutil.copy(ROOT / "images" / "cpu.lock", path / "images" / "cpu.lock")
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "."], check=True)
    return path


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return git_project(tmp_path_factory.mktemp("userrepo") / "proj")


# The runner under test is this checkout's, whatever the working directory.
RUNNER_ENV = {"PYTHONPATH": str(ROOT)}


def run_in(project: Path, *args: str) -> subprocess.CompletedProcess:
    return run_runner(
        "experiment=plain_script",
        "experiment.name=mine",
        "experiment.script=train.py",
        "experiment.args=[]",
        *args,
        cwd=project,
        env={**RUNNER_ENV, "RUNNER_PROJECT": str(project)},
    )


def test_a_script_writing_to_its_cwd_repeats_bit_identically_and_replays(project, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        proc = run_in(project, f"hydra.run.dir={d}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    ma, mb = manifest(a), manifest(b)
    assert set(ma["outputs"]) == {"weights.pt", "world.txt"}
    assert ma["outputs"] == mb["outputs"]
    assert (a / "outputs" / "world.txt").read_text() == "-"  # a plain `python train.py`: no DDP
    log = (a / "logs" / "train.log").read_text().splitlines()
    assert "training 5/5" in log and not any("training 1/5" in line for line in log)  # the bar's last state
    assert any("💡 Tip" in line for line in log)  # kept in the log file ...
    assert (
        "💡 Tip" not in run_in(project, f"hydra.run.dir={tmp_path / 'c'}").stderr
    )  # ... not on the terminal
    replay = run_runner(str(a), module="runner.replay", cwd=project, env=RUNNER_ENV)
    assert replay.returncode == 0, replay.stdout[-2000:] + replay.stderr[-2000:]


def test_a_torchrun_ddp_script_runs_with_two_processes_on_cpu(project, tmp_path):
    run = tmp_path / "ddp"
    proc = run_in(project, f"hydra.run.dir={run}", "experiment.launcher=torchrun", "launch.processes=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (run / "outputs" / "world.txt").read_text() == "2"
    assert manifest(run)["launch"]["world_size"] == 2
    assert "socket.cpp" not in proc.stdout + proc.stderr  # c10d's host-name warnings stay in the log
