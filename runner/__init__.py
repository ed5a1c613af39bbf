"""runner: containerized, reproducible PyTorch / Lightning experiments.

What an experiment uses, and the one stable import for it::

    from runner import current, RunContext

    ctx = current()            # this training process's run: paths, rank, seed, Trainer kwargs

A plain script names its training step for the determinism audit with ``audited``::

    from runner import audited

    @audited(model, optimizer)  # under a strict run: the first call runs twice first, compared
    def train_step(x, y): ...

They are loaded when first asked for, so ``import runner`` stays cheap on the host and in the
image (no torch, no Lightning, nothing run). Everything else in ``runner.*`` is the tool's own
code: its layout may change between releases; a public name that moves keeps working with a
:class:`DeprecationWarning` for one release.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from runner.worker.context import RunContext, current
    from runner.worker.script_twin import audited

__all__ = ["RunContext", "audited", "current"]


def __getattr__(name: str) -> Any:
    if name == "audited":
        from runner.worker import script_twin

        return script_twin.audited
    if name in __all__:
        from runner.worker import context

        return getattr(context, name)
    raise AttributeError(f"module 'runner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
