"""Replay holds every setting it runs with to the record: variables before it runs, the switches
read back from torch after."""

from __future__ import annotations

import json

from runner.core import determinism, settings
from runner.core.compare import Drift
from tests.conftest import run_runner
from tests.run_records import make_run, resealed


def test_every_variable_is_compared_both_ways_and_secrets_match_any_value():
    recorded = {
        "PYTHONHASHSEED": "1",
        "OMP_NUM_THREADS": "1",
        "API_TOKEN": "<redacted>",
        "RUNNER_JOB": "/a/job.json",
    }
    planned = {
        "PYTHONHASHSEED": "0",
        "API_TOKEN": "s3cret",
        "RUNNER_JOB": "/b/job.json",
        "NCCL_NVLS_ENABLE": "0",
    }
    drift = settings.env_drift(recorded, planned)
    assert drift == [
        Drift("variable NCCL_NVLS_ENABLE", "not set", "0 (the replay would set it)"),
        Drift("variable OMP_NUM_THREADS", "1", "not set by the replay"),
        Drift("variable PYTHONHASHSEED", "1", "0 (what the replay would set)"),
    ]
    assert settings.env_drift(planned, planned) == []


def test_flags_read_back_are_compared_key_by_key_including_nested_groups():
    rec = {
        "deterministic_algorithms": True,
        "cudnn_benchmark": False,
        "precision": {"matmul": "highest"},
        "env": {"PYTHONHASHSEED": "0"},
    }
    rep = {
        "deterministic_algorithms": True,
        "cudnn_benchmark": True,
        "precision": {"matmul": "high"},
        "env": {"PYTHONHASHSEED": "1"},
    }
    assert [d.what for d in settings.flag_drift(rec, rep)] == [
        "flag cudnn_benchmark",
        "flag precision.matmul",
    ]
    # a switch only the replay read back (the record predates it) is not held against the record
    assert settings.flag_drift(rec, {**rec, "fill_uninitialized_memory": False}) == []
    assert settings.flag_drift(rec, rec) == [] and settings.flag_drift(None, rep) == []
    assert settings.flag_drift(rec, None)[0].found == "not read back by the replay"


def test_a_consistent_record_whose_replay_would_set_another_value_is_refused(tmp_path):
    """The digest matches (the record was written whole), but its environment says PYTHONHASHSEED=1
    while its own determinism profile sets 0: the replay cannot honour both, and says so."""
    profile = {"name": "strict", "pythonhashseed": 0, "promises_bitwise": True}
    env = {
        **determinism.environment(profile),
        "RUNNER_JOB": "/job/job.json",
        "PYTHONPATH": "/code",
        "HOME": "/tmp",
        "GLOO_SOCKET_IFNAME": "lo",
    }
    run = make_run(tmp_path / "run")
    m = json.loads((run / "manifest.json").read_text())
    m["config"]["determinism"] = profile
    m["determinism"]["profile"] = profile
    m["environment"] = env
    for value, refused in (("0", False), ("1", True)):
        m["environment"] = {**env, "PYTHONHASHSEED": value}
        (run / "manifest.json").write_text(resealed(m))
        proc = run_runner(
            str(run),
            "--out",
            str(tmp_path / f"out{value}"),
            module="runner.replay",
            timeout=120,
            env={"DOCKER_HOST": "unix:///nonexistent.sock"},
        )
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode != 0 and "Traceback" not in proc.stderr
        said = "variable PYTHONHASHSEED: recorded 1, here 0 (what the replay would set)" in last
        assert said == refused, last
        assert not (tmp_path / f"out{value}").exists()
