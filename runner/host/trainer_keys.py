"""Catch a misspelt ``trainer`` key on the host, before an image is resolved or a container starts.

``trainer`` keys go to Lightning's ``Trainer`` unchanged, and Lightning refuses an unknown
keyword only when the training process constructs it — after the build, the launch and the
imports, with a traceback in the training log. The host already has the same Lightning the
image pins (the ``host`` extra), so its ``Trainer.__init__`` parameters are read here from the
installed source with :mod:`ast` — cheap (no ``import pytorch_lightning``, which takes seconds).
When Lightning is absent on the host, or its version differs from the one the image pins, the
check is skipped: the training process will still refuse the key, just later.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from runner.core import locks
from runner.core.errors import EXIT_USAGE, RunnerError

DIST = "pytorch-lightning"


def host_version() -> str | None:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return None


def pinned_version(lock_text: str) -> str | None:
    """The Lightning version a requirements lock pins (``pytorch-lightning==X``), if any."""
    return locks.pinned_version(lock_text, DIST)


def trainer_parameters() -> frozenset[str] | None:
    """Keyword parameters of the installed ``pytorch_lightning.Trainer.__init__``, or None."""
    spec = importlib.util.find_spec("pytorch_lightning")
    if spec is None or not spec.origin:
        return None
    source = Path(spec.origin).parent / "trainer" / "trainer.py"
    try:
        tree = ast.parse(source.read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Trainer":
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                    if fn.args.kwarg is not None:  # **kwargs: anything goes
                        return None
                    names = [a.arg for a in fn.args.args + fn.args.kwonlyargs]
                    return frozenset(n for n in names if n != "self")
    return None


def unknown_keys(trainer: Mapping[str, Any], accepted: frozenset[str]) -> list[str]:
    return sorted(k for k in trainer if k not in accepted)


def check(trainer: Mapping[str, Any] | None, image_lock: Path | None) -> None:
    """Refuse ``trainer`` keys Lightning's Trainer does not take. ``image_lock`` is the lock of the
    image that will train (None: training runs on the host, with the host's Lightning)."""
    if not trainer:
        return
    version = host_version()
    if version is None:
        return
    if image_lock is not None:
        try:
            pinned = pinned_version(image_lock.read_text())
        except OSError:
            return
        if pinned != version:
            return
    accepted = trainer_parameters()
    if accepted is None:
        return
    bad = unknown_keys(trainer, accepted)
    if bad:
        hints = []
        for key in bad:
            close = difflib.get_close_matches(key, sorted(accepted), n=1)
            hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
        raise RunnerError(
            f"trainer: Lightning {version}'s Trainer takes no argument {', '.join(hints)}", EXIT_USAGE
        )
