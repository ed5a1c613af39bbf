"""The audit's rules and the operation-trace comparison, as plain data."""

from __future__ import annotations

from runner.core import audit_rules as audit
from runner.core import op_traces
from runner.core.worker_io import AuditFindings, NondeterministicOp, SwitchedFlag


def test_allow_list_matches_by_operation_name_with_or_without_namespace_and_overload():
    assert audit.allowed("aten::index_add_", ["index_add_"]) and audit.allowed(
        "aten::index_add_", ["aten::index_add_.default"]
    )
    assert not audit.allowed("aten::index_add", ["aten::index_add_"])


def test_judge_refuses_only_what_the_profile_does_not_allow_in_one_line():
    ops = (NondeterministicOp("aten::put_", "m.py:3"), NondeterministicOp("aten::index_add_", None))
    found = AuditFindings(ops_seen=10, nondeterministic_ops=ops)
    v = audit.judge(found, {"allow_nondeterministic_ops": ["aten::put_"]}, seconds=1.5)
    assert v.refused and v.refused_ops == ("aten::index_add_",) and v.message and "\n" not in v.message
    assert "aten::index_add_ (no user frame)" in v.message and "aten::put_" not in v.message
    assert v.findings == found and v.allowed_ops == ("aten::put_",) and v.seconds == 1.5
    only_put = AuditFindings(ops_seen=10, nondeterministic_ops=ops[:1])
    allowed = audit.judge(only_put, {"allow_nondeterministic_ops": ["put_"]})
    assert not allowed.refused and allowed.message is None and allowed.refused_ops == ()


def test_an_audit_that_did_not_complete_refuses_the_run_in_one_line():
    v = audit.not_completed(137)
    assert v.refused and v.findings is None and v.message and "exit status 137" in v.message
    assert "\n" not in v.message and "determinism.audit=false" in v.message


def test_switches_user_code_changed_are_named_and_unset_ones_ignored():
    profile = {"cudnn_benchmark": False, "allow_tf32": False, "deterministic_algorithms": None}
    flags = {
        "cudnn_benchmark": True,
        "matmul_allow_tf32": False,
        "cudnn_allow_tf32": True,
        "deterministic_algorithms": False,
    }
    assert audit.switched(profile, flags) == [
        SwitchedFlag(switch="cudnn_benchmark", profile=False, in_force=True),
        SwitchedFlag(switch="cudnn_allow_tf32", profile=False, in_force=True),
    ]
    assert (
        audit.mode({"audit": True}) == "on"
        and audit.mode({}) == "off"
        and audit.mode({"audit": "only"}) == "only"
    )


def test_first_difference_names_the_first_operation_whose_output_differs():
    a = [
        {"i": 0, "op": "aten::t", "out": "1"},
        {"i": 1, "op": "aten::randn", "module": "net.1 (Noise)", "where": "x.py:3", "out": "2"},
    ]
    b = [dict(a[0]), {**a[1], "out": "3"}]
    d = op_traces.first_difference(a, b)
    assert d["index"] == 1 and d["line"].startswith("#1 aten::randn in net.1 (Noise) at x.py:3: output")
    assert op_traces.first_difference(a, a) is None
    assert op_traces.first_difference(a, a[:1])["kind"] == "length"
    assert (
        op_traces.first_difference(a, [a[0], {**a[1], "op": "aten::rand"}])["kind"] == "different operations"
    )
    assert op_traces.trace_steps({"fingerprints": {"trace_steps": [3, 1, 3, 0, True]}}) == [1, 3]
    assert (
        op_traces.step_of(op_traces.file_name(12)) == 12
        and op_traces.step_of("op-trace-step-1.jsonl") is None
    )


def test_a_trace_hashes_no_uninitialised_memory(tmp_path):
    """``torch.empty`` and ``set_`` hold whatever bytes were there: hashing them would name them as
    the first difference between any two runs. They are traced, without a hash; computed ops are hashed."""
    import torch

    from runner.worker.op_trace import TraceMode

    with TraceMode(tmp_path, []) as mode:
        buf = torch.empty(64)
        torch.zeros(0).set_(buf.untyped_storage())
        torch.ones(4).add(1)
    outs = {r["op"]: r["out"] for r in mode.rows}
    assert outs["aten::empty"] is None and outs["aten::set_"] is None
    assert outs["aten::add"] is not None
