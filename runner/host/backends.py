"""The one place an executor is chosen for a plan (:class:`runner.host.engine.Executor`): a process
of this Python, a container of an engine, or a container per node of a Slurm allocation."""

from __future__ import annotations

from runner.core.spec import RunPlan
from runner.host.engine import Engine, Executor
from runner.host.executors import DockerBackend, HostBackend
from runner.host.nodes import Agents, NodesBackend


def choose(plan: RunPlan, engine: Engine | None, agents: Agents | None = None) -> Executor:
    """The executor for ``plan``: a process of this Python (``launch.backend=host``), one container
    on ``engine``, or, given node ``agents`` (``launch.nodes`` > 1), a container per node."""
    if not plan.containerized:
        return HostBackend()
    if engine is None:
        raise ValueError(f"a {plan.backend} run needs an engine")
    if agents is not None:
        return NodesBackend(engine, agents)
    return DockerBackend(engine)
