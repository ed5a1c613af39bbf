"""A run on a Slurm cluster: what its allocation is, and what a job asks for. Pure.

Slurm tells a job where it runs through environment variables (``SLURM_JOB_ID``,
``SLURM_JOB_NODELIST``, …) and, for the cores on each node, through ``scontrol show job -d``.
This module turns those into

* the manifest's ``cluster`` record (:func:`record`): job id, the user it ran as, array index,
  node list, partition, the cores and GPUs the job was given — a replay elsewhere does not need it,
  it says where the bits were made;
* the job's :class:`~runner.core.slots.Slot` (:func:`slot`): the container is pinned to the
  allocation's cores and handed the allocation's GPUs, exactly as a local sweep slot is, so
  :func:`runner.core.slots.unplaced` undoes it for a replay or a skip-completed check;
* what an ``sbatch`` for a job must ask for (:func:`request`);
* a run across nodes (``launch.nodes``): where its nodes meet (:class:`Rendezvous`), the
  ``srun`` that starts one node agent per node (:func:`srun_command`), each node's container
  (:func:`node_request`), and the same run folded into one container for a replay (:func:`folded`).

Reading the environment and calling ``scontrol`` is :mod:`runner.host.slurm`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NotRequired, TypedDict

from runner.core import slots
from runner.core.config import launch_of, section, with_launch
from runner.core.engine_types import ContainerRequest
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.json_types import Json

if TYPE_CHECKING:  # the worker reads this module inside the image, where pydantic is not
    from runner.core.manifest import ClusterRecord, RendezvousRecord

# states of a job that is still, or again, on its way (a requeued job passes through several)
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "SUSPENDED",
        "RESV_DEL_HOLD",
    }
)


def in_job(env: Mapping[str, str]) -> bool:
    return bool(env.get("SLURM_JOB_ID"))


def _int(value: str | None) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def gpu_ids(env: Mapping[str, str]) -> list[int]:
    """The GPUs Slurm gave this job on this node (``SLURM_JOB_GPUS`` / ``SLURM_STEP_GPUS``: the
    node's own indices, which Docker's device requests name), or none."""
    raw = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS") or ""
    return [int(g) for g in raw.split(",") if g.strip().isdigit()]


def record(env: Mapping[str, str], cpu_ids: Sequence[int] | None) -> ClusterRecord | None:
    """The manifest's ``cluster`` record for a run inside a Slurm job; None outside one."""
    if not in_job(env):
        return None
    return {
        "scheduler": "slurm",
        "cluster": env.get("SLURM_CLUSTER_NAME"),
        "job_id": env.get("SLURM_JOB_ID"),
        "user": env.get("SLURM_JOB_USER"),  # whom Slurm ran the job as
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": _int(env.get("SLURM_ARRAY_TASK_ID")),
        "restart_count": _int(env.get("SLURM_RESTART_COUNT")) or 0,
        "partition": env.get("SLURM_JOB_PARTITION"),
        "nodelist": env.get("SLURM_JOB_NODELIST"),
        "node": env.get("SLURMD_NODENAME"),
        "num_nodes": _int(env.get("SLURM_JOB_NUM_NODES")),
        "allocation": {
            "cpus_on_node": _int(env.get("SLURM_CPUS_ON_NODE")),
            "cpu_ids": list(cpu_ids) if cpu_ids is not None else None,
            "gpus": gpu_ids(env),
            "mem_per_cpu_mb": _int(env.get("SLURM_MEM_PER_CPU")),
            "mem_per_node_mb": _int(env.get("SLURM_MEM_PER_NODE")),
        },
    }


def slot(env: Mapping[str, str], affinity: Sequence[int], cpu_ids: Sequence[int] | None) -> slots.Slot:
    """The cores and GPUs of this job's allocation on this node, as a slot.

    A cluster whose task plugin binds jobs (task/affinity, task/cgroup) already narrows this
    process's CPU affinity to the allocation: that is used as it is. Where Slurm does not bind
    (task/none) the affinity is the whole node; the allocation's cores are then the ``CPU_IDs``
    ``scontrol`` reports, and failing those, the first ``SLURM_CPUS_ON_NODE`` cores.
    """
    affinity = sorted(set(affinity))
    count = _int(env.get("SLURM_CPUS_ON_NODE")) or len(affinity)
    if len(affinity) <= count:
        cpus = affinity
    elif cpu_ids:
        cpus = sorted(set(cpu_ids))
    else:
        cpus = affinity[:count]
    return slots.Slot(
        index=_int(env.get("SLURM_NODEID")) or 0,
        cpus=tuple(cpus),
        gpus=tuple(gpu_ids(env)),
        mem_mb=memory_mb(env, len(cpus)),
    )


