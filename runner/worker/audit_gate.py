"""Before a strict run trains: the determinism audit, in a process of its own, and its verdict.

:func:`run_before` starts ``python -m runner.worker`` once more with :data:`runner.core.audit_rules.ENV`
set and a world of one process on the run's device kind. That process runs the experiment for one
step under :class:`runner.worker.audit_step.AuditStep` into ``<run dir>/audit``. Here the findings
are judged against the profile's allow-list and written back with the verdict; a refusal is one
line on stderr and exit status :data:`runner.core.audit_rules.EXIT_REFUSED`, before any training.
Standard library only at module level (the worker's launcher process never imports torch).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from runner.core import audit_rules as rules


def wanted(job: dict) -> str:
    """``on``, ``only`` or ``off`` for this job (a plain script or module has no Trainer to limit:
    never audited)."""
    if job["experiment"].get("script") or job["experiment"].get("module"):
        return "off"
    return rules.mode(job.get("determinism") or {})


def run_before(job: dict, run_dir: Path, start: Callable[[list[str], dict], int]) -> int:
    """Audit one step and judge it; 0 when training may start. ``start(argv, env)`` runs the audit
    process to its end (the worker's own, so signals reach it) and returns its shell-style status."""
    out = run_dir / rules.DIR
    shutil.rmtree(out, ignore_errors=True)  # a resumed run audits again: nothing stale is read
    out.mkdir(parents=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    }
    env.update({rules.ENV: "1", "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    started = time.monotonic()
    code = start([sys.executable, "-m", "runner.worker"], env)
    seconds = round(time.monotonic() - started, 3)
    path = out / rules.FILE
    try:
        findings = json.loads(path.read_text())
    except (OSError, ValueError):
        findings = None
    _tidy(out)
    if code != 0 or not isinstance(findings, dict):
        message = (
            f"determinism audit: the audit step did not complete (exit status "
            f"{code}; see logs/train.log) — determinism.audit=false skips it"
        )
        path.write_text(json.dumps({"refused": True, "message": message}, indent=2))
        print(f"runner.worker: {message}", file=sys.stderr)
        return code or rules.EXIT_REFUSED
    verdict = {**rules.judge(findings, job.get("determinism") or {}), "seconds": seconds}
    path.write_text(json.dumps(verdict, indent=2, sort_keys=True))
    for s in verdict["switched"]:
        print(
            f"runner.worker: determinism audit: user code left {s['switch']}={s['in_force']} "
            f"(the profile sets {s['profile']})",
            file=sys.stderr,
        )
    if verdict["refused"]:
        print(f"runner.worker: {verdict['message']}", file=sys.stderr)
        return rules.EXIT_REFUSED
    return 0


def _tidy(out: Path) -> None:
    """Keep the findings only: the audit step's outputs, weights and logs are not the run's."""
    for p in out.iterdir():
        if p.name != rules.FILE:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
