"""The worker's contracts: ``job.json``, ``result.json`` and ``audit/audit.json`` read back exactly what
was written, any other shape is refused in one line naming the field, and the shapes on disk stay
the ones recorded workers read and write."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.core import worker_io
from runner.core.worker_io import (
    AuditFindings,
    AuditVerdict,
    ContractError,
    Experiment,
    NondeterministicOp,
    SwitchedFlag,
    WorkerPaths,
    WorkerRequest,
    WorkerResult,
)

# -- strategies -------------------------------------------------------------------------------------------
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=6), json_values, max_size=4)
names = st.text(min_size=1, max_size=12)
counts = st.integers(min_value=0, max_value=2**40)
seconds = st.none() | st.floats(min_value=0, max_value=1e6)

experiments = st.builds(
    Experiment,
    kind=st.sampled_from(["target", "script", "module"]),
    entry=names,
    args=st.lists(st.text(max_size=6), max_size=4).map(tuple),
    launcher=st.sampled_from(["python", "torchrun"]),
    nproc_per_node=st.none() | st.integers(min_value=1, max_value=64),
    name=st.none() | names,
)
requests = st.builds(
    WorkerRequest,
    run_id=names,
    paths=st.builds(WorkerPaths, names, names, names),
    experiment=experiments,
    config=json_objects,
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    world_size=st.integers(min_value=1, max_value=1024),
    accelerator=st.sampled_from(["cpu", "gpu"]),
    determinism=json_objects,
    precision=st.none() | json_objects,
    dataset_files=st.dictionaries(names, names, max_size=3),
    nodes=st.integers(min_value=1, max_value=16),
    fingerprint_every=st.integers(min_value=1, max_value=1000),
    checkpoint_every=counts,
    resume=st.none() | names,
)
results = st.builds(
    WorkerResult,
    metrics=json_objects,
    train_seconds=seconds,
    flags=st.none() | json_objects,
    process=st.none() | json_objects,
    packages=st.lists(names, max_size=4).map(tuple),
)
ops = st.builds(
    NondeterministicOp, op=names, where=st.none() | names, in_backward=st.booleans(), calls=counts
)
findings = st.builds(
    AuditFindings,
    ops_seen=counts,
    nondeterministic_ops=st.lists(ops, max_size=3).map(tuple),
    switched=st.lists(st.builds(SwitchedFlag, names, st.booleans(), json_values), max_size=3).map(tuple),
    flags_after_step=json_objects,
    device=names,
)
verdicts = st.builds(
    AuditVerdict,
    findings=st.none() | findings,
    refused=st.booleans(),
    message=st.none() | st.text(max_size=30),
    allowed_ops=st.lists(names, max_size=3).map(tuple),
    refused_ops=st.lists(names, max_size=3).map(tuple),
    seconds=seconds,
)
DOCUMENTS = [
    (requests, WorkerRequest),
    (results, WorkerResult),
    (findings, AuditFindings),
    (verdicts, AuditVerdict),
    (experiments, Experiment),
]


def _through_text(doc):
    """``doc`` as written to disk and parsed back, as the other side reads it."""
    return json.loads(json.dumps(doc.to_json()))


# -- round trips ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("strategy", "cls"), DOCUMENTS, ids=[c.__name__ for _, c in DOCUMENTS])
def test_every_document_reads_back_as_it_was_written(strategy, cls):
    @settings(max_examples=150, deadline=None)
    @given(strategy)
    def check(doc):
        assert cls.from_json(_through_text(doc)) == doc

    check()


@given(requests)
@settings(max_examples=50, deadline=None)
def test_a_request_written_to_a_file_is_the_request_read_from_it(tmp_path_factory, request_):
    path = tmp_path_factory.mktemp("job") / "job.json"
    worker_io.write(path, request_)
    assert worker_io.read(path, WorkerRequest.from_json) == request_


# -- refusals ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [WorkerRequest, WorkerResult, AuditFindings, AuditVerdict, Experiment])
@given(value=json_values)
@settings(max_examples=100, deadline=None)
def test_any_json_document_is_read_or_refused_in_one_line(cls, value):
    try:
        cls.from_json(value)
    except ContractError as exc:
        assert "\n" not in str(exc) and str(exc)


@given(request_=requests, data=st.data())
@settings(max_examples=150, deadline=None)
def test_a_request_with_any_field_changed_is_read_or_refused_naming_the_document(request_, data):
    doc = _through_text(request_)
    key = data.draw(st.sampled_from(sorted(doc)))
    doc[key] = data.draw(json_values)
    try:
        WorkerRequest.from_json(doc)
    except ContractError as exc:
        assert str(exc).startswith("job.json") and "\n" not in str(exc)


REQUIRED = ["run_id", "paths", "experiment", "config", "seed", "world_size", "accelerator", "determinism"]


@pytest.mark.parametrize("key", REQUIRED)
def test_a_request_missing_a_required_field_names_it(key):
    doc = _through_text(_request())
    del doc[key]
    with pytest.raises(ContractError, match=rf"^job.json: {key} is missing$"):
        WorkerRequest.from_json(doc)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"seed": "0"}, r"job.json: seed must be an integer >= 0, got a string \"0\""),
        ({"seed": True}, r"job.json: seed must be an integer >= 0, got a boolean true"),
        ({"world_size": 0}, r"job.json: world_size must be an integer >= 1"),
        ({"accelerator": "tpu"}, r"accelerator must be cpu or gpu, got 'tpu'"),
        ({"paths": {"run_dir": "/job", "code_dir": "/code"}}, r"job.json: paths: data_dir is missing"),
        ({"paths": ["/job"]}, r"job.json: paths must be an object, got a list"),
        ({"dataset_files": {"train": 3}}, r"dataset_files must map names to paths"),
        ({"experiment": {"target": "a:b", "script": "b.py"}}, r"experiment: must name exactly one of"),
        (
            {"experiment": {"script": "b.py", "launcher": "mpirun"}},
            r"launcher must be one of python, torchrun",
        ),
        (
            {"experiment": {"module": "m", "nproc_per_node": 0}},
            r"nproc_per_node must be an integer >= 1, got a number 0",
        ),
        ({"config": None}, r"job.json: config must be an object, got null"),
    ],
)
def test_a_malformed_request_is_refused_naming_the_field(change, match):
    with pytest.raises(ContractError, match=match):
        WorkerRequest.from_json({**_through_text(_request()), **change})


def test_a_file_that_is_not_json_is_refused_naming_it(tmp_path):
    path = tmp_path / "result.json"
    path.write_text('{"metrics": {"acc": 0.9')  # torn mid-write
    with pytest.raises(ContractError, match=rf"^{path}: not a JSON document"):
        worker_io.read(path, WorkerResult.from_json)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ContractError, match="not a JSON document"):
        worker_io.read(path, WorkerResult.from_json)
    path.write_text('{"metrics": [1, 2]}')
    with pytest.raises(ContractError, match=rf"^{path}: metrics must be an object, got a list$"):
        worker_io.read(path, WorkerResult.from_json)


# -- the shapes on disk -----------------------------------------------------------------------------------
def _request(**over) -> WorkerRequest:
    fields = {
        "run_id": "r-1",
        "paths": WorkerPaths("/job", "/code", "/data"),
        "experiment": Experiment("target", "experiments.mnist:train", name="mnist_ddp"),
        "config": {"seed": 0, "fingerprints": {"every_k_steps": 5}},
        "seed": 0,
        "world_size": 2,
        "accelerator": "cpu",
        "determinism": {"name": "strict", "audit": True},
        "precision": {"name": "fp32", "lightning": "32-true"},
        "dataset_files": {"train_images": "train-images-idx3-ubyte.gz"},
        "fingerprint_every": 5,
    }
    return WorkerRequest(**{**fields, **over})


# job.json as the host wrote it before the contract was typed (runner.core.spec.RunPlan.job_document)
RECORDED_JOB = {
    "run_id": "mnist_ddp-0a1b2c3d",
    "paths": {"run_dir": "/job", "code_dir": "/code", "data_dir": "/data"},
    "experiment": {
        "name": "plain_script",
        "target": None,
        "script": "experiments/plain_script/train.py",
        "module": None,
        "launcher": "torchrun",
        "nproc_per_node": None,
        "args": ["--steps", "30"],
    },
    "config": {"seed": 3, "trainer": {"max_steps": 30}},
    "seed": 3,
    "world_size": 2,
    "nodes": 1,
    "accelerator": "cpu",
    "determinism": {"name": "strict", "audit": True},
    "precision": None,
    "dataset_files": {"train_images": "train-images-idx3-ubyte.gz"},
    "fingerprint_every": 10,
    "checkpoint_every": 0,
    "resume": None,
}


def test_a_job_file_of_the_earlier_shape_is_read_and_written_back_with_the_keys_workers_read():
    request = WorkerRequest.from_json(RECORDED_JOB)
    assert (request.experiment.kind, request.experiment.entry) == (
        "script",
        "experiments/plain_script/train.py",
    )
    assert request.experiment.args == ("--steps", "30") and request.experiment.launcher == "torchrun"
    again = request.to_json()
    # what a recorded worker (in a replayed snapshot) reads, and fields added since at their defaults
    assert set(again) == set(RECORDED_JOB) | {"keep_checkpoints"} and again["keep_checkpoints"] == 2
    assert {k: v for k, v in again.items() if k not in ("experiment", "keep_checkpoints")} == {
        k: v for k, v in RECORDED_JOB.items() if k != "experiment"
    }
    exp = again["experiment"]
    assert (exp["script"], exp["target"], exp["module"], exp["args"]) == (
        "experiments/plain_script/train.py",
        None,
        None,
        ["--steps", "30"],
    )


def test_an_older_job_file_gets_the_defaults_of_fields_added_since_and_unknown_keys_are_ignored():
    old = {
        k: v for k, v in RECORDED_JOB.items() if k not in ("nodes", "precision", "checkpoint_every", "resume")
    }
    request = WorkerRequest.from_json({**old, "added_by_a_newer_host": 1})
    assert (request.nodes, request.precision, request.checkpoint_every, request.resume) == (1, None, 0, None)


def test_a_config_section_is_an_experiment_with_its_arguments_as_a_command_line_sees_them():
    section = {"name": "s", "target": None, "script": "t.py", "args": ["--steps", 30, 0.5], "schemas": {}}
    exp = Experiment.from_json(section)
    assert exp == Experiment("script", "t.py", args=("--steps", "30", "0.5"), name="s")
    assert exp.program and exp.describe() == "t.py"
    assert Experiment("module", "pkg.train", launcher="torchrun").describe() == "torchrun -m pkg.train"
    assert not Experiment("target", "m:f").program


def test_results_and_audits_of_the_earlier_shapes_are_read():
    result = WorkerResult.from_json({"metrics": {"acc": 0.9}, "train_seconds": 3, "flags": {"x": True}})
    assert result == WorkerResult(metrics={"acc": 0.9}, train_seconds=3.0, flags={"x": True})
    refused = {"refused": True, "message": "determinism audit: the audit step did not complete"}
    assert AuditVerdict.from_json(refused) == AuditVerdict(None, True, refused["message"])
    judged = {
        "ops_seen": 12,
        "nondeterministic_ops": [{"op": "aten::put_", "where": "m.py:3", "in_backward": False, "calls": 2}],
        "switched": [],
        "flags_after_step": {"deterministic_algorithms": True},
        "device": "cpu",
        "allowed_ops": [],
        "refused_ops": ["aten::put_"],
        "refused": True,
        "message": "stop",
    }  # written before the audit recorded its seconds
    verdict = AuditVerdict.from_json(judged)
    assert verdict.findings and verdict.findings.nondeterministic_ops == (
        NondeterministicOp("aten::put_", "m.py:3", calls=2),
    )
    twin_keys = {"twin": None, "data": None, "data_checked": False, "rank": 0}  # added by the twin step
    scope = {"scope": "step"}  # added with the audit of scripts: an older record is a step's
    assert verdict.seconds is None and verdict.to_json() == {**judged, "seconds": None, **twin_keys, **scope}


# -- the worker's side ------------------------------------------------------------------------------------
def test_the_worker_reads_its_request_and_the_old_dict_still_answers_with_a_warning(tmp_path, monkeypatch):
    from runner.worker.context import RunContext

    request = _request(paths=WorkerPaths(str(tmp_path), "/code", "/data"), resume="/job/checkpoints/x.ckpt")
    worker_io.write(tmp_path / "job.json", request)
    monkeypatch.setenv("RUNNER_JOB", str(tmp_path / "job.json"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    ctx = RunContext.current()
    assert ctx.request == request and ctx.run_dir == tmp_path and ctx.resume_checkpoint == request.resume
    assert (ctx.seed, ctx.nodes, ctx.accelerator, ctx.precision) == (0, 1, "cpu", request.precision)
    with pytest.warns(DeprecationWarning, match="RunContext.job is deprecated .*: use RunContext.request"):
        assert ctx.job == _through_text(request)


def test_a_worker_handed_a_malformed_job_file_says_so_in_one_line_and_exits_2(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    job = _through_text(_request())
    job["world_size"] = "two"
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "RUNNER_JOB": str(tmp_path / "job.json"), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "runner.worker"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    where = f"{tmp_path / 'job.json'}: world_size"
    assert done.stderr.strip().splitlines() == [
        f'runner.worker: cannot read the job file: {where} must be an integer >= 1, got a string "two"'
    ]


# -- the host's side --------------------------------------------------------------------------------------
def test_the_host_reads_the_audits_verdict_or_says_in_one_line_why_it_cannot(tmp_path):
    from runner.core import audit_rules
    from runner.core.errors import RunnerError
    from runner.host import records

    assert records.read_audit(tmp_path) is None  # no audit ran
    path = tmp_path / audit_rules.DIR / audit_rules.FILE
    path.parent.mkdir()
    verdict = audit_rules.not_completed(137)
    worker_io.write(path, verdict)
    assert records.read_audit(tmp_path) == verdict
    path.write_text(path.read_text()[:40])  # cut off mid-write
    with pytest.raises(RunnerError, match=r"^not an audit verdict: .*audit.json: not a JSON document") as err:
        records.read_audit(tmp_path)
    assert "\n" not in err.value.message
