"""A run across the nodes of a Slurm allocation (``launch.nodes`` > 1): one container per node.

The runner runs on the allocation's first node. It picks where the nodes meet
(:func:`rendezvous`: the network interface the collectives use and this node's address on it),
writes the first node's container request to the run dir (``nodes.json``), and starts one node
agent per node with ``srun`` (:class:`NodesBackend`). Each agent (:mod:`runner.flows.node`)
starts its node's container on its node's engine, streams its log, and stops and removes it on
SIGTERM or SIGUSR1 (the runner's request through srun). Where srun kills the agents instead
(``scancel``, a preemption, another node failing), each container, tied to its agent, stops and
removes itself (:func:`runner.core.cluster.node_request`). Each agent writes how its container
ended (``logs/node-K.end.json``): a node the kernel killed for memory is the run's reason, and a
rendezvous port another process took before the first node's store listened on it has the
nodes meet again on a new one.

The run dir, the code snapshot and the data must be on a file system every node sees (as a
cluster's home or scratch is). Every node runs the image by its id, never by a tag: it must be on
every node's engine under that id (a Charliecloud image cache on the shared file system, keyed by
image id, serves them all).
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core import cluster, layout
from runner.core.digests import sha256_bytes
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, EngineLost, RunnerError
from runner.core.spec import RUN_ID_LABEL
from runner.host import atomic, rundir
from runner.host.engine import Engine, Exit, Workload
from runner.host.executors import TRAIN_LOG, DockerBackend, Stop, Tee, run_process

SIOCGIFADDR = 0x8915  # Linux: an interface's IPv4 address
# Seconds srun gets, once asked to stop, for each agent to stop its container, and then the seconds
# this node's container gets to be gone: together under Slurm's default KillWait (30 s), after which
# a cancelled or preempted job is killed, so the run's record is written before that.
SRUN_GRACE = 15.0
GONE_WAIT = 10.0
MEET_TRIES = 3  # the nodes meet on a new port when another process took theirs, this many times in all


def interface_address(name: str) -> str | None:
    """The IPv4 address of network interface ``name`` on this host, or None when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def interfaces() -> dict[str, str]:
    """This host's interfaces that have an IPv4 address, with it."""
    found = {name: interface_address(name) for _, name in socket.if_nameindex()}
    return {name: addr for name, addr in found.items() if addr}


