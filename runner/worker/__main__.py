"""The in-container entry point: ``python -m runner.worker`` with ``RUNNER_JOB=<run dir>/job.json``.

It runs the same way in a container and on the host (``launch.backend=host``): the environment
(determinism variables included) is already fixed by whoever started it, before torch is
imported. Then:

* a ``target`` experiment with world size 1 runs in this process;
* with world size N > 1 this process becomes a small launcher: N copies of itself with
  ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_*`` set (Lightning sees an externally
  launched DDP job), forwarding SIGTERM/SIGINT and failing fast when one rank dies; on node K
  of a multi-node run (``NODE_RANK``, set by the runner's node agent) it starts that node's
  share of the ranks (each training process audits its own first step, when the profile asks);
* a ``script`` or ``module`` experiment is run as a plain program with its arguments, in the
  run's ``outputs/`` (it may start its own processes, e.g. ``torch.multiprocessing.spawn``), or
  under torchrun (``launcher: torchrun``), which sets ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``;
  when the profile asks for the audit, each of its Python processes is watched
  (:mod:`runner.worker.script_audit`), and an operation it refuses ends the run with status 3.

Rank 0 (or the launcher, for scripts) writes ``result.json``: metrics, library and device facts,
the determinism flags in force, installed packages. Standard library only at module level.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from runner.core import audit_rules, cluster, layout, worker_io
from runner.core.errors import EXIT_NO_SPACE, no_space, shell_status
from runner.core.worker_io import ContractError, Experiment, Json, JsonObject, WorkerResult
from runner.worker import facts, script_audit
from runner.worker.context import RunContext

# Seconds children get after SIGTERM before SIGKILL. DDP ranks get little: Lightning's own SIGTERM
# handler broadcasts to the peers from inside the handler, which can wait forever for a peer that is
# already gone, and a resume needs nothing but the last periodic checkpoint. A script gets longer to
# save what it wants (still under `docker stop`'s 10 s).
RANK_GRACE = 1.0
SCRIPT_GRACE = 8.0


class Supervisor:
    """The worker's child processes (DDP ranks, a program, the audit's process) and the signals that
    stop them: SIGTERM/SIGINT are forwarded to every live child, stragglers are killed once the grace
    period is over, and when one child fails the others are stopped (they would hang in a collective).
    With no child running, a signal interrupts in-process training (KeyboardInterrupt)."""

    def __init__(self, grace: float = RANK_GRACE) -> None:
        self.grace = grace
        self.children: list[subprocess.Popen] = []
        self.stopping = 0  # the signal that asked this process to stop, 0 while none did
        self.kill_at: float | None = None  # when children still alive get SIGKILL

    def install(self) -> None:
        """Take SIGTERM and SIGINT for this process."""
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)

    def on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = self.stopping or signum
        if self.children:
            self.stop_children(signum)
        else:
            raise KeyboardInterrupt  # in-process training: let Lightning shut down, then exit below

    def stop_children(self, signum: int) -> None:
        """Forward ``signum`` to every live child and arm the SIGKILL that follows the grace period."""
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signum)
        if self.kill_at is None:
            self.kill_at = time.monotonic() + self.grace

    def start(self, argv: list[str], env: Mapping[str, str], cwd: Path | None = None) -> subprocess.Popen:
        """Start a child under supervision."""
        child = subprocess.Popen(argv, env=env, cwd=None if cwd is None else str(cwd))
        self.children.append(child)
        return child

    def wait(self) -> int:
        """Wait for all children. When one fails the others are stopped; stragglers past the grace
        period are killed. Returns a shell-style status (128 + N when signal N stopped this process).

        The run's status is the failed child seen to end first: this process wakes as soon as a
        child ends (a pidfd each), and of children seen ended in the same look (this process was
        not scheduled in between), the likeliest cause comes first (see ``_cause_first``)."""
        code = 0
        ended: list[subprocess.Popen] = []  # in the order their ends were seen
        with _ChildExits(self.children) as exits:
            while True:
                seen = [c for c in self.children if c not in ended and c.poll() is not None]
                ended += sorted(seen, key=_cause_first)
                if len(ended) == len(self.children):
                    break
                failed = next((c for c in ended if c.returncode), None)
                if failed is not None and not code and not self.stopping:
                    code = shell_status(failed.returncode)
                    self.stop_children(signal.SIGTERM)
                if self.kill_at is not None and time.monotonic() > self.kill_at:
                    for c in self.children:
                        if c.poll() is None:
                            c.kill()
                exits.wait(0.1)
        if self.stopping:
            return 128 + self.stopping
        return code or next((shell_status(c.returncode) for c in ended if c.returncode), 0)

    def run_child(self, argv: list[str], env: Mapping[str, str]) -> int:
        """Run one child process to its end under supervision (signals forwarded)."""
        child = self.start(argv, env)
        try:
            return self.wait()
        finally:
            self.children.remove(child)

    def interrupted(self) -> int:
        """The status of a process a signal stopped (SIGINT's when none is known)."""
        return 128 + (self.stopping or signal.SIGINT)


# How a process ends when it is the cause (it crashed, or the OOM killer took it) ...
_CRASHES = (signal.SIGKILL, signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE)
# ... and how a DDP rank ends when a peer went away: an uncaught Python exception (status 1), or
# c10d's watchdog aborting it (SIGABRT)
_COLLATERAL = (1, -signal.SIGABRT)


def _cause_first(child: subprocess.Popen) -> int:
    """Order of blame among children seen ended in one look: a crash first, then any other status
    of a child's own, then what a rank whose peer went away ends with; start order within each."""
    code = child.returncode
    return 0 if -code in _CRASHES else 2 if code in _COLLATERAL else 1


class _ChildExits:
    """Sleep until a child ends (or a timeout): a pidfd per child, readable once it has ended.
    Where pidfds are refused (an old kernel, a seccomp profile without pidfd_open) it just sleeps."""

    def __init__(self, children: list[subprocess.Popen]) -> None:
        self.children = children
        self.fds: dict[int, int] = {}  # pid -> pidfd
        self.usable = True

    def __enter__(self) -> _ChildExits:
        try:
            for child in self.children:
                if child.poll() is None:
                    self.fds[child.pid] = os.pidfd_open(child.pid)
        except (OSError, AttributeError):
            self.close()
            self.usable = False
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)
        self.fds.clear()

    def wait(self, timeout: float) -> None:
        live = [self.fds[c.pid] for c in self.children if c.returncode is None and c.pid in self.fds]
        if live and self.usable:
            poller = select.poll()  # not select(): a pidfd may be numbered past FD_SETSIZE
            for fd in live:
                poller.register(fd, select.POLLIN)
            poller.poll(timeout * 1000)
        else:
            time.sleep(timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_result(ctx: RunContext, result: WorkerResult) -> None:
    """``result.json``. The host reads it only after this process has ended, and treats a torn or
    missing file as no result (the run's manifest is written either way): a plain write is enough."""
    worker_io.write(ctx.run_dir / layout.RESULT, result)


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
    train = _load_target(ctx.request.experiment.entry)
    cfg = OmegaConf.create(dict(ctx.request.config))
    started = time.time()
    metrics = train(cfg, ctx.run_dir) or {}
    if ctx.is_main:  # read back after training: Lightning's precision is known only once it has started
        result = WorkerResult(
            metrics={str(k): _plain(v) for k, v in metrics.items()},
            train_seconds=time.time() - started,
            flags=determinism.flags_in_force(),
            process=facts.process(),
            packages=tuple(facts.packages()),
        )
        _write_result(ctx, result)
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


def _plain(v: object) -> Json:
    """A metric as JSON holds it: a number as a float (a tensor's too), anything else as it is."""
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return v  # type: ignore[return-value]


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


def launch_ranks(ctx: RunContext, supervisor: Supervisor) -> int:
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
        supervisor.start([sys.executable, "-m", "runner.worker"], env)
    return supervisor.wait()


def program_command(
    exp: Experiment, code_dir: Path, world: int, port: int, nodes: int = 1, node: int = 0
) -> list[str]:
    """How a script or module starts: ``python script.py args``, ``python -m module args``, or
    either under torchrun with ``world`` processes, rendezvous (c10d) on loopback only: a
    container has no network, and its host name resolves to nothing (``--local-addr``, else the
    rendezvous store is looked for under that name and the run hangs until c10d's timeout).
    Across ``nodes`` nodes, torchrun starts this node's share and meets the others at
    ``MASTER_ADDR:MASTER_PORT`` (the first node's, set by the runner)."""
    what = ["-m", exp.entry] if exp.kind == "module" else [str(code_dir / exp.entry)]
    args = list(exp.args)
    if exp.launcher != "torchrun":
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


def run_script(ctx: RunContext, supervisor: Supervisor) -> int:
    """Run the experiment's program unmodified. Its working directory is the run's ``outputs/``
    (what it writes there, relative paths included, is hashed as outputs); the code snapshot
    stays read-only and importable through ``PYTHONPATH``."""
    supervisor.grace = SCRIPT_GRACE
    env = dict(
        os.environ,
        RUNNER_RUN_DIR=str(ctx.run_dir),
        RUNNER_OUTPUT_DIR=str(ctx.output_dir),
        RUNNER_DATA_DIR=str(ctx.data_dir),
        RUNNER_SEED=str(ctx.seed),
        RUNNER_WORLD_SIZE=str(ctx.world_size),
    )
    env["PYTHONPATH"] = script_audit.pythonpath(ctx.request, ctx.code_dir, os.environ.get("PYTHONPATH", ""))
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    exp = ctx.request.experiment
    command = program_command(exp, ctx.code_dir, ctx.world_size, _free_port(), ctx.nodes, ctx.node_rank)
    supervisor.start(command, env, cwd=ctx.output_dir)
    watched = script_audit.watched(ctx.request)
    collector = _FactsCollector(ctx.determinism if watched else None)
    collector.start()  # importing torch here, while the program runs, costs the run no time
    code = supervisor.wait()
    ended = time.time()
    if watched and _script_refused(ctx):
        return audit_rules.EXIT_REFUSED
    if code == 0 and ctx.node_rank == 0:  # the first node reports for the run
        collector.join()
        _write_result(ctx, collector.result(_program_metrics(ctx.output_dir), ended - started))
    return code


def _script_refused(ctx: RunContext) -> bool:
    """What the program's processes met, judged (:mod:`runner.worker.script_audit`) and recorded by
    the first node; True when an operation the profile does not allow stopped one of them."""
    verdict = script_audit.verdict(ctx.run_dir, ctx.determinism, ctx.accelerator)
    if ctx.node_rank == 0:
        out = ctx.run_dir / audit_rules.DIR / audit_rules.FILE
        out.parent.mkdir(parents=True, exist_ok=True)  # a program that met no alert made no audit dir
        worker_io.write(out, verdict)
    return verdict.refused


def _program_metrics(output_dir: Path) -> JsonObject:
    """What a program reported in ``outputs/metrics.json`` (an object); {} when it wrote none."""
    path = output_dir / "metrics.json"
    if not path.is_file():
        return {}
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"runner.worker: {path} is not readable JSON, no metrics recorded: {exc}", file=sys.stderr)
        return {}
    if not isinstance(metrics, dict):
        print(f"runner.worker: {path} is not a JSON object, no metrics recorded", file=sys.stderr)
        return {}
    return metrics


