"""Before a strict run trains: the determinism audit, in a process of its own, and its verdict.

:func:`run_before` starts ``python -m runner.worker`` once more with :data:`runner.core.audit_rules.ENV`
set and a world of one process on the run's device kind. That process runs the experiment for one
step under :class:`runner.worker.audit_step.AuditStep` into ``<run dir>/audit``. Here the findings
are judged against the profile's allow-list and written back with the verdict; a refusal is one
line on stderr and exit status :data:`runner.core.audit_rules.EXIT_REFUSED`, before any training.
Standard library only at module level (the worker's launcher process never imports torch).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from runner.core import audit_rules as rules
from runner.core import worker_io
from runner.core.worker_io import AuditFindings, AuditVerdict, ContractError, WorkerRequest

# How the worker runs the audit's process to its end: ``start(argv, env)`` → its shell-style status.
Start = Callable[[list[str], Mapping[str, str]], int]


def wanted(request: WorkerRequest) -> str:
    """``on``, ``only`` or ``off`` for this job (a plain script or module has no Trainer to limit:
    never audited)."""
    if request.experiment.program:
        return "off"
    return rules.mode(request.determinism)


def run_before(request: WorkerRequest, run_dir: Path, start: Start) -> int:
    """Audit one step and judge it; 0 when training may start. ``start(argv, env)`` runs the audit
    process to its end (the worker's own, so signals reach it) and returns its shell-style status."""
    out = run_dir / rules.DIR
    shutil.rmtree(out, ignore_errors=True)  # a resumed run audits again: nothing stale is read
    out.mkdir(parents=True)
    started = time.monotonic()
    code = start([sys.executable, "-m", "runner.worker"], _audit_env(os.environ))
    seconds = round(time.monotonic() - started, 3)
    path = out / rules.FILE
    findings = _findings(path)
    _tidy(out)
    if code != 0 or findings is None:
        verdict = rules.not_completed(code)
        worker_io.write(path, verdict)
        print(f"runner.worker: {verdict.message}", file=sys.stderr)
        return code or rules.EXIT_REFUSED
    verdict = rules.judge(findings, request.determinism, seconds)
    worker_io.write(path, verdict)
    _report(verdict)
    return rules.EXIT_REFUSED if verdict.refused else 0


def _audit_env(base: Mapping[str, str]) -> dict[str, str]:
    """The audit process's environment: the worker's, as one process of a world of one."""
    ranks = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")
    env = {k: v for k, v in base.items() if k not in ranks}
    env.update({rules.ENV: "1", "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1"})
    return env


def _findings(path: Path) -> AuditFindings | None:
    """What the audit step wrote; None when it wrote nothing whole (it died, or was stopped)."""
    try:
        return worker_io.read(path, AuditFindings.from_json)
    except (OSError, ContractError):
        return None


def _report(verdict: AuditVerdict) -> None:
    """The switches user code turned, and the refusal, one line each on stderr."""
    for s in verdict.findings.switched if verdict.findings else ():
        print(
            f"runner.worker: determinism audit: user code left {s.switch}={s.in_force} "
            f"(the profile sets {s.profile})",
            file=sys.stderr,
        )
    if verdict.refused:
        print(f"runner.worker: {verdict.message}", file=sys.stderr)


def _tidy(out: Path) -> None:
    """Keep the findings only: the audit step's outputs, weights and logs are not the run's."""
    for p in out.iterdir():
        if p.name != rules.FILE:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