def _node_address(node: str) -> str | None:
    """The address Slurm reaches ``node`` at (its ``NodeAddr``), as an IPv4 address."""
    try:
        out = subprocess.run(
            ["scontrol", "-o", "show", "node", node], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    addr = next((f.split("=", 1)[1] for f in out.stdout.split() if f.startswith("NodeAddr=")), None)
    try:
        return socket.gethostbyname(addr) if addr else None
    except OSError:
        return None


def rendezvous(nodes: int, interface: str | None, env: Mapping[str, str] | None = None) -> cluster.Rendezvous:
    """Where the nodes meet: ``interface`` (``launch.network_interface``), else the one holding the
    address Slurm knows this node by; this node's address on it and a free port there."""
    env = os.environ if env is None else env
    have = interfaces()
    if interface is None:
        addr = _node_address(env.get("SLURMD_NODENAME", ""))
        interface = next((name for name, a in have.items() if a == addr), None)
        if interface is None:
            raise RunnerError(
                f"launch.nodes={nodes}: cannot tell which network interface reaches the other nodes "
                f"(Slurm's address for this node: {addr or 'unknown'}); set launch.network_interface "
                f"(this node has: {', '.join(sorted(have)) or 'none'})",
                EXIT_ENVIRONMENT,
            )
    if interface not in have:
        raise RunnerError(
            f"launch.network_interface={interface}: no such interface with an IPv4 address on this "
            f"node (it has: {', '.join(sorted(have)) or 'none'})",
            EXIT_USAGE,
        )
    return cluster.Rendezvous(nodes=nodes, interface=interface, address=have[interface], port=free_port())


def free_port() -> int:
    """A port no socket of this host holds now, on any address (the rendezvous store listens on
    all of them). Another process may take it before the first node's store listens on it: the
    nodes then meet again on another (:class:`NodesBackend`)."""
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Agents:
    """How a run across nodes starts its node agents: where the nodes meet, the engine each agent
    connects (a ``_target_`` node; None: the default engine), the agent's command line for the
    request file and its sha256 (:func:`runner.flows.node.agent_command`), and what is told where
    the nodes meet each time they try (for the record)."""

    meet: cluster.Rendezvous
    engine: Mapping[str, Any] | None
    command: Callable[[Path, str], list[str]]
    recorded: Callable[[cluster.Rendezvous], None] = lambda meet: None  # where the nodes meet, each try


class NodesBackend(DockerBackend):
    """The worker in one container per node, started by ``srun`` through the node agents; the image
    is resolved on this node's engine, as :class:`~runner.host.executors.DockerBackend` does."""

    def __init__(self, engine: Engine, agents: Agents):
        super().__init__(engine)
        self.agents = agents

    def run(self, work: Workload, echo: Callable[[str], None]) -> Exit:
        """The nodes meet on a port picked just before they start; where another process took it
        before the first node's store listened on it (EADDRINUSE: the nodes never met, nothing was
        trained), they meet again on a new one, up to :data:`MEET_TRIES` times, each recorded."""
        plan = work.plan
        rundir.make_writable_for(plan.run_dir, plan.user)
        meet = dataclasses.replace(self.agents.meet, port=free_port())
        for attempt in range(MEET_TRIES):
            self.agents.recorded(meet)
            ended = self._attempt(work, meet, attempt, echo)
            ends = node_ends(plan.run_dir, plan.nodes)
            if ended.interrupted or not any(e.port_taken for e in ends) or attempt + 1 == MEET_TRIES:
                break
            meet = meet.moved(free_port())
            with Tee(plan.run_dir / TRAIN_LOG, echo) as tee:
                tee(
                    f"runner: the rendezvous port {meet.address}:{meet.taken[-1]} was taken by another "
                    f"process before the nodes met (EADDRINUSE): they meet again on port {meet.port}"
                )
        lost = next((e for e in ends if e.engine_lost), None)
        if lost is not None and not ended.interrupted:
            raise EngineLost(*lost.lost_engine())
        oom = next((e for e in ends if e.oom_killed), None)
        if oom is not None and ended.exit_code != 0 and not ended.interrupted:
            code = oom.exit_code or ended.exit_code  # that node's status, not srun's
            return dataclasses.replace(ended, exit_code=code, oom_killed=True, oom_where=oom.out_of_memory())
        return ended

    def _attempt(
        self, work: Workload, meet: cluster.Rendezvous, attempt: int, echo: Callable[[str], None]
    ) -> Exit:
        """One ``srun`` of the node agents, to its end and until this node's container is gone."""
        plan = work.plan
        path, digest = self._write_request(work, meet, attempt)
        argv = cluster.srun_command(plan.nodes, plan.container_name, self.agents.command(path, digest))
        # srun kills its tasks outright on SIGTERM, but hands SIGUSR1 on: each agent then stops its container
        ended = run_process(
            argv,
            os.environ,
            Path.cwd(),
            plan.run_dir / TRAIN_LOG,
            echo,
            Stop(signal.SIGUSR1, SRUN_GRACE),
        )
        self._wait_gone(plan.run_id)
        return ended

    def _write_request(self, work: Workload, meet: cluster.Rendezvous, attempt: int = 0) -> tuple[Path, str]:
        """``nodes.json``: the first node's container request, the engine the agents connect, and
        where a node without the image pulls it (the recorded ``REPOSITORY@sha256:…``, and the id it
        must give); returns the file and its sha256. The nodes' end records of a try before (or of
        the attempt a resume continues) go first; a try after the first names its containers apart
        (``-meetN``): none clashes with a container of the try before still on its way out."""
        plan, image = work.plan, work.image
        assert image is not None, "every node's container runs the run's image"
        # every node runs the image by its id (its config's digest), never by a tag, which each
        # node's engine could hold for another image
        image_id = self.engine.image_id(image.tag)
        if image_id is None:
            raise RunnerError(f"image {image.tag} is not on this node's engine", EXIT_ENVIRONMENT)
        request = plan.container_request(image_id, work.code_dir, work.data_root, meet)
        if attempt:
            request = dataclasses.replace(request, name=f"{request.name}-meet{attempt}")
        for node in range(plan.nodes):
            (plan.run_dir / layout.LOGS_DIR / layout.NODE_END.format(node=node)).unlink(missing_ok=True)
        ref = image.record.get("registry_ref")
        doc = {
            "request": request.to_dict(),
            "engine": dict(self.agents.engine) if self.agents.engine else None,
            "pull": {"ref": ref, "id": image.record["id"]} if ref else None,
            "first_node": os.environ.get("SLURMD_NODENAME"),
            "log_dir": str(plan.run_dir / layout.LOGS_DIR),
        }
        text = json.dumps(doc, indent=2, sort_keys=True)
        path = plan.run_dir / layout.NODE_REQUEST
        atomic.write_text(path, text, mode=0o600)  # the container's environment: passed-through secrets too
        # the run dir is writable from the container: each agent checks the file is the one written here
        return path, sha256_bytes(text.encode())

    def _wait_gone(self, run_id: str, timeout: float = GONE_WAIT) -> None:
        """Until this node's container of the run is gone (a killed agent's container stops and
        removes itself: see :func:`runner.core.cluster.node_request`), so the record lands after it.
        An engine that does not answer ends the wait: the record is written either way."""
        deadline = time.monotonic() + timeout
        try:
            while self.engine.containers_labelled(RUN_ID_LABEL, run_id) and time.monotonic() < deadline:
                time.sleep(0.5)
        except Exception:  # noqa: BLE001 - any engine's error: the run has ended, its record comes first
            return


def node_ends(run_dir: Path, nodes: int) -> list[cluster.NodeEnd]:
    """How each node's container ended, as its agent wrote it (a node whose agent was killed, or
    wrote something else, is left out)."""
    ends = []
    for node in range(nodes):
        path = run_dir / layout.LOGS_DIR / layout.NODE_END.format(node=node)
        try:
            ends.append(cluster.NodeEnd.from_json(path.read_text()))
        except (OSError, ValueError):
            continue
    return ends
