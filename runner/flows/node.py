"""One node's share of a multi-node run: ``python -m runner.flows.node RUN_DIR/nodes.json SHA256``.

``srun`` starts this agent once on every node of the allocation (:mod:`runner.host.nodes`). It
makes its node's container from the first node's request (named for the node, told its node
rank, pinned to this node's cores, GPUs and memory in the allocation), starts it on this node's
engine, and streams its log to its standard output (``srun`` carries it to the run's
``logs/train.log``) and to ``logs/node-K.log``. SIGTERM (or SIGUSR1, which srun passes on) stops
and removes the container. The agent's exit status is the container's; how it ended (killed by the
kernel for memory, under which limit; on the first node, the rendezvous port taken by another
process) goes to ``logs/node-K.end.json`` for the runner.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core import cluster, layout
from runner.core.digests import sha256_bytes
from runner.core.engine_types import ContainerRequest
from runner.core.errors import EXIT_ENGINE_LOST, EXIT_ENVIRONMENT, EXIT_USAGE, EngineLost, RunnerError

if TYPE_CHECKING:
    from runner.host.engine import Engine


def agent_command(doc_path: Path, sha256: str) -> list[str]:
    """The command ``srun`` runs on every node: this agent, told the request file and its sha256."""
    return [sys.executable, "-m", __name__, str(doc_path), sha256]


def start(doc_path: Path, sha256: str) -> int:
    """Run this node's container to its end; its shell-style exit status."""
    from runner.host import engine as engines
    from runner.host import slurm

    try:
        text = doc_path.read_bytes()
        if sha256_bytes(text) != sha256:
            raise RunnerError(f"node agent: {doc_path} is not the file the runner wrote", EXIT_USAGE)
        doc = json.loads(text)
        base = ContainerRequest.from_dict(doc["request"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RunnerError(f"node agent: cannot read {doc_path}: {exc}", EXIT_USAGE) from None
    node = int(os.environ.get("SLURM_NODEID", "0"))
    here = os.environ.get("SLURMD_NODENAME")
    if node == 0 and doc.get("first_node") and here != doc["first_node"]:
        raise RunnerError(
            f"node agent: node 0 of the step is {here}, but the rendezvous is on {doc['first_node']} "
            "(where the runner runs): start the runner on the allocation's first node",
            EXIT_ENVIRONMENT,
        )
    _, place = slurm.current()
    request = cluster.node_request(base, node, place)
    engine = engines.connect(doc.get("engine"))
    request = dataclasses.replace(request, image=image_here(engine, request.image, doc.get("pull"), here))
    where = place.describe() if place else "no allocation"
    return run_container(engine, request, node, here, Path(doc["log_dir"]), where)


def run_container(
    engine: Engine, request: ContainerRequest, node: int, here: str | None, log_dir: Path, where: str
) -> int:
    """This node's container to its end, its log streamed; how it ended written for the runner
    (``logs/node-K.end.json``); its shell-style exit status."""
    from runner.host import atomic
    from runner.host.executors import DockerBackend, Tee

    port = int(request.environment.get("MASTER_PORT", 0))
    taken: list[str] = []  # the first node's store could not listen on the rendezvous port

    def echo(line: str) -> None:
        if node == 0 and cluster.port_taken(line, port):
            taken.append(line)
        print(line, flush=True)

    with Tee(log_dir / layout.NODE_LOG.format(node=node), echo) as tee:
        tee(f"runner: node {node} ({here}): container {request.name}, {where}, image {request.image}")
        try:
            ended = DockerBackend(engine).run_request(request, tee)
        except EngineLost as lost:  # told to the runner, which ends the run as engine lost in one line
            tee(f"runner: node {node}: {lost.message}")
            gone = cluster.NodeEnd(node, here, EXIT_ENGINE_LOST, engine_lost=(lost.engine, lost.why))
            atomic.write_text(log_dir / layout.NODE_END.format(node=node), gone.to_json())
            return EXIT_ENGINE_LOST
        code = ended.exit_code if ended.exit_code >= 0 else EXIT_ENVIRONMENT  # -1: the engine did not say
        mem = None if request.mem_limit is None else str(request.mem_limit)
        end = cluster.NodeEnd(node, here, code, ended.oom_killed, mem, port_taken=bool(taken))
        if end.oom_killed:
            tee(f"runner: node {node}: killed: out of memory ({end.out_of_memory()})")
        atomic.write_text(log_dir / layout.NODE_END.format(node=node), end.to_json())
        return code


def image_here(engine: Engine, image: str, pull: Mapping[str, Any] | None, here: str | None) -> str:
    """The run's image on this node's engine: as the request names it, else pulled by the digest the
    run recorded (``pull``: its ``ref`` and image ``id``) and run by that id, as a pull by digest
    leaves no tag. An image that is not the run's is refused; no image at all is one line."""
    if engine.image_id(image) is not None:
        return image
    ref, want = (pull or {}).get("ref"), (pull or {}).get("id")
    got = engine.pull(ref) if ref else None
    if got is not None and got == want:
        return got
    if got is not None:
        raise RunnerError(
            f"node agent: {ref} is image {got} on {here}, not the run's {want}: refused", EXIT_ENVIRONMENT
        )
    tried = f", and {ref} could not be pulled" if ref else ""
    raise RunnerError(
        f"node agent: image {image} is not on {here}'s engine{tried}: every node needs the run's image "
        "(image.registry=HOST:PORT/REPOSITORY pushes it where the nodes pull it by digest)",
        EXIT_ENVIRONMENT,
    )


def main(argv: list[str]) -> int:
    from runner.host.interrupts import sigterm_as_interrupt

    sigterm_as_interrupt()
    # the runner asks through srun with SIGUSR1 (srun kills its tasks on SIGTERM): taken as SIGTERM,
    # which cleanup defers; SIGUSR2 (the time limit near, sent to every step) is the runner's to act on
    signal.signal(signal.SIGUSR1, lambda *_: os.kill(os.getpid(), signal.SIGTERM))
    signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    if len(argv) != 2:
        print("usage: python -m runner.flows.node RUN_DIR/nodes.json SHA256", file=sys.stderr)
        return EXIT_USAGE
    try:
        return start(Path(argv[0]), argv[1])
    except RunnerError as exc:
        print(f"runner: error: {exc.message}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
