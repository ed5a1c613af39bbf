"""The twin step's rules as plain data: a difference refuses a strict run in one line naming the
operation, its module and its line, unless allow-listed; traces are compared operation by operation,
work only one twin did is not a difference; the findings read back exactly."""

from __future__ import annotations

from runner.core import audit_rules
from runner.core.worker_io import AuditFindings, AuditVerdict, TwinDifference
from runner.worker.audit_step import first_difference

NOISE = TwinDifference("aten::randn", "experiments/noisy.py:32", "net.3 (Noise)", index=7)
DATA = TwinDifference(audit_rules.DATA_OP, "tests/data/x.py:9", "Jittered, 1 worker(s)")


def test_a_twin_difference_refuses_in_one_line_naming_op_module_and_line_unless_allowed():
    v = audit_rules.judge(AuditFindings(ops_seen=40, twin=NOISE), {}, seconds=0.2)
    assert v.refused and v.refused_ops == ("aten::randn",) and "\n" not in (v.message or "")
    assert "first differed at aten::randn (in net.3 (Noise), experiments/noisy.py:32)" in (v.message or "")
    assert "allow_nondeterministic_ops=[aten::randn]" in (v.message or "")
    allowed = audit_rules.judge(
        AuditFindings(ops_seen=40, twin=NOISE), {"allow_nondeterministic_ops": ["randn"]}
    )
    assert not allowed.refused and allowed.message is None and allowed.allowed_ops == ("randn",)


def test_a_batch_that_differs_is_refused_as_the_dataloader_and_allowed_by_that_name():
    v = audit_rules.judge(AuditFindings(ops_seen=1, data=DATA, data_checked=True, rank=1), {})
    assert v.refused and v.refused_ops == ("dataloader",)
    assert "first batch drawn twice" in (v.message or "") and "on rank 1" in (v.message or "")
    assert "tests/data/x.py:9" in (v.message or "")
    ok = audit_rules.judge(
        AuditFindings(ops_seen=1, data=DATA), {"allow_nondeterministic_ops": ["dataloader"]}
    )
    assert not ok.refused


def test_twin_findings_read_back_exactly():
    f = AuditFindings(ops_seen=3, twin=NOISE, data=DATA, data_checked=True, rank=2)
    v = audit_rules.judge(f, {}, seconds=0.4)
    assert AuditVerdict.from_json(v.to_json()) == v


def _row(op: str, out: str | None, **more) -> dict:
    return {"op": op, "out": out, **more}


def test_traces_are_compared_op_by_op_and_work_one_twin_alone_did_is_no_difference():
    a = [
        _row("aten::empty", None),
        _row("aten::randperm", "p"),
        _row("aten::mm", "x"),
        _row("aten::add", "y"),
    ]
    b = [_row("aten::mm", "x"), _row("aten::add", "y")]  # the permutation was cached by the first twin
    assert first_difference(a, b) is None
    c = [_row("aten::mm", "x"), _row("aten::add", "z", module="net.1 (Noise)", where="m.py:4")]
    d = first_difference(c, a)
    assert d == TwinDifference("aten::add", "m.py:4", "net.1 (Noise)", in_backward=False, index=1)
    e = [_row("aten::mm", "x"), _row("aten::add", "z", node="AddBackward0", where="m.py:9")]
    got = first_difference(e, b)
    assert got is not None and got.in_backward and got.module == "AddBackward0" and got.index == 1
