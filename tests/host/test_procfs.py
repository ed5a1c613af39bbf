"""``/proc/PID/stat`` read once for every caller: the state and start time of a real process, a
zombie told as ended, and no process at all."""

from __future__ import annotations

import os
import subprocess
import time

from runner.host import procfs


def test_a_running_process_a_zombie_and_none():
    me = procfs.stat(os.getpid())
    assert me is not None and not procfs.ended(me) and int(me[19]) > 0
    child = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 10
        while (fields := procfs.stat(child.pid)) is not None and not procfs.ended(fields):
            assert time.monotonic() < deadline, fields
            time.sleep(0.01)
        assert fields is not None and procfs.ended(fields)  # exited, not yet reaped
    finally:
        child.wait()
    assert procfs.stat(child.pid) is None  # reaped: no such process
