"""Where the worker runs is chosen in one place (``runner.host.backends.choose``) and spoken to
through one protocol (``runner.host.engine.Executor``): a container of any Engine, a container per
node, or a process of this Python. Driven by an in-memory engine (this project's own protocol)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.core import cluster, spec
from runner.core.config import Backend
from runner.core.run_input import ResolvedImage
from runner.flows.cli_common import compose, resolved
from runner.host import backends
from runner.host.engine import Executor, Workload
from runner.host.executors import DockerBackend, HostBackend, Tee
from runner.host.nodes import Agents, NodesBackend
from tests.conftest import ROOT
from tests.memory_engine import MemoryEngine


def _plan(tmp_path: Path, *overrides: str) -> spec.RunPlan:
    cfg = resolved(compose(["launch.processes=1", *overrides]))
    return spec.plan_run(cfg, tmp_path / "run", ROOT, spec.Host({}, 1000, 1000))


def test_each_backend_gets_its_executor_and_each_is_an_executor(tmp_path):
    engine = MemoryEngine()
    host = backends.choose(_plan(tmp_path, "launch.backend=host"), engine)
    docker = backends.choose(_plan(tmp_path), engine)
    meet = cluster.Rendezvous(nodes=2, interface="lo", address="127.0.0.1", port=29500)
    nodes = backends.choose(_plan(tmp_path, "launch.nodes=2"), engine, Agents(meet, None, lambda p, d: []))
    assert (type(host), type(docker), type(nodes)) == (HostBackend, DockerBackend, NodesBackend)
    assert all(isinstance(e, Executor) for e in (host, docker, nodes))
    assert host.describe() is None and docker.describe() == engine.describe()


def test_a_container_run_needs_an_engine(tmp_path):
    plan = _plan(tmp_path)
    assert plan.backend is Backend.DOCKER
    with pytest.raises(ValueError, match="needs an engine"):
        backends.choose(plan, None)


def test_the_host_backend_runs_no_image(tmp_path):
    plan = _plan(tmp_path, "launch.backend=host")
    assert backends.choose(plan, None).image(plan, ROOT, print, None) is None


def test_a_container_runs_the_plan_on_its_engine_and_leaves_nothing(tmp_path):
    engine = MemoryEngine(log=("hello from the worker",), exit_code=3)
    plan = _plan(tmp_path)
    plan.run_dir.mkdir()
    lines: list[str] = []
    ended = backends.choose(plan, engine).run(
        Workload(plan, ROOT, tmp_path, ResolvedImage({"id": "sha256:" + "1" * 64}, "runner:cpu-x")),
        lines.append,
    )
    assert (ended.exit_code, ended.interrupted, ended.log_tail) == (3, False, ["hello from the worker"])
    assert lines == ["hello from the worker"] and engine.running == {}
    assert (plan.run_dir / "logs" / "train.log").read_text() == "hello from the worker\n"


def test_tee_keeps_the_last_state_of_a_redrawn_line(tmp_path):
    shown: list[str] = []
    with Tee(tmp_path / "log", shown.append) as tee:
        tee("epoch 1: 10%\repoch 1: 100%")
    assert shown == ["epoch 1: 100%"] and (tmp_path / "log").read_text() == "epoch 1: 100%\n"
