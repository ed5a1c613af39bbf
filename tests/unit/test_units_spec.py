"""spec.plan_run: config → a frozen run description, validated before anything starts (pure)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.core import cluster, spec
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.flows.cli_common import compose
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def base_cfg() -> dict:
    return OmegaConf.to_container(compose([]), resolve=True)


def plan(
    cfg: dict, uid: int = 0, gid: int = 0, env: dict | None = None, detected_gpus: int = 0, **kw
) -> spec.RunPlan:
    host = spec.Host(env or {}, uid, gid, gpus=detected_gpus)
    return spec.plan_run(cfg, Path("/tmp/core-x/run"), ROOT, host, **kw)


def with_(base: dict, **sections) -> dict:
    cfg = copy.deepcopy(base)
    for dotted, value in sections.items():
        *parents, leaf = dotted.split("__")
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def refused(cfg: dict, match: str, **kw) -> None:
    with pytest.raises(RunnerError, match=match) as info:
        plan(cfg, **kw)
    assert info.value.exit_code == EXIT_USAGE


def test_default_plan(base_cfg):
    p = plan(base_cfg)
    assert (p.backend, p.accelerator, p.world_size, p.image_kind, p.seed) == ("docker", "cpu", 2, "cpu", 0)
    assert (p.experiment.kind, p.experiment.entry) == ("target", "experiments.mnist:train")
    assert p.experiment.section["target"] == "experiments.mnist:train"  # as recorded
    assert p.env["ATEN_CPU_CAPABILITY"] == "avx2"
    req = p.container_request("runner:cpu-x", Path("/snap"), Path("/data"))
    assert ("/snap", spec.CODE, True) in req.mounts and ("/data", spec.DATA, True) in req.mounts
    assert (str(p.run_dir), spec.JOB, False) in req.mounts and req.gpus is None


def test_a_single_node_container_has_no_network(base_cfg):
    req = plan(base_cfg).container_request("runner:cpu-x", Path("/snap"), Path("/data"))
    assert req.network == "none" and req.environment["GLOO_SOCKET_IFNAME"] == "lo"
    # tied to the runner: however it dies, the container stops (its worker watches stdin)
    assert req.lifeline and req.environment["RUNNER_LIFELINE"] == "stdin"
    assert plan(base_cfg).nodes == 1 and plan(base_cfg).job_document("/j", "/c", "/d", {}).nodes == 1


@pytest.mark.parametrize(
    ("launch", "world", "per_node"), [({"processes": 1}, 2, 1), ({"processes": 3}, 6, 3)]
)
def test_processes_are_per_node_across_nodes(base_cfg, launch, world, per_node):
    p = plan(with_(base_cfg, launch__nodes=2, **{f"launch__{k}": v for k, v in launch.items()}))
    assert (p.nodes, p.world_size, p.per_node) == (2, world, per_node)
    assert p.job_document("/j", "/c", "/d", {}).nodes == 2


def test_gpus_are_per_node_across_nodes(base_cfg):
    p = plan(with_(base_cfg, launch__nodes=4, launch__gpus=2))
    assert (p.world_size, p.per_node, p.accelerator) == (8, 2, "gpu")


def test_the_first_nodes_container_is_on_the_host_network_pinned_to_the_rendezvous(base_cfg):
    meet = cluster.Rendezvous(nodes=2, interface="eth1", address="10.1.2.3", port=29400)
    p = plan(with_(base_cfg, launch__nodes=2, launch__processes=1))
    req = p.container_request("runner:cpu-x", Path("/snap"), Path("/data"), meet)
    assert req.network == "host"
    env = req.environment
    assert (env["MASTER_ADDR"], env["MASTER_PORT"]) == ("10.1.2.3", "29400")
    assert env["GLOO_SOCKET_IFNAME"] == "eth1" and env["NCCL_SOCKET_IFNAME"] == "eth1"


def test_a_multi_node_run_needs_containers_and_a_program_that_knows_its_peers(base_cfg):
    refused(with_(base_cfg, launch__nodes=2, launch__backend="host"), "needs launch.backend=docker")
    script = with_(base_cfg, launch__nodes=2)
    script["experiment"] = {"name": "s", "script": "experiments/plain_script/train.py"}
    refused(script, "under experiment.launcher=torchrun")
    refused(with_(base_cfg, launch__nodes=0), "launch.nodes=0 must be a positive integer")


@pytest.mark.parametrize("seed", [-1, 2**32, "abc", True, 1.5, None])
def test_bad_seed_is_refused(base_cfg, seed):
    refused(with_(base_cfg, seed=seed), "seed")


def test_seed_bounds_are_inclusive_of_zero_and_2_32_minus_1(base_cfg):
    assert plan(with_(base_cfg, seed=2**32 - 1)).seed == 2**32 - 1


def test_experiment_names_exactly_one_of_target_and_script(base_cfg):
    both = with_(base_cfg, experiment__script="experiments/plain_script/train.py")
    refused(both, "exactly one")
    refused(with_(base_cfg, experiment__target=None), "exactly one")
    refused(with_(base_cfg, experiment__target="experiments.nope:train"), "no module experiments.nope")
    script = with_(base_cfg, experiment__target=None, experiment__script="nope.py")
    refused(script, "nope.py")
    ok = with_(
        base_cfg,
        experiment__target=None,
        experiment__script="experiments/plain_script/train.py",
        experiment__args=["--steps", 3],
    )
    assert (plan(ok).experiment.entry, plan(ok).experiment.args) == (
        "experiments/plain_script/train.py",
        ("--steps", "3"),
    )
    assert plan(ok).experiment.section["args"] == ["--steps", "3"]  # as recorded and handed to the worker


def test_unknown_backend_is_refused(base_cfg):
    refused(with_(base_cfg, launch__backend="k8s"), "docker or host")
    assert plan(with_(base_cfg, launch__backend="host")).backend == "host"


@pytest.mark.parametrize(
    "gpus, world, kind",
    [
        (0, 2, "cpu"),
        (None, 2, "cpu"),
        (2, 2, "cuda"),
        ([0, 3], 2, "cuda"),
        ([5], 1, "cuda"),
        ("all", 4, "cuda"),
    ],
)
def test_gpus_parsing(base_cfg, gpus, world, kind):
    p = plan(with_(base_cfg, launch__gpus=gpus), detected_gpus=4)
    assert (p.world_size, p.image_kind) == (world, kind)
    assert p.accelerator == ("gpu" if kind == "cuda" else "cpu")


@pytest.mark.parametrize("gpus", [-1, "two", 1.5])
def test_bad_gpus_are_refused(base_cfg, gpus):
    refused(with_(base_cfg, launch__gpus=gpus), "launch.gpus")


def test_bad_process_count_is_refused(base_cfg):
    refused(with_(base_cfg, launch__processes=0), "launch.processes")


@pytest.mark.parametrize("user", ["0:0", "root", "0"])
def test_root_in_the_container_is_refused(base_cfg, user):
    refused(with_(base_cfg, launch__user=user), "must not be root")


def test_container_user_follows_the_host_user(base_cfg):
    assert plan(base_cfg, uid=0, gid=0).user == "1000:1000"
    assert plan(base_cfg, uid=1234, gid=5678).user == "1234:5678"
    assert plan(with_(base_cfg, launch__user="2000:2000"), uid=0).user == "2000:2000"


def test_only_listed_host_variables_reach_the_job(base_cfg):
    env = {"HOME": "/root", "MY_TOKEN": "s3cret", "WANDB_MODE": "offline"}
    p = plan(with_(base_cfg, launch__env_passthrough=["WANDB_MODE"]), env=env)
    assert p.env["WANDB_MODE"] == "offline" and "MY_TOKEN" not in p.env and "HOME" not in p.env
    refused(with_(base_cfg, launch__env_passthrough=["BAD-NAME"]), "not a variable name")


def test_recorded_variables_replace_the_plans_but_never_the_runners_own(base_cfg):
    p = plan(base_cfg)
    recorded = {
        "PYTHONHASHSEED": "7",
        "EXTRA": "x",
        "RUNNER_JOB": "/elsewhere",
        "PYTHONPATH": "/evil",
        "HOME": "/root",
    }
    q = p.with_recorded_env(recorded, {}, Path("/code"))
    assert q.env == {"EXTRA": "x", "PYTHONHASHSEED": "7"}
    env = q.container_env()
    assert env["RUNNER_JOB"] == "/job/job.json" and env["PYTHONPATH"] == "/code" and env["HOME"] == "/tmp"
