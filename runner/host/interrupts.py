"""Ctrl-C, SIGTERM and SIGHUP on the host: hold them off while cleanup that must finish runs.

Every command-line edge (``python -m runner``, ``runner.replay``, a sweep's job processes) calls
:func:`sigterm_as_interrupt` first, so both signals reach Python as the same exception. Code that
must not be cut in half (stopping and removing a container, writing the manifest, releasing the run
dir) runs inside :class:`deferred`: a signal that arrives meanwhile is recorded, and when the block
ends it is either delivered again to whatever handler was in place before (``redeliver=True``, the
default: "it takes effect afterwards") or dropped (``redeliver=False``, for cleanup that is already
the answer to an interrupt, where a second Ctrl-C asks for nothing new).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Literal

Handler = Callable[[int, FrameType | None], Any] | int | None  # what signal.signal takes and gives back

DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def sigterm_as_interrupt() -> None:
    """From now on SIGTERM and SIGHUP raise :class:`KeyboardInterrupt`, as Ctrl-C does: a ``kill``,
    a scheduler's notice (Slurm's, say) or a closed terminal (an ssh session dropped) then stops the
    run and records it as interrupted, the same way. Main thread only (where Python handles signals)."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


class deferred:  # noqa: N801 - used like a function: ``with deferred(): ...``
    """Context manager; ``pending`` lists the signals that arrived inside the block."""

    def __init__(self, redeliver: bool = True):
        self.redeliver = redeliver
        self.pending: list[int] = []
        self._old: dict[int, Handler] = {}

    def _record(self, signum, _frame) -> None:
        self.pending.append(signum)

    def __enter__(self) -> deferred:
        self.pending = []
        self._old = {}
        if threading.current_thread() is threading.main_thread():  # handlers live in the main thread only
            for sig in DEFERRED_SIGNALS:
                self._old[sig] = signal.signal(sig, self._record)
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        for sig, handler in self._old.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        if self.redeliver and exc[0] is None:
            for sig in dict.fromkeys(self.pending):  # each signal once, in arrival order
                signal.raise_signal(sig)
        return False
