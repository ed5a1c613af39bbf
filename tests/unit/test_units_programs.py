"""How a plain program starts (pure planning and the worker's command line), and what the
training log keeps of progress bars and terminal noise."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.core import logtext, spec
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.worker_io import Experiment
from runner.flows.cli_common import compose
from runner.worker.__main__ import program_command, rank_env
from tests.conftest import ROOT

SCRIPT = "experiments/plain_script/train.py"


@pytest.fixture(scope="module")
def script_cfg() -> dict:
    return OmegaConf.to_container(compose(["experiment=plain_script"]), resolve=True)


def plan(cfg: dict, **experiment) -> spec.RunPlan:
    cfg = {**cfg, "experiment": {**cfg["experiment"], **experiment}}
    return spec.plan_run(cfg, Path("/tmp/x/run"), ROOT, spec.Host({}, 1000, 1000))


def _requested(p: spec.RunPlan) -> Experiment:
    """The experiment as the worker is told it (``job.json``)."""
    return p.job_document("/job", "/code", "/data", {}).experiment


def test_a_module_runs_with_python_dash_m(script_cfg):
    p = plan(script_cfg, script=None, module="experiments.mnist", args=[])
    assert program_command(_requested(p), Path("/code"), 1, 0) == [sys.executable, "-m", "experiments.mnist"]


def test_a_script_runs_by_path_under_the_snapshot(script_cfg):
    p = plan(script_cfg, args=["--x", 1])
    assert program_command(_requested(p), Path("/code"), 1, 0) == [
        sys.executable,
        f"/code/{SCRIPT}",
        "--x",
        "1",
    ]


def test_torchrun_starts_world_size_processes_with_a_loopback_rendezvous(script_cfg):
    p = plan(script_cfg, launcher="torchrun", args=[])
    assert p.world_size == script_cfg["launch"]["processes"]
    cmd = program_command(_requested(p), Path("/code"), p.world_size, 29500)
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert f"--nproc-per-node={p.world_size}" in cmd and "--rdzv-endpoint=127.0.0.1:29500" in cmd
    assert "--local-addr=127.0.0.1" in cmd and cmd[-1] == f"/code/{SCRIPT}"
    assert plan(script_cfg, launcher="torchrun", nproc_per_node=3).world_size == 3


def test_torchrun_on_one_of_several_nodes_starts_its_share_and_meets_the_first(script_cfg, monkeypatch):
    monkeypatch.setenv("MASTER_ADDR", "10.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29511")
    exp = Experiment("script", SCRIPT, launcher="torchrun")
    cmd = program_command(exp, Path("/code"), 4, 0, nodes=2, node=1)
    for arg in ("--nnodes=2", "--node-rank=1", "--master-addr=10.0.0.1", "--master-port=29511"):
        assert arg in cmd
    assert "--nproc-per-node=2" in cmd and not any(a.startswith("--rdzv") for a in cmd)


@pytest.mark.parametrize(
    ("experiment", "match"),
    [
        ({"module": "experiments.mnist"}, "exactly one of"),
        ({"script": None, "module": "no.such"}, "no module no.such"),
        ({"launcher": "mpirun"}, "python, torchrun"),
        ({"nproc_per_node": 2}, "launcher=torchrun"),
        ({"launcher": "torchrun", "nproc_per_node": 0}, "positive integer"),
        ({"script": None, "target": "experiments.mnist:train", "launcher": "torchrun"}, "not a `target`"),
    ],
)
def test_bad_program_settings_are_refused_before_anything_starts(script_cfg, experiment, match):
    with pytest.raises(RunnerError, match=match) as info:
        plan(script_cfg, **experiment)
    assert info.value.exit_code == EXIT_USAGE


def test_a_progress_bar_keeps_its_last_state():
    assert logtext.last_redraw("epoch 0:  10%\repoch 0:  50%\repoch 0: 100%\r") == "epoch 0: 100%"
    assert logtext.last_redraw("plain line") == "plain line"


@pytest.mark.parametrize(
    "line",
    [
        "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger](https://pypi.org/project/litlogger/)",
        "[W1126 08:38:02.880408783 socket.cpp:207] [c10d] The hostname of the client socket cannot be retrieved. err=-3",  # noqa: E501 - verbatim data
        "[W1126 08:26:37.480 socket.cpp:764] [c10d] The IPv6 network addresses of (8b809586eb2a, 35081) cannot be retrieved (gai error: -3)",  # noqa: E501 - verbatim data
    ],
)
def test_advertising_and_hostname_warnings_stay_off_the_terminal(line):
    assert logtext.is_terminal_noise(line)


@pytest.mark.parametrize(
    "line",
    [  # Lightning 2.6's start-up lines, each printed by every rank
        "GPU available: False, used: False",
        "TPU available: False, using: 0 TPU cores",
        "LOCAL_RANK: 1 - CUDA_VISIBLE_DEVICES: [0,1]",
        "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2",
        "-" * 100,
        "distributed_backend=gloo",
        "All distributed processes registered. Starting with 2 processes",
        "/opt/venv/lib/python3.11/site-packages/pytorch_lightning/loops/fit_loop.py:322: The number of "
        "training batches (9) is smaller than the logging interval Trainer(log_every_n_steps=50). Set a "
        "lower value for log_every_n_steps if you want to see logs for the training epoch.",
        "/x/lightning_fabric/plugins/environments/slurm.py:204: The `srun` command is available on your "
        "system but is not used. HINT: …",
    ],
)
def test_lightnings_banners_stay_off_the_terminal(line):
    assert logtext.is_terminal_noise(line)


def test_training_lines_reach_the_terminal():
    assert not logtext.is_terminal_noise("Epoch 0: 100%|██████████| 30/30 [00:01<00:00, loss=0.5]")
    assert not logtext.is_terminal_noise("[W socket.cpp:1] [c10d] connection refused to 127.0.0.1:1234")
    assert not logtext.is_terminal_noise("step 10 ---- loss 0.5")
    assert not logtext.is_terminal_noise("`Trainer.fit` stopped: `max_steps=12` reached.")


def test_ranks_are_numbered_node_by_node():
    env = rank_env(world=6, nodes=2, node=1, local=2)
    assert (env["RANK"], env["LOCAL_RANK"], env["LOCAL_WORLD_SIZE"], env["WORLD_SIZE"]) == (
        "5",
        "2",
        "3",
        "6",
    )
    assert env["NODE_RANK"] == env["GROUP_RANK"] == "1"
    ranks = sorted(int(rank_env(8, 4, n, i)["RANK"]) for n in range(4) for i in range(2))
    assert ranks == list(range(8))
    assert rank_env(2, 1, 0, 1)["RANK"] == "1"
