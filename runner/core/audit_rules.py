"""The determinism audit's rules: which findings stop a strict run, and the one line that says so.
Pure, standard library only (the worker imports it inside the image).

The audit (:mod:`runner.worker.audit_step`) runs in each training process before it trains: the first
step, watched, twice from the same state, and the first batch drawn twice. It reports ``findings``:
each operation that has no deterministic implementation, with the user-code frame that called it;
the first operation whose output differed between the twin steps (randomness the user brings: a
generator seeded from the clock, an unseeded ``random``); whether the first batch differed (op
``dataloader``); and each determinism switch whose value in force after the step is not the one the
profile set. An operation is allowed when the profile's ``allow_nondeterministic_ops`` names it
(``aten::index_add_`` or ``index_add_``; ``dataloader`` for the data); any other stops a run whose
profile asks for the audit.

A ``script`` or ``module`` experiment (torchrun included) has no step the runner can run twice: its
processes run with deterministic algorithms on in warn-only mode (:mod:`runner.worker.script_audit`),
and each alert torch raises is a finding named as torch names it (``put_``, ``index_add_cuda_``),
judged by the same rules: a name with a device suffix is also allowed by its ATen operation's
(``index_add_cuda_`` by ``aten::index_add_``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from runner.core.worker_io import (
    AuditFindings,
    AuditVerdict,
    NondeterministicOp,
    SwitchedFlag,
    TwinDifference,
)

DIR = "audit"  # in the run dir: where the audit's record goes
FILE = "audit.json"  # in DIR: what the audit found, and whether the run was stopped
ENV = "RUNNER_AUDIT"  # no longer set: the audit ran as a process of its own before it ran in-process
DATA_OP = "dataloader"  # the name the data check's difference goes by (and is allowed by)
EXIT_REFUSED = 3  # the worker's exit status when the audit stops the run
SCRIPT_DIR = "script"  # in DIR: what each process of a script found (one file a process)
# the words of torch's alert for an operation without a deterministic implementation
ALERT = "does not have a deterministic implementation"
# how torch's alerts name a kernel of one device: index_add_cuda_, scatter_add_cuda_kernel, …_out_cuda
_DEVICE_SUFFIX = re.compile(r"(?:_out)?_(?:cuda|cpu|mps|xpu)(?:_kernel)?_?$")

# profile key → the flag read back from torch that must hold the profile's value
SWITCHES = {
    "deterministic_algorithms": ("deterministic_algorithms",),
    "cudnn_deterministic": ("cudnn_deterministic",),
    "cudnn_benchmark": ("cudnn_benchmark",),
    "allow_tf32": ("matmul_allow_tf32", "cudnn_allow_tf32"),
}


def mode(profile: Mapping[str, Any]) -> str:
    """``determinism.audit``: "on" (audit, then train), "only" (audit, no training) or "off"."""
    value = profile.get("audit", False)
    if value == "only":
        return "only"
    return "on" if value is True else "off"


def _name(op: str) -> str:
    return op.split("::", 1)[-1].split(".", 1)[0]


def allowed(op: str, allow: Iterable[str]) -> bool:
    """``aten::index_add_`` is allowed by ``aten::index_add_``, ``index_add_`` or
    ``aten::index_add_.default``; an alert's kernel name (``index_add_cuda_``) by itself and by
    its ATen operation's, in place or not (``index_add_``, ``aten::index_add``)."""
    name = _name(op)
    kernel = _DEVICE_SUFFIX.sub("", name).rstrip("_") if _DEVICE_SUFFIX.search(name) else None
    return any(_name(a) == name or _name(a).rstrip("_") == kernel for a in allow)


def alert_op(message: str) -> str | None:
    """The operation torch's alert names (``put_ does not have a deterministic implementation, …``);
    None for any other warning."""
    head, found, _ = message.partition(" " + ALERT)
    return head.strip().split()[-1] if found and head.strip() else None


def switched(profile: Mapping[str, Any], flags: Mapping[str, Any]) -> list[SwitchedFlag]:
    """Determinism switches whose value in force (``flags``, read back after the step) is not the
    value the profile set; a switch the profile leaves alone (None) is not checked."""
    out = []
    for key, flag_names in SWITCHES.items():
        want = profile.get(key)
        if want is None:
            continue
        for flag in flag_names:
            if flag in flags and bool(flags[flag]) != bool(want):
                out.append(SwitchedFlag(switch=flag, profile=bool(want), in_force=flags[flag]))
    return out


def judge(findings: AuditFindings, profile: Mapping[str, Any], seconds: float | None = None) -> AuditVerdict:
    """The verdict on ``findings``: refused when an operation the profile does not allow was met
    (``seconds``: how long the audit took, recorded with it)."""
    allow = tuple(str(a) for a in profile.get("allow_nondeterministic_ops") or [])
    refused = [o for o in findings.nondeterministic_ops if not allowed(o.op, allow)]
    twins = [d for d in (findings.data, findings.twin) if d is not None and not allowed(d.op, allow)]
    message = refusal(refused) if refused else twin_refusal(twins[0], findings.rank) if twins else None
    return AuditVerdict(
        findings=findings,
        refused=bool(refused or twins),
        message=message,
        allowed_ops=allow,
        refused_ops=tuple(sorted({o.op for o in refused} | {d.op for d in twins})),
        seconds=seconds,
    )


def twin_refusal(d: TwinDifference, rank: int = 0) -> str:
    """One line naming the first operation (or the data) that came out otherwise the second time."""
    on = f" on rank {rank}" if rank else ""
    if d.op == DATA_OP:
        source = ": ".join(p for p in (d.module, d.where) if p)
        what = f"the first batch drawn twice from fresh iterators with the same seed differed{on} ({source})"
    else:
        place = ", ".join(p for p in (d.module and f"in {d.module}", d.where or "no user frame") if p)
        backward = " in backward" if d.in_backward else ""
        what = f"the step run twice from the same state{on} first differed at {d.op}{backward} ({place})"
    return (
        f"determinism audit: {what}: randomness the runner does not seed (a generator seeded from the "
        "clock or os.urandom, an unseeded random/numpy, workers seeded from the clock) — seed it from "
        f"the run's seed, or list it in determinism.allow_nondeterministic_ops=[{d.op}] to run anyway "
        "(recorded), or determinism.audit=false"
    )


def refusal(ops: Sequence[NondeterministicOp]) -> str:
    """One line naming each operation that stops the run, where it was called, and the way out."""
    names = sorted({o.op for o in ops})
    where = ", ".join(f"{o.op} ({o.where or 'no user frame'})" for o in ops[:6])
    more = f" and {len(ops) - 6} more" if len(ops) > 6 else ""
    return (
        f"determinism audit: {len(ops)} operation(s) without a deterministic implementation: {where}{more} — "
        f"list them in determinism.allow_nondeterministic_ops=[{','.join(names)}] to run anyway "
        "(recorded), or determinism.audit=false"
    )


def not_completed(exit_status: int) -> AuditVerdict:
    """The verdict when the audit step did not complete: the run is refused, in a line that says why."""
    message = (
        f"determinism audit: the audit step did not complete (exit status "
        f"{exit_status}; see logs/train.log) — determinism.audit=false skips it"
    )
    return AuditVerdict(findings=None, refused=True, message=message)
