"""A process as ``/proc/PID/stat`` tells it: its state and when it started. A pid alone may be
reused; a pid with its start time names one process."""

from __future__ import annotations

from pathlib import Path


def stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the process's name (which may hold spaces and
    parentheses): the state first (``Z``/``X``: ended, not yet reaped), the start time at index 19
    (clock ticks since boot). None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def ended(fields: list[str]) -> bool:
    """Whether :func:`stat`'s process has ended (a zombie, or being reaped)."""
    return fields[0] in ("Z", "X")
