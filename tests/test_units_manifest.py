"""manifest: written whole or not at all, read back only through the schema."""

from __future__ import annotations

import json
import os

import pytest

from runner.core import manifest
from runner.core.errors import RunnerError
from runner.host import records


def record(**over) -> dict:
    r = {
        "schema_version": manifest.SCHEMA_VERSION, "run_id": "r-1", "status": "completed", "exit_code": 0,
        "command": ["python", "-m", "runner"], "overrides": ["seed=1"], "config": {"seed": 1},
        "experiment": {"target": "experiments.mnist:train"}, "containerized": True, "launch": {"backend": "docker"},
        "environment": {"PYTHONHASHSEED": "0"}, "determinism": {"profile": {"name": "strict"}, "seed": 1},
        "host": {"cpu": {"model": "x"}}, "outputs": {"model.pt": {"sha256": "a" * 64, "bytes": 3}},
        "timings": {"started": 1.0, "finished": 2.0, "total_seconds": 1.0},
    }  # fmt: skip
    r.update(over)
    return r


def test_write_then_read_round_trips(tmp_path):
    m = manifest.Manifest.model_validate(record())
    path = records.write_manifest(tmp_path, m)
    assert path == tmp_path / "manifest.json"
    back = records.read_manifest(path)
    assert back.digest and back.model_copy(update={"digest": None}) == m and records.read_manifest(tmp_path) == back
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
    assert env == {"AWS_SECRET_ACCESS_KEY": manifest.REDACTED, "HF_TOKEN": manifest.REDACTED, "OMP_NUM_THREADS": "1"}
