"""Where the worker runs: a locked-down container (docker) or a process on the host (host).

Both take the same plan and return the same :class:`Exit`; both stream the training log to
the terminal and to the run dir's ``logs/train.log``, and both stop their child on Ctrl-C or
SIGTERM before the interrupt propagates, so nothing is left running.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from runner.core import layout, logtext
from runner.core.engine_types import ContainerRequest
from runner.core.errors import shell_status
from runner.core.spec import RunPlan
from runner.host.engine import Container, Engine
from runner.host.interrupts import deferred

LOG_TAIL = 40
TRAIN_LOG = f"{layout.LOGS_DIR}/{layout.TRAIN_LOG}"  # under the run dir


@dataclass
class Exit:
    """How the worker ended, as both executors report it."""

    exit_code: int
    oom_killed: bool = False
    interrupted: bool = False
    seconds: float = 0.0
    log_tail: list[str] = field(default_factory=list)


class Tee:
    """``echo``, also appending each line to ``path`` and keeping the last ``LOG_TAIL`` lines in
    ``tail``; the file is closed by :meth:`close` or at the end of a ``with`` block. A line redrawn
    with carriage returns (a progress bar) is kept in its last state; terminal noise
    (:func:`runner.core.logtext.is_terminal_noise`) goes to the file only."""

    def __init__(self, path: Path, echo: Callable[[str], None]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self.echo = echo

    def __call__(self, line: str) -> None:
        if self.file.closed:  # a last line from a log stream that outlived the run
            return
        line = logtext.last_redraw(line)
        self.file.write(line + "\n")
        self.tail.append(line)
        if not logtext.is_terminal_noise(line):
            self.echo(line)

    def close(self) -> None:
        self.file.close()

    def quiet(self) -> None:
        """From now on, lines go to the log file only. On an interrupt, what the stopping
        processes print (a peer's collective failing as its partner goes, say) is shutdown noise
        for the terminal; the file keeps every line."""
        if self.echo is not _silent:
            self.echo(f"stopping… (the rest of the training log goes to {TRAIN_LOG} only)")
            self.echo = _silent

    def __enter__(self) -> Tee:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _silent(_line: str) -> None:
    pass


class DockerBackend:
    """The worker in a locked-down container of ``engine`` (any :class:`Engine`)."""

    name = "docker"

    def __init__(self, engine: Engine):
        self.engine = engine

    def run(
        self, plan: RunPlan, image: str, code_dir: Path, data_root: Path, echo: Callable[[str], None]
    ) -> Exit:
        with Tee(plan.run_dir / TRAIN_LOG, echo) as tee:
            return self.run_request(plan.container_request(image, code_dir, data_root), tee)

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
            while reader.is_alive():  # join with a timeout keeps the main thread responsive to signals
                reader.join(0.2)
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

    def run(
        self, plan: RunPlan, image: str | None, code_dir: Path, data_root: Path, echo: Callable[[str], None]
    ) -> Exit:
        env = plan.host_env(os.environ, code_dir)
        argv = [sys.executable, "-m", "runner.worker"]
        return run_process(argv, env, code_dir, plan.run_dir / TRAIN_LOG, echo)


def run_process(
    argv: list[str],
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    echo: Callable[[str], None],
    grace: float = 10.0,
    stop: int = signal.SIGTERM,
) -> Exit:
    """Run ``argv`` in a session of its own (so that it can be stopped whole), its output teed to
    ``log``; Ctrl-C or SIGTERM stops it (``stop``, then SIGKILL after ``grace`` seconds)."""
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
        code = proc.wait()
        return Exit(shell_status(code), seconds=time.time() - started, log_tail=list(tee.tail))
    except KeyboardInterrupt:
        tee.quiet()
        with deferred(redeliver=False):
            _terminate(proc, grace, stop)
        return Exit(130, interrupted=True, seconds=time.time() - started, log_tail=list(tee.tail))
    finally:
        if proc.poll() is None:
            _terminate(proc, grace, stop)
        tee.close()


def _pump(lines: Iterator[str], tee: Tee) -> None:
    for line in lines:
        tee(line)


def _terminate(proc: subprocess.Popen, grace: float = 10.0, stop: int = signal.SIGTERM) -> None:
    try:
        os.killpg(proc.pid, stop)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