def memory_mb(env: Mapping[str, str], cpus: int) -> int | None:
    """The memory this job holds on this node in MB (``--mem``, or ``--mem-per-cpu`` × its cores);
    None when Slurm does not track memory (``--mem=0`` asks for the whole node: not a limit)."""
    per_node = _int(env.get("SLURM_MEM_PER_NODE"))
    if per_node:
        return per_node
    per_cpu = _int(env.get("SLURM_MEM_PER_CPU"))
    return per_cpu * max(cpus, 1) if per_cpu else None


class SlurmAsk(TypedDict):
    """What each job of a sweep asks Slurm for (:func:`request`)."""

    cpus_per_task: int
    nodes: int
    gpus_per_node: NotRequired[int]  # absent: no GPU


def request(
    task_cfgs: Sequence[Mapping[str, Any]], cpus_per_task: int | None, gpus_per_node: int | None
) -> SlurmAsk:
    """What each job of a sweep asks Slurm for: the most demanding job's nodes, cores per node
    (processes × threads) and GPUs per node, unless the launcher's settings name them."""
    needs = [n for n in map(slots.job_needs, task_cfgs) if n is not None]  # a bad job fails alone
    cores = cpus_per_task or max((n.cores for n in needs), default=1)
    gpus = gpus_per_node if gpus_per_node is not None else max((max(n.gpus, 0) for n in needs), default=0)
    nodes = max((n.nodes for n in needs), default=1)
    out: SlurmAsk = {"cpus_per_task": int(cores), "nodes": nodes}
    if gpus:
        out["gpus_per_node"] = int(gpus)
    return out


# -- a run across nodes -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rendezvous:
    """Where the nodes of a multi-node run meet: the first node's address on the network interface
    the collectives use (gloo's and NCCL's socket interface is pinned to it on every node), and a
    port there for torch.distributed's store."""

    nodes: int
    interface: str
    address: str
    port: int
    taken: tuple[int, ...] = ()  # ports found taken by another process when the nodes met, in order

    def environment(self) -> dict[str, str]:
        return {
            "MASTER_ADDR": self.address,
            "MASTER_PORT": str(self.port),
            "GLOO_SOCKET_IFNAME": self.interface,
            "NCCL_SOCKET_IFNAME": self.interface,
        }

    def record(self) -> RendezvousRecord:
        """The manifest's ``cluster.rendezvous``: how the nodes reached each other."""
        return {
            "nodes": self.nodes,
            "network": "host",
            "interface": self.interface,
            "address": self.address,
            "port": self.port,
            "taken": list(self.taken),  # each retried on a new port
        }

    def moved(self, port: int) -> Rendezvous:
        """The nodes meet again on ``port``: the one they tried is noted as taken."""
        return dataclasses.replace(self, port=port, taken=(*self.taken, self.port))


# torch's TCPStore failing to listen on the rendezvous port: "… port: 29500, useIpv6: false, code:
# -98, name: EADDRINUSE, …" (torch >= 2.2), "… [::]:29500 (errno: 98 - Address already in use)" before
_PORT_TAKEN = (
    re.compile(r"\bport: (\d+)\b.*\bEADDRINUSE\b"),
    re.compile(r":(\d+) \(errno: 98 - Address already in use\)"),
)


def port_taken(line: str, port: int) -> bool:
    """Whether a line of the first node's log says the rendezvous store could not listen on
    ``port`` because another process holds it: the nodes never met, nothing was trained."""
    return any(m is not None and int(m.group(1)) == port for m in (p.search(line) for p in _PORT_TAKEN))


