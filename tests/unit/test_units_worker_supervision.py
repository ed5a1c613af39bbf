"""The worker's process supervision (real child processes) and the facts only a running Trainer can
tell, kept for the process that trains and for no one else."""

from __future__ import annotations

import contextvars
import os
import signal
import sys
import time

from runner.worker.__main__ import Supervisor

PY = sys.executable


def _sleeper(seconds: float, exit_code: int = 0, ignore_term: bool = False) -> list[str]:
    code = "import signal, sys, time\n"
    if ignore_term:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += f"time.sleep({seconds}); sys.exit({exit_code})"
    return [PY, "-c", code]


def test_all_children_ending_well_is_status_zero():
    sup = Supervisor()
    for _ in range(2):
        sup.start(_sleeper(0.1), os.environ)
    assert sup.wait() == 0 and sup.stopping == 0 and sup.kill_at is None


def test_one_failing_child_stops_the_others_and_its_status_is_the_runs():
    sup = Supervisor(grace=5.0)
    long = sup.start(_sleeper(60), os.environ)
    sup.start(_sleeper(0.1, exit_code=3), os.environ)
    started = time.monotonic()
    assert sup.wait() == 3
    assert time.monotonic() - started < 10 and long.returncode == -signal.SIGTERM  # not left to hang


def test_a_child_that_ignores_sigterm_is_killed_once_the_grace_period_is_over():
    sup = Supervisor(grace=0.5)
    stubborn = sup.start(_sleeper(60, ignore_term=True), os.environ)
    time.sleep(0.3)  # let it install its handler
    sup.start(_sleeper(0, exit_code=1), os.environ)
    assert sup.wait() == 1 and stubborn.returncode == -signal.SIGKILL


def test_a_signal_to_the_worker_reaches_its_children_and_is_the_status():
    sup = Supervisor(grace=5.0)
    child = sup.start(_sleeper(60), os.environ)
    sup.on_signal(signal.SIGTERM, None)
    assert sup.wait() == 128 + signal.SIGTERM and child.returncode == -signal.SIGTERM
    assert sup.interrupted() == 128 + signal.SIGTERM


def test_with_no_child_a_signal_interrupts_training_in_this_process():
    sup = Supervisor()
    try:
        sup.on_signal(signal.SIGINT, None)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("in-process training is interrupted by KeyboardInterrupt")
    assert sup.interrupted() == 128 + signal.SIGINT


def test_each_supervisor_keeps_its_own_children():
    a, b = Supervisor(), Supervisor()
    assert a.run_child(_sleeper(0, exit_code=5), os.environ) == 5
    assert a.children == [] and b.children == []  # a finished child is let go; nothing is shared


def test_what_the_trainer_reports_is_read_back_in_the_context_that_trained():
    from runner.worker import determinism

    def train() -> dict:
        determinism.record_in_training(lightning_precision="bf16-mixed")
        determinism.record_in_training(sigterm_broadcast_per_step=False)
        return determinism.flags_in_force()

    flags = contextvars.copy_context().run(train)
    assert flags["lightning_precision"] == "bf16-mixed" and flags["sigterm_broadcast_per_step"] is False
    assert "lightning_precision" not in determinism.flags_in_force()  # another context: nothing leaks


def _dies(signum: int, after: float = 0.0) -> list[str]:
    return [PY, "-c", f"import os, time; time.sleep({after}); os.kill(os.getpid(), {signum})"]


def test_of_children_seen_ended_together_the_one_a_signal_killed_is_the_runs_status():
    """Rank 0 raised (status 1: its peer went away) after rank 1 was killed (as a segfault or the
    OOM killer ends it); both had ended before the supervisor looked: rank 1's end is the status."""
    sup = Supervisor()
    first = sup.start(_sleeper(0.3, exit_code=1), os.environ)
    second = sup.start(_dies(signal.SIGKILL), os.environ)
    os.waitid(os.P_PID, first.pid, os.WEXITED | os.WNOWAIT)  # both ended, neither reaped
    os.waitid(os.P_PID, second.pid, os.WEXITED | os.WNOWAIT)
    assert sup.wait() == 128 + signal.SIGKILL


def test_of_children_seen_ended_together_status_1_is_the_collateral_one():
    sup = Supervisor()
    first = sup.start(_sleeper(0.3, exit_code=1), os.environ)
    second = sup.start(_sleeper(0, exit_code=7), os.environ)
    os.waitid(os.P_PID, first.pid, os.WEXITED | os.WNOWAIT)
    os.waitid(os.P_PID, second.pid, os.WEXITED | os.WNOWAIT)
    assert sup.wait() == 7


def test_a_rank_that_c10d_aborted_is_collateral_too():
    """NCCL's watchdog aborts a rank whose peer failed (SIGABRT): the peer's own status is the run's."""
    sup = Supervisor()
    first = sup.start(_dies(signal.SIGABRT, after=0.3), os.environ)
    second = sup.start(_sleeper(0, exit_code=7), os.environ)
    os.waitid(os.P_PID, first.pid, os.WEXITED | os.WNOWAIT)
    os.waitid(os.P_PID, second.pid, os.WEXITED | os.WNOWAIT)
    assert sup.wait() == 7
