"""What an image build shows on the terminal: one status line with the build step and the time
spent so far, instead of every line of the build (those go to ``logs/build.log``).

On a terminal the line redraws in place (rich's status); elsewhere (a CI log, a pipe) only the
build's ``Step N/M`` lines are printed, one each.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

_STEP = re.compile(r"^Step \d+/\d+ : ")


class BuildProgress:
    """A line sink for a build's output: remembers the current step and shows it with the elapsed
    time. Use as a context manager; on exit it prints one line saying how long the build took."""

    def __init__(
        self, tag: str, log_path: Path | None, echo: Callable[[str], None], announce: str | None = None
    ):
        self.tag, self.log_path, self.echo = tag, log_path, echo
        self.announce = announce or f"building image {tag}"
        self.console = Console(stderr=True, highlight=False)
        self.step = "preparing the build context"
        self.started = time.monotonic()
        self.status = self.console.status(self._text()) if self.console.is_terminal else None

    def _text(self) -> str:
        where = f" — full log: {self.log_path}" if self.log_path else ""
        return f"building {self.tag} [{time.monotonic() - self.started:4.0f}s] {self.step[:100]}{where}"

    def __call__(self, line: str) -> None:
        if _STEP.match(line) or line.startswith("fetching wheels"):
            self.step = line
            if self.status is None:
                self.echo(f"  {line[:160]}")
        if self.status is not None:
            self.status.update(self._text())

    def __enter__(self) -> BuildProgress:
        self.echo(self.announce + (f"; log: {self.log_path}" if self.log_path else ""))
        if self.status is not None:
            self.status.start()
        return self

    def __exit__(self, exc_type, *_exc) -> None:
        if self.status is not None:
            self.status.stop()
        if exc_type is None:
            self.echo(f"built {self.tag} in {time.monotonic() - self.started:.0f}s")
