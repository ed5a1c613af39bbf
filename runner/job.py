"""Deprecated: the training process's view of its run moved. ``from runner import current,
RunContext`` is the interface experiments use; this module's names keep working, with a
:class:`DeprecationWarning`, until runner 0.2.

``JobContext`` is :class:`runner.worker.context.RunContext` (same fields and methods), and the
run dir's file names are in :mod:`runner.core.layout`.
"""

from __future__ import annotations

from runner.core.deprecation import moved

__getattr__ = moved(
    __name__,
    {
        "JobContext": "runner.worker.context.RunContext",
        "current": "runner.worker.context.current",
        "latest_checkpoint": "runner.core.layout.latest_checkpoint",
        "JOB_FILE": "runner.core.layout.WORKER_REQUEST",
        "RESULT_FILE": "runner.core.layout.RESULT",
        "FINGERPRINTS_FILE": "runner.core.layout.FINGERPRINTS",
        "OUTPUTS_DIR": "runner.core.layout.OUTPUTS_DIR",
        "CHECKPOINT_DIR": "runner.core.layout.CHECKPOINT_DIR",
        "CHECKPOINT_TEMPLATE": "runner.core.layout.CHECKPOINT_TEMPLATE",
    },
)
