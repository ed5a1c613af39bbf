"""Check an experiment's own parameters on the host, before an image is resolved or a container starts.

An experiment config may name a schema for any of its top-level config sections::

    experiment:
      schemas: {model: "experiments.mnist_params:ModelParams"}

Each is a pydantic model (or anything :class:`pydantic.TypeAdapter` takes). ``model.channels=abc``
or ``model=3`` then fails here, in one line, instead of in the training process after the launch
with a traceback in its log. A schema module is imported on the host, so it may need nothing
beyond the standard library and pydantic. Replays skip the check: the recorded config passed it
once, and a snapshot's code is never imported outside a container.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runner.core.errors import EXIT_USAGE, RunnerError


def check(config: Mapping[str, Any], schemas: object, root: Path) -> None:
    """Validate each ``config[section]`` against its schema; RunnerError naming the first bad value."""
    if not schemas:
        return
    if not isinstance(schemas, Mapping):
        raise RunnerError(f"experiment.schemas must map config sections to 'module:Class', not {schemas!r}")
    import pydantic

    for section, ref in schemas.items():
        try:
            adapter = pydantic.TypeAdapter(_load(str(ref), root))
        except pydantic.PydanticUserError as exc:  # not a type pydantic can validate with
            raise RunnerError(
                f"experiment.schemas: {ref!r} is not a schema: {exc.message.splitlines()[0]}"
            ) from None
        try:
            adapter.validate_python(config.get(section))
        except pydantic.ValidationError as exc:
            raise RunnerError(describe(section, exc.errors()[0]), EXIT_USAGE) from None


def describe(section: str, error: Mapping[str, Any]) -> str:
    """One pydantic error as ``section.key: message (got value)``."""
    where = ".".join([section, *(str(p) for p in error.get("loc", ()))])
    return f"{where}: {error.get('msg', 'invalid')} (got {error.get('input')!r})"


def _load(ref: str, root: Path):
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise RunnerError(f"experiment.schemas: {ref!r} is not 'module:Class'")
    sys.path.insert(0, str(root))
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise RunnerError(f"experiment.schemas: cannot load {ref!r}: {exc}") from None
    finally:
        sys.path.remove(str(root))
