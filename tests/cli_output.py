"""What a command printed, read as a user reads it."""

from __future__ import annotations

import subprocess


def error_line(proc: subprocess.CompletedProcess, code: int) -> str:
    """The one `runner: error:` line of a failed command, after checking how it failed."""
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = [x for x in proc.stderr.splitlines() if x.startswith("runner: error:")]
    assert len(lines) == 1, proc.stderr[-2000:]
    assert proc.stderr.rstrip().splitlines()[-1] == lines[0]  # the last thing the user sees
    return lines[0]
