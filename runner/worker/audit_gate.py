"""The determinism audit's verdict, in the training process, before it trains.

:class:`runner.worker.audit_step.AuditStep` gathers a rank's findings at its first batch; here they
are judged against the profile's allow-list, every rank of a DDP run learns whether any rank's
findings refuse the run (each checks its own twin; one refusal stops all), and the first rank
writes the verdict to ``<run dir>/audit/audit.json``. A refusal is one line on stderr and exit
status :data:`runner.core.audit_rules.EXIT_REFUSED`, before any training step.
Standard library only at module level (the worker's launcher process never imports torch).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from runner.core import audit_rules as rules
from runner.core import worker_io
from runner.core.worker_io import AuditFindings, AuditVerdict, Json, WorkerRequest


def wanted(request: WorkerRequest) -> str:
    """``on``, ``only`` or ``off`` for this job's step audit (a script or module has no step the
    runner runs: its processes are watched instead, :mod:`runner.worker.script_audit`)."""
    if request.experiment.program:
        return "off"
    return rules.mode(request.determinism)


def settle(findings: AuditFindings, profile: Mapping[str, Json], seconds: float, out: Path, rank: int) -> int:
    """Judge this rank's ``findings``, agree with the other ranks, write the verdict (rank 0) and
    report it; 0 when training may start, else :data:`~runner.core.audit_rules.EXIT_REFUSED`."""
    verdict = agreed(rules.judge(findings, profile, seconds))
    if rank == 0:
        out.parent.mkdir(parents=True, exist_ok=True)
        worker_io.write(out, verdict)
        _report(verdict)
    return rules.EXIT_REFUSED if verdict.refused else 0


def agreed(mine: AuditVerdict) -> AuditVerdict:
    """In a DDP run, the verdict every rank goes by: rank 0's, unless another rank's refuses (then
    the first refusing rank's, with rank 0's time). Alone: ``mine``."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mine
    every: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine.to_json())
    verdicts = [AuditVerdict.from_json(v, f"rank {r}'s audit") for r, v in enumerate(every)]
    refusing = next((v for v in verdicts if v.refused), None)
    if refusing is None:
        return verdicts[0]
    return AuditVerdict(
        findings=refusing.findings,
        refused=True,
        message=refusing.message,
        allowed_ops=refusing.allowed_ops,
        refused_ops=refusing.refused_ops,
        seconds=verdicts[0].seconds,
    )


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


def end_process(code: int) -> None:
    """End this training process now, with ``code``: the audit refused the run, or it was the run's
    only work (``runner audit``). What the experiment would do after training is not the audit's."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