@dataclass(frozen=True)
class NodeEnd:
    """How one node's container ended, as its node agent tells the runner (``logs/node-K.end.json``,
    :data:`runner.core.layout.NODE_END`): its exit status, whether the kernel killed it for memory
    and under which limit, (the first node) whether the rendezvous port was taken, and whether its
    engine went away (``engine_lost``: which engine, and how it showed)."""

    node: int
    host: str | None
    exit_code: int
    oom_killed: bool = False
    mem_limit: str | None = None
    port_taken: bool = False
    engine_lost: tuple[str, str] | None = None

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> NodeEnd:
        """ValueError for anything but a node end record."""
        try:
            data = json.loads(text)
            return cls(
                node=int(data["node"]),
                host=None if data.get("host") is None else str(data["host"]),
                exit_code=int(data["exit_code"]),
                oom_killed=data.get("oom_killed") is True,
                mem_limit=None if data.get("mem_limit") is None else str(data["mem_limit"]),
                port_taken=data.get("port_taken") is True,
                engine_lost=_engine_lost(data.get("engine_lost")),
            )
        except (TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a node end record: {exc}") from None

    def lost_engine(self) -> tuple[str, str]:
        """The engine that went away, named for the run's line (which node's, where), and how."""
        engine, why = self.engine_lost or ("an engine", "it stopped answering")
        where = f" on {self.host}" if self.host else ""
        return f"{engine} of node {self.node}{where}", why

    def out_of_memory(self) -> str:
        """One line: which node's container the kernel killed for memory, where, under which limit."""
        where = f" on {self.host}" if self.host else ""
        limit = f"memory limit {self.mem_limit}" if self.mem_limit else "no memory limit set"
        return f"the kernel killed node {self.node}'s container{where}, {limit}"


def _engine_lost(value: object) -> tuple[str, str] | None:
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 2 and all(isinstance(x, str) for x in value):
        return value[0], value[1]
    raise TypeError(f"engine_lost is {value!r}, not [engine, why]")


LIFELINE_ENV = "RUNNER_LIFELINE"  # "stdin": the worker stops when its standard input closes


def allocation_problem(nodes: int, env: Mapping[str, str]) -> str | None:
    """Why a run over ``nodes`` nodes cannot start here (None: it can): it needs a Slurm allocation
    of at least that many nodes, and the runner on its first node, where the nodes meet."""
    have = _int(env.get("SLURM_JOB_NUM_NODES")) if in_job(env) else None
    if have is None:
        return (
            f"launch.nodes={nodes} runs one container per node of a Slurm allocation: start it inside "
            f"one (sbatch -N {nodes}) or sweep it with hydra/launcher=slurm"
        )
    if have < nodes:
        return f"launch.nodes={nodes}, but this Slurm job has {have} node{'s' if have != 1 else ''}"
    if not env.get("SLURMD_NODENAME"):  # salloc's shell runs where it was typed, outside the allocation
        return (
            f"launch.nodes={nodes}: the runner must run on the allocation's first node, where the nodes "
            f"meet (in an sbatch script, or `srun -N 1 python -m runner …` inside salloc)"
        )
    return None


def check_allocation(nodes: int, env: Mapping[str, str]) -> None:
    """Refuse, in one line, a run over ``nodes`` nodes that cannot start here."""
    problem = allocation_problem(nodes, env)
    if problem:
        raise RunnerError(problem, EXIT_USAGE)


def srun_command(nodes: int, job_name: str, agent: Sequence[str]) -> list[str]:
    """``srun`` for one node agent per node. ``--overlap`` and ``--mem=0`` let the step share the
    allocation with the step the runner itself runs in (a sweep's job); ``--kill-on-bad-exit``
    ends the step when one node fails (srun kills the agents: their containers end with them)."""
    return [
        "srun",
        f"--nodes={nodes}",
        f"--ntasks={nodes}",
        "--ntasks-per-node=1",
        "--overlap",
        "--mem=0",
        "--kill-on-bad-exit=1",
        "--cpu-bind=none",  # each agent places its container on its node's share itself
        "--unbuffered",
        f"--job-name={job_name}",
        *agent,
    ]


def node_request(base: ContainerRequest, node: int, place: slots.Slot | None) -> ContainerRequest:
    """Node ``node``'s container of a multi-node run: the first node's request, named for the
    node, told its rank among the nodes, and placed on this node's share of the allocation.

    It is tied to its node agent (a lifeline): ``srun`` answers SIGTERM (``scancel``, a
    preemption) by killing the agents outright, and a container an engine runs outlives a killed
    agent unless it ends and removes itself."""
    env = {**base.environment, "NODE_RANK": str(node), "GROUP_RANK": str(node), LIFELINE_ENV: "stdin"}
    cpuset, gpus, mem_limit = base.cpuset_cpus, base.gpus, base.mem_limit
    if place is not None:
        cpuset = place.cpuset or base.cpuset_cpus
        if place.gpus and base.gpus is not None:
            gpus = list(place.gpus)
        if place.mem_mb and base.mem_limit is None:
            mem_limit = f"{place.mem_mb}m"
    return dataclasses.replace(
        base,
        name=f"{base.name}-node{node}",
        environment=env,
        lifeline=True,
        cpuset_cpus=cpuset,
        gpus=gpus,
        mem_limit=mem_limit,
    )


def folded(config: Mapping[str, Any]) -> tuple[dict[str, Json], int]:
    """A multi-node run's config as one container with the same world size (its replay on one
    machine): ``nodes`` × per-node processes or GPUs on one node. Returns it with the node count
    it had (1: nothing to fold)."""
    launch = launch_of(config)
    nodes = launch.nodes
    if nodes == 1:
        return dict(config), 1
    if launch.gpu_count < 0:
        raise RunnerError(
            "a multi-node run with launch.gpus=all cannot be folded onto one machine", EXIT_USAGE
        )
    if launch.gpu_count:
        return with_launch(config, gpus=launch.gpu_count * nodes, nodes=1), nodes
    cfg = with_launch(config, processes=launch.processes * nodes, nodes=1)
    exp = dict(section(config, "experiment"))
    if exp.get("nproc_per_node"):  # torchrun's own count sets a CPU run's processes per node
        exp["nproc_per_node"] = int(exp["nproc_per_node"]) * nodes
        cfg["experiment"] = exp
    return cfg, nodes
