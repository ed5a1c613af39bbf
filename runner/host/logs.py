"""The training log as the executors keep it: streamed to the terminal, whole in the run dir's
``logs/train.log``, its last lines kept for the record."""

from __future__ import annotations

import collections
import contextlib
import errno
import shutil
from collections.abc import Callable
from pathlib import Path

from runner.core import layout, logtext
from runner.core.errors import no_space

LOG_TAIL = 40
TRAIN_LOG = f"{layout.LOGS_DIR}/{layout.TRAIN_LOG}"  # under the run dir


class Tee:
    """``echo``, also appending each line to ``path`` and keeping the last ``LOG_TAIL`` lines in
    ``tail``; the file is closed by :meth:`close` or at the end of a ``with`` block. A line redrawn
    with carriage returns (a progress bar) is kept in its last state; terminal noise
    (:func:`runner.core.logtext.is_terminal_noise`) goes to the file only."""

    def __init__(self, path: Path, echo: Callable[[str], None]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.file = open(path, "a", buffering=1)  # noqa: SIM115 - closed by close()
        self.tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL)
        self.echo = echo
        self.no_space: str | None = None  # the disk filled up under the log: one line saying so

    def __call__(self, line: str) -> None:
        if self.file.closed:  # a last line from a log stream that outlived the run
            return
        line = logtext.last_redraw(line)
        self._write(line)
        self.tail.append(line)
        if not logtext.is_terminal_noise(line):
            self.echo(line)

    def _write(self, line: str) -> None:
        """Append a line to the log file; a full disk is noted (the executor then stops the run),
        and the lines after it reach the terminal and the tail only."""
        if self.no_space is not None:
            return
        try:
            self.file.write(line + "\n")
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
            self.no_space = no_space(self.path, _free(self.path))

    def close(self) -> None:
        with contextlib.suppress(OSError):  # what is left in the buffer has nowhere to go on a full disk
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


def _free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path.parent).free
    except OSError:
        return None
