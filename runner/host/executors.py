"""Where the worker runs: a locked-down container of an engine, or a process on the host.

Each implements :class:`runner.host.engine.Executor`: it takes a :class:`Workload` and returns
an :class:`Exit`; each streams the training log to the terminal and to the run dir's
``logs/train.log``, and stops its child on Ctrl-C or SIGTERM before the interrupt propagates, so
nothing is left running. :func:`runner.host.backends.choose` is the one place an executor is
picked for a plan (a run across nodes is :class:`runner.host.nodes.NodesBackend`'s).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from runner.core.engine_types import ContainerRequest, EngineInfo
from runner.core.errors import EXIT_NO_SPACE, shell_status
from runner.core.run_input import ResolvedImage
from runner.core.spec import RunPlan
from runner.host import rundir
from runner.host.engine import Container, Engine, Exit, Workload
from runner.host.interrupts import deferred
from runner.host.logs import LOG_TAIL, TRAIN_LOG, Tee

__all__ = [
    "LOG_TAIL",
    "TRAIN_LOG",
    "DockerBackend",
    "Exit",
    "HostBackend",
    "Tee",
    "Workload",
    "Stop",
    "run_process",
]


class DockerBackend:
    """The worker in a locked-down container of ``engine`` (any :class:`Engine`)."""

    name = "docker"

    def __init__(self, engine: Engine):
        self.engine = engine

    def image(
        self, plan: RunPlan, root: Path, echo: Callable[[str], None], build_log: Path | None
    ) -> ResolvedImage:
        """The image the plan names, found on the engine by content hash or built."""
        from runner.host import image_builder

        return image_builder.resolve_image(self.engine, plan, root, echo, build_log=build_log)

    def describe(self) -> EngineInfo:
        return self.engine.describe()

    def run(self, work: Workload, echo: Callable[[str], None]) -> Exit:
        plan = work.plan
        assert work.image is not None, "a container runs an image"
        rundir.make_writable_for(plan.run_dir, plan.user)
        with Tee(plan.run_dir / TRAIN_LOG, echo) as tee:
            return self.run_request(
                plan.container_request(work.image.tag, work.code_dir, work.data_root), tee
            )

    def run_request(self, request: ContainerRequest, tee: Tee) -> Exit:
        """Start the container, stream its log into ``tee`` until it ends, and remove it — also on
        Ctrl-C or SIGTERM, and when starting it failed half-way."""
        started = time.time()
        container: Container | None = None
        reader: threading.Thread | None = None
        interrupted = False
        try:
            with deferred():  # create + start as one step: a Ctrl-C meanwhile lands once `container` is set
                container = self.engine.start(request)
            reader = threading.Thread(
                target=_pump, args=(self.engine.stream_logs(container), tee), daemon=True
            )
            reader.start()
            while reader.is_alive() and tee.no_space is None:  # a timeout keeps signals answered
                reader.join(0.2)
            if tee.no_space is not None:  # the log's disk is full: the run stops, its record says why
                return Exit(
                    EXIT_NO_SPACE,
                    seconds=time.time() - started,
                    log_tail=list(tee.tail),
                    no_space=tee.no_space,
                )
            ended = self.engine.wait(container)
            return Exit(
                ended.exit_code,
                oom_killed=ended.oom_killed,
                seconds=time.time() - started,
                log_tail=list(tee.tail),
            )
        except KeyboardInterrupt:
            interrupted = True
            tee.quiet()
            return Exit(130, interrupted=True, seconds=time.time() - started, log_tail=list(tee.tail))
        finally:
            # already stopping on an interrupt: a second Ctrl-C asks for nothing more, so it is dropped
            with deferred(redeliver=not interrupted):
                if container is not None:
                    self.engine.stop_and_remove(container)
                else:  # start failed half-way (created, not started): nothing of the run may stay
                    self.engine.remove_named(request.name)
                if reader is not None:
                    reader.join(5)  # the log stream ends with the container; keep its last lines


class HostBackend:
    """The worker as a process on this host, in its own session so that it can be stopped whole."""

    name = "host"

    def image(self, plan: RunPlan, root: Path, echo: Callable[[str], None], build_log: Path | None) -> None:
        """None: the worker runs in this Python, whose packages the worker records."""
        return None

    def describe(self) -> None:
        return None

    def run(self, work: Workload, echo: Callable[[str], None]) -> Exit:
        plan = work.plan
        env = plan.host_env(os.environ, work.code_dir)
        argv = [sys.executable, "-m", "runner.worker"]
        return run_process(argv, env, work.code_dir, plan.run_dir / TRAIN_LOG, echo)


@dataclass(frozen=True)
class Stop:
    """How a process run by :func:`run_process` is stopped: ``signal``, then SIGKILL after
    ``grace`` seconds."""

    signal: int = signal.SIGTERM
    grace: float = 10.0


def run_process(
    argv: list[str],
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    echo: Callable[[str], None],
    stop: Stop = Stop(),
) -> Exit:
    """Run ``argv`` in a session of its own (so that it can be stopped whole), its output teed to
    ``log``; Ctrl-C or SIGTERM stops it as ``stop`` says."""
    tee = Tee(log, echo)
    started = time.time()
    proc = subprocess.Popen(
        argv,
        env=dict(env),
        cwd=str(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout is not None  # stdout=PIPE
    try:
        for line in proc.stdout:
            tee(line.rstrip("\n"))
            if tee.no_space is not None:  # the log's disk is full: the run stops, its record says why
                _terminate(proc, stop.grace, stop.signal)
                return Exit(
                    EXIT_NO_SPACE,
                    seconds=time.time() - started,
                    log_tail=list(tee.tail),
                    no_space=tee.no_space,
                )
        code = proc.wait()
        return Exit(shell_status(code), seconds=time.time() - started, log_tail=list(tee.tail))
    except KeyboardInterrupt:
        tee.quiet()
        with deferred(redeliver=False):
            _terminate(proc, stop.grace, stop.signal)
        return Exit(130, interrupted=True, seconds=time.time() - started, log_tail=list(tee.tail))
    finally:
        if proc.poll() is None:
            _terminate(proc, stop.grace, stop.signal)
        tee.close()


def _pump(lines: Iterator[str], tee: Tee) -> None:
    """The log stream into ``tee``; a stream the engine drops (it went away mid-run) ends the log
    with one line saying so, not a thread's traceback: how the container ended is asked next."""
    try:
        for line in lines:
            tee(line)
    except Exception as exc:  # noqa: BLE001 - any engine's connection error alike
        tee(f"runner: the container's log stream broke off: {type(exc).__name__}: {exc}"[:300])


def _terminate(proc: subprocess.Popen, grace: float = 10.0, stop: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, stop)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