class _FactsCollector(threading.Thread):
    """The flags, libraries and devices a program's processes start with (torch's defaults under
    this environment, with the switches the audit sets when it watches them), and the installed
    packages: read on a thread of their own while it runs."""

    def __init__(self, watched: Mapping[str, Json] | None = None) -> None:
        super().__init__(daemon=True)
        self.watched = watched  # the profile whose switches the audit sets in the program's processes
        self.flags: JsonObject | None = None
        self.process: JsonObject | None = None
        self.packages: tuple[str, ...] = ()

    def run(self) -> None:
        from runner.worker import determinism

        if self.watched is not None:
            script_audit.set_switches(self.watched)
        self.flags, self.process, self.packages = (
            determinism.flags_in_force(),
            facts.process(),
            tuple(facts.packages()),
        )

    def result(self, metrics: JsonObject, train_seconds: float) -> WorkerResult:
        """The program's result (once the thread has ended; facts it did not get are read now)."""
        if self.process is None:
            self.process, self.packages = facts.process(), tuple(facts.packages())
        return WorkerResult(
            metrics=metrics,
            train_seconds=train_seconds,
            flags=self.flags or {},
            process=self.process,
            packages=self.packages,
        )


def _watch_lifeline() -> None:
    """Stop (as on SIGTERM) once standard input closes: every container is tied to the process that
    started it (the runner, or a multi-node run's node agent), and the engine closes its stdin when
    that process is gone, however it went (SIGKILL included)."""
    while os.read(0, 65536):
        pass
    os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    supervisor = Supervisor()
    supervisor.install()
    if os.environ.get(cluster.LIFELINE_ENV) == "stdin" and "RANK" not in os.environ:
        threading.Thread(target=_watch_lifeline, daemon=True).start()
    try:
        ctx = RunContext.current()
    except (ContractError, OSError) as exc:  # the host wrote no job file this worker can read
        print(f"runner.worker: cannot read the job file: {exc}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(ctx.code_dir))
    try:
        return _run(ctx, supervisor)
    except KeyboardInterrupt:
        return supervisor.interrupted()
    except Exception as exc:  # a full disk (a checkpoint, an output): one line, the runner records it
        where = _full_disk(ctx.run_dir, exc)
        if where is None:
            raise
        print(f"runner.worker: {no_space(where, _free_bytes(where))}", file=sys.stderr, flush=True)
        return EXIT_NO_SPACE


FULL_BELOW = 64 << 10  # bytes free under which a failed write's disk counts as full


def _full_disk(run_dir: Path, exc: BaseException) -> object | None:
    """Where a disk filled up, when that is why ``exc`` ended training: the path an ENOSPC names,
    else the first writable part of the run dir left (nearly) without space (torch.save, say,
    reports a failed write without its cause); None for any other failure."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return exc.filename or run_dir
    for where in (*(run_dir / name for name in layout.WRITABLE_DIRS), run_dir):
        free = _free_bytes(where)
        if free is not None and free < FULL_BELOW:
            return where
    return None


def _free_bytes(path: object) -> int | None:
    p = Path(str(path))
    for candidate in (p, *p.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def _run(ctx: RunContext, supervisor: Supervisor) -> int:
    """Training (each training process audits its first step itself when the profile asks for
    it: :class:`runner.worker.audit_step.AuditStep`), or the program."""
    request = ctx.request
    if request.experiment.program:
        return run_script(ctx, supervisor)
    if ctx.world_size > 1 and "RANK" not in os.environ:
        return launch_ranks(ctx, supervisor)
    return run_rank(ctx)


if __name__ == "__main__":
    _exit_now(main())
