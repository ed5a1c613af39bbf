"""config.parse: the composed config read once into typed, frozen parts; bad values in one line (pure)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
from omegaconf import OmegaConf

from runner.core import config, worker_io
from runner.core.config import Backend, Launch, parse_experiment
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.flows.cli_common import compose


@pytest.fixture(scope="module")
def composed() -> dict:
    return OmegaConf.to_container(compose([]), resolve=True)


def refused(cfg, match: str) -> None:
    with pytest.raises(RunnerError, match=match) as exc:
        config.parse(cfg)
    assert exc.value.exit_code == EXIT_USAGE and "\n" not in exc.value.message


def test_the_default_config_reads_into_typed_parts(composed):
    cfg = config.parse(composed)
    assert cfg.launch == Launch(
        backend=Backend.DOCKER,
        engine={"_target_": "runner.host.docker_engine.DockerEngine", "base_url": None},
        gpus=None,
        processes=2,
        shm_size="1g",
    )
    assert cfg.launch.containerized and cfg.launch.gpu_count == 0
    exp = cfg.experiment
    assert (exp.kind, exp.entry) == ("target", "experiments.mnist:train") and not exp.program
    assert cfg.image.kind == "auto" and cfg.image.kind_for(cfg.launch) == "cpu"
    assert cfg.image.variant("cuda")["dockerfile"] == "Dockerfile.cuda" and cfg.image.variant("rocm") == {}
    assert (cfg.seed, cfg.fingerprint_every, cfg.determinism.name) == (0, 10, "strict")
    assert cfg.raw == composed  # kept whole, to be recorded
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.launch.nodes = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("gpus", "parsed", "count", "kind"),
    [(0, None, 0, "cpu"), (2, 2, 2, "cuda"), ([1, 3], (1, 3), 2, "cuda"), ("all", "all", -1, "cuda")],
)
def test_gpus_read_as_none_a_count_indices_or_all(gpus, parsed, count, kind):
    launch = Launch.parse({"gpus": gpus})
    assert (launch.gpus, launch.gpu_count) == (parsed, count)
    assert config.Image.parse({}).kind_for(launch) == kind


def test_host_backend_is_not_containerized():
    launch = Launch.parse({"backend": "host"})
    assert launch.backend is Backend.HOST and not launch.containerized
    assert str(launch.backend) == "host"  # as recorded


@pytest.mark.parametrize(
    ("launch", "match"),
    [
        ({"backend": "podman-ish"}, r"launch.backend='podman-ish' must be docker or host"),
        ({"gpus": -1}, "launch.gpus=-1 must be 0, a count"),
        ({"gpus": "some"}, "launch.gpus='some'"),
        ({"processes": 0}, "launch.processes=0 must be a positive integer"),
        ({"nodes": 0}, "launch.nodes=0 must be a positive integer"),
        ({"nodes": "2"}, "launch.nodes='2' must be a positive integer"),
        ({"env_passthrough": ["OK", "NOT OK"]}, "'NOT OK' is not a variable name"),
        ({"checkpoint_every_n_steps": -3}, "checkpoint_every_n_steps=-3"),
    ],
)
def test_a_bad_launch_value_is_one_line(composed, launch, match):
    cfg = copy.deepcopy(composed)
    cfg["launch"].update(launch)
    refused(cfg, match)


def test_processes_are_not_read_when_gpus_set_the_world():
    assert Launch.parse({"gpus": 2, "processes": None}).gpus == 2


@pytest.mark.parametrize(
    ("section", "entry", "describe"),
    [
        ({"target": "pkg.mod:fn"}, ("target", "pkg.mod:fn", ()), "pkg.mod:fn"),
        ({"script": "train.py", "args": ["--n", 3]}, ("script", "train.py", ("--n", "3")), "train.py"),
        (
            {"module": "pkg.train", "launcher": "torchrun"},
            ("module", "pkg.train", ()),
            "torchrun -m pkg.train",
        ),
    ],
)
def test_an_experiment_is_a_target_a_script_or_a_module(section, entry, describe):
    exp = parse_experiment({"name": "x", **section})
    assert (exp.kind, exp.entry, exp.args) == entry and exp.describe() == describe
    assert exp.program == (entry[0] != "target")
    if exp.program:  # recorded and handed to the worker as the worker reads it
        assert exp.section["args"] == [str(a) for a in section.get("args", [])]
    # one class: what the config names is what job.json tells the worker, and reads back the same
    assert worker_io.Experiment.from_json(exp.to_json()) == exp


def test_an_old_record_of_an_experiment_still_reads_and_tells_the_worker_the_same():
    """A recorded section (replayed) gives job.json's experiment with the keys it always had."""
    exp = parse_experiment({"name": "x", "script": "train.py", "args": ["--n", 3], "nproc_per_node": None})
    assert exp.to_json() == {
        "target": None,
        "script": "train.py",
        "module": None,
        "args": ["--n", "3"],
        "launcher": "python",
        "name": "x",
    }
    assert dict(exp.section) == {
        "name": "x",
        "script": "train.py",
        "args": ["--n", "3"],
        "nproc_per_node": None,
        "launcher": "python",
    }


def test_a_launcher_is_recorded_only_when_one_was_given():
    assert "launcher" not in parse_experiment({"script": "a.py"}).section
    torchrun = parse_experiment({"script": "a.py", "nproc_per_node": 3, "launcher": "torchrun"})
    assert (torchrun.launcher, torchrun.nproc_per_node, torchrun.section["launcher"]) == (
        "torchrun",
        3,
        "torchrun",
    )


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"target": "a:b", "script": "a.py"}, "exactly one of"),
        ({}, "exactly one of"),
        ({"target": "a:b", "launcher": "torchrun"}, "not a `target`"),
        ({"script": "a.py", "launcher": "mpirun"}, "must be one of python, torchrun"),
        ({"script": "a.py", "nproc_per_node": 2}, "torchrun's"),
        ({"script": "a.py", "launcher": "torchrun", "nproc_per_node": 0}, "positive integer or null"),
    ],
)
def test_a_bad_experiment_is_one_line(composed, section, match):
    refused({**composed, "experiment": section}, match)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("seed", -1, r"seed=-1 must be an integer in \[0, 2\*\*32\)"),
        ("seed", True, "seed=True"),
        ("image", {"kind": "tpu"}, "image.kind='tpu' must be cpu, cuda or auto"),
        ("launch", "docker", "launch must be a mapping"),
        ("fingerprints", {"every_k_steps": 0}, "every_k_steps=0 must be a positive integer"),
    ],
)
def test_other_bad_values_are_one_line(composed, key, value, match):
    refused({**composed, key: value}, match)


def test_with_launch_changes_a_copy(composed):
    placed = config.with_launch(composed, cpuset_cpus="0-1", gpus=None)
    assert placed["launch"]["cpuset_cpus"] == "0-1" and composed["launch"]["cpuset_cpus"] is None
    assert config.launch_of(placed).cpuset_cpus == "0-1"
