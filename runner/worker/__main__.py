"""The in-container entry point: ``python -m runner.worker`` with ``RUNNER_JOB=<run dir>/job.json``.

It runs the same way in a container and on the host (``launch.backend=host``): the environment
(determinism variables included) is already fixed by whoever started it, before torch is
imported. Then:

* a ``target`` experiment with world size 1 runs in this process;
* with world size N > 1 this process becomes a small launcher: N copies of itself with
  ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_*`` set (Lightning sees an externally
  launched DDP job), forwarding SIGTERM/SIGINT and failing fast when one rank dies; on node K
  of a multi-node run (``NODE_RANK``, set by the runner's node agent) it starts that node's
  share of the ranks, and only the first node audits;
* a ``script`` or ``module`` experiment is run as a plain program with its arguments, in the
  run's ``outputs/`` (it may start its own processes, e.g. ``torch.multiprocessing.spawn``), or
  under torchrun (``launcher: torchrun``), which sets ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``.

Rank 0 (or the launcher, for scripts) writes ``result.json``: metrics, library and device facts,
the determinism flags in force, installed packages. Standard library only at module level.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from runner.core import cluster, layout
from runner.core.errors import shell_status
from runner.worker import audit_gate, facts
from runner.worker.context import RunContext

# Seconds children get after SIGTERM before SIGKILL. DDP ranks get little: Lightning's own SIGTERM
# handler broadcasts to the peers from inside the handler, which can wait forever for a peer that is
# already gone, and a resume needs nothing but the last periodic checkpoint. A script gets longer to
# save what it wants (still under `docker stop`'s 10 s).
RANK_GRACE = 1.0
SCRIPT_GRACE = 8.0
_grace = RANK_GRACE

_children: list[subprocess.Popen] = []
_stopping = 0  # the signal that asked this process to stop, 0 while none did
_kill_at: float | None = None  # when children still alive get SIGKILL


def _on_signal(signum, _frame) -> None:
    global _stopping
    _stopping = _stopping or signum
    if _children:
        _stop_children(signum)
    else:
        raise KeyboardInterrupt  # in-process training: let Lightning shut down, then exit below


def _stop_children(signum: int) -> None:
    """Forward ``signum`` to every live child and arm the SIGKILL that follows the grace period."""
    global _kill_at
    for child in _children:
        if child.poll() is None:
            child.send_signal(signum)
    if _kill_at is None:
        _kill_at = time.monotonic() + _grace


def _supervise() -> int:
    """Wait for all children. When one fails the others are stopped (they would hang in a
    collective); stragglers past the grace period are killed. Returns a shell-style status."""
    code = 0
    while any(c.poll() is None for c in _children):
        failed = [c for c in _children if c.poll() not in (None, 0)]
        if failed and not code and not _stopping:
            code = shell_status(failed[0].returncode)
            _stop_children(signal.SIGTERM)
        if _kill_at is not None and time.monotonic() > _kill_at:
            for c in _children:
                if c.poll() is None:
                    c.kill()
        time.sleep(0.1)
    if _stopping:
        return 128 + _stopping
    return code or next((shell_status(c.returncode) for c in _children if c.returncode != 0), 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_result(
    ctx: RunContext,
    metrics: dict,
    started: float,
    flags: dict,
    known: dict | None = None,
    ended: float | None = None,
) -> None:
    """``result.json``: the run's metrics and the facts of the process that trained (``known``:
    the process and package facts, when already collected).

    The host reads it only after this process has ended, and treats a torn or missing file as no
    result (the run's manifest is written either way), so a plain write is enough here."""
    payload = {
        "metrics": metrics,
        "train_seconds": (ended or time.time()) - started,
        "flags": flags,
        **(known or {"process": facts.process(), "packages": facts.packages()}),
    }
    (ctx.run_dir / layout.RESULT).write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def _load_target(spec: str):
    module_name, _, func = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, func or "main")
    except (ImportError, AttributeError) as exc:
        print(f"runner.worker: cannot load experiment target {spec!r}: {exc}", file=sys.stderr)
        sys.exit(2)


def run_rank(ctx: RunContext) -> int:
    from omegaconf import OmegaConf

    from runner.worker import determinism

    determinism.apply(ctx.determinism, ctx.seed, ctx.precision)
    train = _load_target(ctx.job["experiment"]["target"])
    cfg = OmegaConf.create(ctx.job["config"])
    started = time.time()
    metrics = train(cfg, ctx.run_dir) or {}
    if ctx.is_main:  # read back after training: Lightning's precision is known only once it has started
        _write_result(ctx, {k: _plain(v) for k, v in metrics.items()}, started, determinism.flags_in_force())
    _close_process_group()
    return 0


def _close_process_group() -> None:
    """Tear DDP's process group down once every rank is done with it."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _exit_now(code: int) -> None:
    """End a training process without interpreter finalisation. Measured here with torch
    2.13's gloo: 2-process runs aborted at exit ("terminate called without an active exception",
    a C++ thread destroyed while joinable) in 6 of 20 repeats after their work was done and
    written, and still in 2-3 of 20 with a barrier and destroy_process_group first; with the
    record flushed and os._exit, 0 of 30."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _plain(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return v


def rank_env(world: int, nodes: int, node: int, local: int) -> dict[str, str]:
    """The DDP variables of local process ``local`` on node ``node``: ranks are numbered node by
    node, ``world // nodes`` on each."""
    per_node = world // nodes
    return {
        "WORLD_SIZE": str(world),
        "NODE_RANK": str(node),
        "GROUP_RANK": str(node),
        "LOCAL_WORLD_SIZE": str(per_node),
        "RANK": str(node * per_node + local),
        "LOCAL_RANK": str(local),
    }


