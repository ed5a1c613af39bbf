"""Which user-code line an operation came from: the call stack, or in backward the forward stack
autograd's anomaly mode kept on the node being run. Standard library at module level."""

from __future__ import annotations

import os
import re
import sys
import traceback
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def user_frame(code_dir: Path, frames: list[tuple[str, int]]) -> str | None:
    """The innermost frame in the user's code (under ``code_dir``, outside the runner's own
    package) as ``path:line`` relative to the code dir; None when no frame is the user's."""
    return Callers(code_dir).first((name, line) for name, line in reversed(frames))


class Callers:
    """Finds the innermost user-code frame, each file's verdict (the user's? its relative path)
    worked out once: an operation watch asks for every operation of a step."""

    def __init__(self, code_dir: Path):
        self.root = str(code_dir.resolve()) + os.sep
        self.own = self.root + "runner" + os.sep
        self.files: dict[str, str | None] = {}

    def relative(self, filename: str) -> str | None:
        if filename not in self.files:
            full = os.path.realpath(filename)
            mine = full.startswith(self.root) and not full.startswith(self.own)
            self.files[filename] = full[len(self.root) :] if mine else None
        return self.files[filename]

    def first(self, frames: Iterable[tuple[str, int]]) -> str | None:
        """``path:line`` of the first of ``frames`` (innermost first) in the user's code."""
        for filename, line in frames:
            rel = self.relative(filename)
            if rel is not None:
                return f"{rel}:{line}"
        return None

    def here(self) -> str | None:
        """The innermost user-code frame of the calling stack, walked from the inside without
        formatting it (:func:`stack_frames` reads every frame's source line)."""
        return self.first(_walk(sys._getframe(1)))


def _walk(frame: FrameType | None) -> Iterator[tuple[str, int]]:
    while frame is not None:
        yield frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back


def stack_frames() -> list[tuple[str, int]]:
    return [(f.filename, f.lineno or 0) for f in traceback.extract_stack()]


def node_frames() -> list[tuple[str, int]]:
    """In backward: the forward call stack anomaly mode kept on the autograd node being run."""
    import torch

    node = torch._C._current_autograd_node()
    # torch's stubs declare Node.metadata a method; it is a dict-valued property
    metadata: dict[str, Any] = node.metadata if node is not None else {}  # type: ignore[assignment]
    text = "".join(metadata.get("traceback_") or [])
    return [(f, int(n)) for f, n in _FRAME.findall(text)]
