"""Public names that moved keep working for one release, with a :class:`DeprecationWarning` that
says where they went. Standard library only (the worker and experiments import it in the image).

A module whose names moved ends with::

    __getattr__ = moved(__name__, {"JobContext": "runner.worker.context.RunContext"})

and ``from that.module import JobContext`` still works: the name is looked up where it lives now,
when it is first asked for, and the warning points at the line that asked.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

REMOVED_IN = "0.2"  # the release that drops the old names


def moved(module: str, names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that serves each old name of ``names`` from its new dotted place."""

    def __getattr__(name: str) -> Any:
        new = names.get(name)
        if new is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        where, _, attr = new.rpartition(".")
        warnings.warn(
            f"{module}.{name} is deprecated and goes away in runner {REMOVED_IN}: use {new}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(where), attr)

    return __getattr__
