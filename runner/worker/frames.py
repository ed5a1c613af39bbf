"""Which user-code line an operation came from: the call stack, or in backward the forward stack
autograd's anomaly mode kept on the node being run. Standard library at module level."""

from __future__ import annotations

import os
import re
import traceback
from pathlib import Path
from typing import Any

_FRAME = re.compile(r'File "([^"]+)", line (\d+)')


def user_frame(code_dir: Path, frames: list[tuple[str, int]]) -> str | None:
    """The innermost frame in the user's code (under ``code_dir``, outside the runner's own
    package) as ``path:line`` relative to the code dir; None when no frame is the user's."""
    root = str(code_dir.resolve()) + os.sep
    own = root + "runner" + os.sep
    for filename, line in reversed(frames):
        full = os.path.realpath(filename)
        if full.startswith(root) and not full.startswith(own):
            return f"{full[len(root) :]}:{line}"
    return None


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
