"""The terminal: progress and outcome lines on stderr, so that stdout stays free for a command's
result (``runner.replay --json``, say). Every command-line edge prints through here."""

from __future__ import annotations

from rich.console import Console

stderr = Console(stderr=True, highlight=False)


def echo(line: str) -> None:
    """One line as it came (a training log line, say): no rich markup read into it, never cut."""
    stderr.print(line, markup=False, soft_wrap=True)