def launch_ranks(ctx: RunContext) -> int:
    """Start this node's training processes: all of them on one node, or, on node ``NODE_RANK``
    of a multi-node run, its share, meeting the other nodes at ``MASTER_ADDR:MASTER_PORT``."""
    world, nodes, node = ctx.world_size, ctx.nodes, ctx.node_rank
    meet = (
        {"MASTER_ADDR": os.environ["MASTER_ADDR"], "MASTER_PORT": os.environ["MASTER_PORT"]}
        if nodes > 1
        else {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}
    )
    for local in range(world // nodes):
        env = {**os.environ, **meet, **rank_env(world, nodes, node, local)}
        _children.append(subprocess.Popen([sys.executable, "-m", "runner.worker"], env=env))
    return _supervise()


def program_command(
    exp: dict, code_dir: Path, world: int, port: int, nodes: int = 1, node: int = 0
) -> list[str]:
    """How a script or module starts: ``python script.py args``, ``python -m module args``, or
    either under torchrun with ``world`` processes, rendezvous (c10d) on loopback only: a
    container has no network, and its host name resolves to nothing (``--local-addr``, else the
    rendezvous store is looked for under that name and the run hangs until c10d's timeout).
    Across ``nodes`` nodes, torchrun starts this node's share and meets the others at
    ``MASTER_ADDR:MASTER_PORT`` (the first node's, set by the runner)."""
    what = ["-m", str(exp["module"])] if exp.get("module") else [str(code_dir / exp["script"])]
    args = [str(a) for a in exp.get("args") or []]
    if exp.get("launcher") != "torchrun":
        return [sys.executable, *what, *args]
    if nodes > 1:
        meet = [
            f"--nnodes={nodes}",
            f"--node-rank={node}",
            f"--master-addr={os.environ['MASTER_ADDR']}",
            f"--master-port={os.environ['MASTER_PORT']}",
        ]
    else:
        meet = [
            "--nnodes=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}",
            "--local-addr=127.0.0.1",
        ]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        *meet,
        f"--nproc-per-node={world // nodes}",
        "--max-restarts=0",
        *what,
        *args,
    ]


def run_script(ctx: RunContext) -> int:
    """Run the experiment's program unmodified. Its working directory is the run's ``outputs/``
    (what it writes there, relative paths included, is hashed as outputs); the code snapshot
    stays read-only and importable through ``PYTHONPATH``."""
    global _grace
    _grace = SCRIPT_GRACE
    exp = ctx.job["experiment"]
    env = dict(
        os.environ,
        RUNNER_RUN_DIR=str(ctx.run_dir),
        RUNNER_OUTPUT_DIR=str(ctx.output_dir),
        RUNNER_DATA_DIR=str(ctx.data_dir),
        RUNNER_SEED=str(ctx.seed),
        RUNNER_WORLD_SIZE=str(ctx.world_size),
    )
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([str(ctx.code_dir), *(p for p in paths if p != str(ctx.code_dir))])
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    command = program_command(exp, ctx.code_dir, ctx.world_size, _free_port(), ctx.nodes, ctx.node_rank)
    child = subprocess.Popen(command, env=env, cwd=str(ctx.output_dir))
    _children.append(child)
    collected: dict = {}
    collector = threading.Thread(target=_collect_facts, args=(collected,), daemon=True)
    collector.start()  # importing torch here, while the program runs, costs the run no time
    code = _supervise()
    ended = time.time()
    if code == 0 and ctx.node_rank == 0:  # the first node reports for the run
        metrics_file = ctx.output_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        collector.join()
        _write_result(ctx, metrics, started, collected.pop("flags", {}), collected or None, ended)
    return code


def _run_child(argv: list[str], env: dict) -> int:
    """Run one child process to its end under the worker's supervision (signals forwarded)."""
    child = subprocess.Popen(argv, env=env)
    _children.append(child)
    try:
        return _supervise()
    finally:
        _children.remove(child)


def _collect_facts(into: dict) -> None:
    """The flags, libraries and devices a program's processes start with (torch's defaults under
    this environment), and the installed packages."""
    from runner.worker import determinism

    into.update(flags=determinism.flags_in_force(), process=facts.process(), packages=facts.packages())


def _watch_lifeline() -> None:
    """Stop (as on SIGTERM) once standard input closes: the container of a multi-node run is tied
    to its node agent, and the engine closes its stdin when that agent is gone, however it went."""
    while os.read(0, 65536):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    if os.environ.get(cluster.LIFELINE_ENV) == "stdin" and "RANK" not in os.environ:
        threading.Thread(target=_watch_lifeline, daemon=True).start()
    ctx = RunContext.current()
    sys.path.insert(0, str(ctx.code_dir))
    try:
        wanted = "off" if ctx.auditing or "RANK" in os.environ else audit_gate.wanted(ctx.job)
        if wanted == "only" and ctx.node_rank > 0:  # the first node audits alone; nothing trains
            return 0
        if wanted != "off" and ctx.node_rank == 0:
            code = audit_gate.run_before(ctx.job, ctx.run_dir, _run_child)
            if code or wanted == "only":
                return code
        if ctx.job["experiment"].get("script") or ctx.job["experiment"].get("module"):
            return run_script(ctx)
        if ctx.world_size > 1 and "RANK" not in os.environ:
            return launch_ranks(ctx)
        return run_rank(ctx)
    except KeyboardInterrupt:
        return 128 + (_stopping or signal.SIGINT)


if __name__ == "__main__":
    _exit_now(main())
