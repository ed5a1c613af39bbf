"""The determinism audit's foothold in a script's processes: the runner's worker puts this folder
first on a watched program's ``PYTHONPATH`` (:mod:`runner.worker.script_audit`), so Python runs this
file at start-up, before the script's first line, in every process that inherits the variable.
Running at import is the point of a ``sitecustomize``. It then runs the one it hides, if any.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _boot() -> None:
    try:
        from runner.worker import script_audit
    except ImportError as exc:  # a Python without the runner (a tool the script runs): nothing to watch
        print(f"runner.worker: determinism audit: this process is not watched: {exc}", file=sys.stderr)
        return
    try:
        script_audit.install()
    except Exception as exc:  # the job file went away, say: the process runs unwatched, and says so
        print(f"runner.worker: determinism audit: this process is not watched: {exc}", file=sys.stderr)
    script_audit.chain(Path(__file__).parent)


_boot()
