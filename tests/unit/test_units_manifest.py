"""manifest: written whole or not at all, read back only through the schema."""

from __future__ import annotations

import json
import os

import pytest
from omegaconf import OmegaConf

from runner.core import fingerprints, manifest, spec
from runner.core import record as run_record
from runner.core.errors import RunnerError, shell_status
from runner.core.run_input import RecordedCode, Resume, RunInput
from runner.core.worker_io import AuditVerdict, WorkerResult
from runner.flows.cli_common import compose
from runner.host import records
from tests.conftest import ROOT
from tests.run_records import record


def test_write_then_read_round_trips(tmp_path):
    m = manifest.Manifest.model_validate(record())
    path = records.write_manifest(tmp_path, m)
    assert path == tmp_path / "manifest.json"
    back = records.read_manifest(path)
    assert (
        back.digest
        and back.model_copy(update={"digest": None}) == m
        and records.read_manifest(tmp_path) == back
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]  # no temp file left


def test_a_failed_write_keeps_the_old_manifest_whole(tmp_path, monkeypatch):
    records.write_manifest(tmp_path, manifest.Manifest.model_validate(record(run_id="old")))
    before = (tmp_path / "manifest.json").read_bytes()

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        records.write_manifest(tmp_path, manifest.Manifest.model_validate(record(run_id="new")))
    assert (tmp_path / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def _read_raw(tmp_path, text: str) -> RunnerError:
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(RunnerError) as info:
        records.read_manifest(tmp_path)
    return info.value


def test_unknown_schema_version_is_refused(tmp_path):
    err = _read_raw(tmp_path, json.dumps(record(schema_version=99)))
    assert "schema version 99" in err.message and err.exit_code == 2


def test_bad_json_is_refused(tmp_path):
    assert "not valid JSON" in _read_raw(tmp_path, '{"schema_version": 1,').message
    assert "expected a JSON object" in _read_raw(tmp_path, "[1, 2]").message


@pytest.mark.parametrize("field", ["run_id", "status", "timings", "determinism"])
def test_missing_fields_are_refused_by_name(tmp_path, field):
    raw = record()
    del raw[field]
    err = _read_raw(tmp_path, json.dumps(raw))
    assert "not a valid manifest" in err.message and field in err.message


def test_malformed_values_are_refused(tmp_path):
    err = _read_raw(tmp_path, json.dumps(record(outputs={"model.pt": {"sha256": "nothex", "bytes": 1}})))
    assert "outputs.model.pt.sha256" in err.message
    err = _read_raw(tmp_path, json.dumps(record(status="maybe")))
    assert "status" in err.message
    err = _read_raw(tmp_path, json.dumps(record(surprise=1)))
    assert "surprise" in err.message


def test_missing_manifest_is_refused(tmp_path):
    with pytest.raises(RunnerError, match="no manifest"):
        records.read_manifest(tmp_path)


def test_secrets_are_redacted():
    env = manifest.redact({"HF_TOKEN": "abc", "AWS_SECRET_ACCESS_KEY": "k", "OMP_NUM_THREADS": "1"})
    assert env == {
        "AWS_SECRET_ACCESS_KEY": manifest.REDACTED,
        "HF_TOKEN": manifest.REDACTED,
        "OMP_NUM_THREADS": "1",
    }


# -- the manifest as a pure function of plan, input, what was gathered and the outcome --------------------
def _plan(tmp_path, backend: str = "docker", **launch):
    cfg = OmegaConf.to_container(compose([f"launch.backend={backend}"]), resolve=True)
    cfg["launch"].update(launch)
    return spec.plan_run(cfg, tmp_path / "run", ROOT, spec.Host({}, 1000, 1000))


def _outcome(status="completed", code=0, **over):
    fields = {
        "ending": run_record.Ending(status, code, None if status == "completed" else "why"),
        "exit_code": code,
        "log_tail": [],
        "result": None,
        "outputs": {},
        "fingerprints": None,
        "finished": 12.5,
    }
    fields.update(over)
    return run_record.RunOutcome(**fields)


def test_a_completed_run_is_recorded_from_its_plan_input_and_outcome(tmp_path):
    plan = _plan(tmp_path, mem_limit="2g")
    inp = RunInput.new(plan.config, ["python", "-m", "runner", "seed=0"], ["seed=0"])
    got = run_record.Gathered(
        started=10.0,
        host={"cpu": {"model": "x"}},
        environment={"HF_TOKEN": "t", "A": "1"},
        image_seconds=0.5,
        container_seconds=2.0,
    )
    text = '{"step": 0, "params_sha256": "a"}\n{"step": 7, "loss": 0.1}\n{"step": "9"}\n{"loss": 1.0}\n{"step": 8'  # noqa: E501 - verbatim data
    rows = fingerprints.parse(text, strict=False)  # as a killed run leaves them: a torn last line
    result = WorkerResult(
        metrics={"acc": 0.9}, train_seconds=1.5, flags={"deterministic": True}, packages=("x==1",)
    )
    out = _outcome(
        result=result,
        outputs={"model.pt": {"sha256": "b" * 64, "bytes": 3}},
        fingerprints=run_record.FingerprintFile("c" * 64, rows),
    )
    m = run_record.build(plan, inp, got, out)
    assert (m.run_id, m.status, m.exit_code, m.error, m.outputs_partial) == (
        plan.run_id,
        "completed",
        0,
        None,
        False,
    )
    assert m.command == inp.command and m.overrides == ["seed=0"] and m.config == plan.config.raw
    assert m.containerized and m.launch["container"] == plan.container_name and m.launch["mem_limit"] == "2g"
    assert m.environment == {"A": "1", "HF_TOKEN": manifest.REDACTED}  # secrets never reach the record
    assert (
        m.determinism.flags == {"deterministic": True}
        and m.metrics == {"acc": 0.9}
        and m.packages == ["x==1"]
    )
    assert (
        m.fingerprints.steps == 7 and m.fingerprints.file == "fingerprints.jsonl"
    )  # only integer steps count
    t = m.timings
    assert (t.started, t.finished, t.total_seconds, t.train_seconds) == (10.0, 12.5, 2.5, 1.5)
    assert (t.image_seconds, t.container_seconds) == (0.5, 2.0)
    assert m.replay_of is None and m.resumes == [] and m.code is None and m.image is None


def test_a_run_stopped_before_anything_was_gathered_still_has_a_whole_record(tmp_path):
    plan = _plan(tmp_path, backend="host")
    got = run_record.Gathered(started=10.0, host={})
    m = run_record.build(
        plan, RunInput.new(plan.config, ["x"], []), got, _outcome("interrupted", 130, finished=11.0)
    )
    assert (m.status, m.exit_code, m.error, m.outputs_partial) == ("interrupted", 130, "why", True)
    assert m.launch["container"] is None and not m.containerized
    assert m.timings.image_seconds is None and m.fingerprints is None and m.data is None
    records.write_manifest(tmp_path, m)
    back = records.read_manifest(tmp_path)
    assert back.model_copy(update={"digest": None}) == m  # the schema takes it back whole


def test_how_a_run_ended_names_the_signal_and_the_memory_limit(tmp_path):
    plan = _plan(tmp_path, mem_limit="1g")
    assert shell_status(-9) == 137 and shell_status(3) == 3
    killed = run_record.ending(run_record.Exited(137, False, False), plan=plan)
    assert (killed.status, killed.exit_code) == ("failed", 1) and "SIGKILL (exit status 137)" in killed.error
    assert run_record.ending(run_record.Exited(137, True, False), plan=plan).error == (
        "killed: out of memory (launch.mem_limit=1g)"
    )
    where = "the kernel killed node 1's container on n2, memory limit 2000m"  # a node's own limit
    assert run_record.ending(run_record.Exited(1, True, False, where), plan=plan).error == (
        f"killed: out of memory ({where})"
    )
    assert (
        run_record.ending(run_record.Exited(2, False, False), plan=plan).error
        == "training exited with status 2"
    )
    refused = AuditVerdict(findings=None, refused=True, message="the audit found nondeterministic operations")
    said = run_record.ending(run_record.Exited(3, False, False), plan=plan, audit=refused)
    assert (said.status, said.exit_code, said.error) == ("failed", 3, refused.message)  # as `runner audit`
    stopped = run_record.ending(run_record.Exited(130, False, True), plan=plan)
    assert (stopped.status, stopped.exit_code) == (
        "interrupted",
        130,
    ) and "container stopped" in stopped.error
    assert run_record.ending(run_record.Exited(0, False, False), plan=plan) == run_record.Ending(
        "completed", 0, None
    )


def test_a_resume_lists_the_attempt_it_continues(tmp_path):
    earlier = {
        "started": 1.0,
        "from_step": 4,
        "checkpoint": "step-00000004.ckpt",
        "run_id": "r-1",
        "command": ["c"],
    }
    prior = manifest.Manifest.model_validate(
        record(
            status="interrupted",
            exit_code=130,
            error="stopped",
            log_tail=[str(i) for i in range(30)],
            launch={"container": "runner-r-1"},
            resumes=[earlier],
        )
    )
    entry = Resume(run_id="r-1", checkpoint="step-00000008.ckpt", from_step=8, command=["c"], started=5.0)
    listed = run_record.resumes(prior, entry, "runner-r-1-resume-abc")
    assert listed[0] == earlier and len(listed) == 2
    last = listed[-1]
    assert last["container"] == "runner-r-1-resume-abc" and last["from_step"] == 8
    assert last["previous"]["status"] == "interrupted" and last["previous"]["container"] == "runner-r-1"
    assert last["previous"]["log_tail"] == [str(i) for i in range(20, 30)]
    code = RecordedCode(tmp_path / "code.tar", "d" * 64)
    inp = RunInput.resumed(prior, code=code, image=None, resume=entry)
    assert inp.kind == "resume" and RunInput.new({}, [], []).kind == "new"
    assert (inp.config, inp.command, inp.replay_of) == (prior.config, prior.command, prior.replay_of)
    assert RunInput.replay({}, [], [], code=code, replay_of={}).kind == "replay"
