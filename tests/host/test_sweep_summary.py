"""Sweep bookkeeping without an engine: which sweep jobs count as done, grouping by seed, the
summary files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.flows import summary
from runner.flows.summary import JobRecord
from runner.host import sweep_records as sweep
from tests.conftest import run_runner

CFG = {"seed": 0, "model": {"lr": 0.05}, "launch": {"processes": 2, "cpuset_cpus": None, "gpus": 0}}


@pytest.mark.parametrize("flag", ["+resume=true", "+resume=True", "resume=false", "++resume='true'"])
def test_resume_takes_a_run_dir_and_names_the_sweep_setting_otherwise(flag, tmp_path):
    """``+resume`` continues one run; skipping a sweep's completed jobs has a name of its own."""
    proc = run_runner("-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "seed=0,1", flag)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("runner: error:") and "hydra.launcher.skip_completed=true" in lines[0]
    assert not (tmp_path / "sweep").exists()  # refused before Hydra made anything


def test_an_empty_resume_is_refused_in_one_line():
    proc = run_runner("+resume=")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "runner: error: +resume=: +resume needs the run dir to continue (+resume=RUN_DIR)"
    ], proc.stderr[-2000:]


def test_inputs_identity_ignores_the_slot_but_not_the_inputs():
    placed = {
        **CFG,
        "launch": {
            "processes": 2,
            "cpuset_cpus": "1",
            "gpus": 0,
            "slot": {"index": 1, "cpus": "1", "gpus": [], "requested": {"cpuset_cpus": None, "gpus": 0}},
        },
    }
    key = sweep.inputs_key(CFG, ["seed=0"])
    assert sweep.inputs_key(placed, ["seed=0"]) == key
    assert sweep.inputs_key({**CFG, "model": {"lr": 0.1}}, ["seed=0"]) != key
    assert sweep.inputs_key(CFG, ["seed=0", "model.lr=0.05"]) != key
    done = {"status": "completed", "config": placed, "overrides": ["seed=0"]}
    assert sweep.completed_for(done, CFG, ["seed=0"])
    assert not sweep.completed_for({**done, "status": "failed"}, CFG, ["seed=0"])
    assert not sweep.completed_for(done, {**CFG, "seed": 1}, ["seed=0"])


def _job(name, seed, status="completed", metrics=None, overrides=()):
    return JobRecord(
        name,
        Path("/s") / name,
        [f"seed={seed}", *overrides],
        status,
        0 if status == "completed" else 1,
        seed=seed,
        metrics=metrics or {},
    )


def test_summary_groups_jobs_that_differ_only_in_seed():
    jobs = [
        _job("0", 0, metrics={"acc": 0.80, "step": 12}, overrides=["model.lr=0.1"]),
        _job("1", 1, metrics={"acc": 0.84, "step": 12}, overrides=["model.lr=0.1"]),
        _job("2", 0, metrics={"acc": 0.70}, overrides=["model.lr=0.01"]),
        _job("3", 1, status="failed", overrides=["model.lr=0.01"]),
        _job("4", 2, metrics={"acc": 0.74, "note": "text", "flag": True}, overrides=["model.lr=0.01"]),
    ]
    s = summary.summarize(Path("/s"), jobs)
    assert s["counts"] == {"completed": 4, "failed": 1}
    by_lr = {tuple(g["overrides"]): g for g in s["groups"]}
    hi, lo = by_lr[("model.lr=0.1",)], by_lr[("model.lr=0.01",)]
    assert hi["metrics"]["acc"]["mean"] == pytest.approx(0.82) and hi["metrics"]["acc"]["n"] == 2
    assert lo["seeds"] == [0, 2] and lo["metrics"]["acc"]["values"] == [0.70, 0.74]
    assert lo["not_completed"] == [{"name": "3", "status": "failed", "exit_code": 1}]
    assert set(lo["metrics"]) == {"acc"}  # text and booleans are not statistics
    assert [j["name"] for j in s["jobs"]] == ["0", "1", "2", "3", "4"]


def test_summary_files_rebuilt_from_run_dirs(tmp_path):
    """Run dirs with only job_status.json / fingerprints (no manifests) still give both files."""
    for name, seed, code in (("0", 0, 0), ("1", 1, 2), ("10", 2, 0), ("2", 3, 0)):
        d = tmp_path / name
        sweep.write_job_status(d, code, None if code == 0 else "bad seed", [f"seed={seed}"])
        (d / "fingerprints.jsonl").write_text(
            "\n".join(json.dumps({"step": i, "loss": 2.3 - 0.1 * i}) for i in range(1, 6))
            + '\n{"step": 6, "lo'
        )
    (tmp_path / ".superseded" / "0.1").mkdir(parents=True)
    sweep.write_job_status(tmp_path / ".superseded" / "0.1", 1, "old attempt", ["seed=0"])
    proc = run_runner(str(tmp_path), module="runner.summary")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert [j["name"] for j in s["jobs"]] == ["0", "1", "2", "10"]  # job order; set-aside attempts excluded
    assert [j["status"] for j in s["jobs"]] == ["completed", "failed", "completed", "completed"]
    assert s["jobs"][1]["exit_code"] == 2 and s["jobs"][1]["error"] == "bad seed"
    assert summary.read_curve(tmp_path / "0") == [(i, pytest.approx(2.3 - 0.1 * i)) for i in range(1, 6)]
    image = pytest.importorskip("matplotlib.image").imread(tmp_path / "summary.png")
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200


def test_damaged_side_files_do_not_stop_the_summary(tmp_path):
    """A job status that is not a JSON object or not UTF-8, a fingerprint line with a bad step: skipped."""
    for name, status in (
        ("0", b"[1, 2]"),
        ("1", b"\xff\xfe"),
        ("2", b'{"status": "failed", "exit_code": "x"}'),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / sweep.JOB_STATUS_FILE).write_bytes(status)
        assert sweep.read_job_status(tmp_path / name) is None
    (tmp_path / "0" / "fingerprints.jsonl").write_bytes(
        b'{"step": 1, "loss": 2.0}\n{"step": "x", "loss": 1.0}\n{"step": null, "loss": 1.0}\n\xff\n{"step": 2, "loss": 1.5}\n'  # noqa: E501 - verbatim data
    )
    assert summary.read_curve(tmp_path / "0") == [(1, 2.0), (2, 1.5)]
    proc = run_runner(str(tmp_path), module="runner.summary")
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "summary.json").read_text())
    assert [j["status"] for j in s["jobs"]] == ["unknown"] * 3


def test_summary_of_a_missing_dir_is_one_line(tmp_path):
    proc = run_runner(str(tmp_path / "nope"), module="runner.summary")
    assert proc.returncode == 2
    assert proc.stderr.startswith("runner: error: no sweep dir at") and "Traceback" not in proc.stderr
    proc = run_runner(str(tmp_path), module="runner.summary")
    assert proc.returncode == 2 and "holds no run dirs" in proc.stderr


def test_one_build_at_a_time_per_image_tag(tmp_path, monkeypatch):
    """Concurrent runs needing one image: while one holds the tag's build mutex, no other can take it."""
    import subprocess
    import sys

    from runner.host.image_builder import build_mutex

    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path))
    probe = (
        "import fcntl, glob, sys; f = open(glob.glob(sys.argv[1] + '/build-mutexes/*x1*')[0], 'w')\n"
        "try: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError: sys.exit(7)"
    )
    with build_mutex("runner:cpu-x1"):
        assert subprocess.run([sys.executable, "-c", probe, str(tmp_path)]).returncode == 7
    assert subprocess.run([sys.executable, "-c", probe, str(tmp_path)]).returncode == 0


def test_a_job_status_reads_back_as_it_was_written(tmp_path):
    sweep.write_job_status(tmp_path, 2, "bad seed", ["seed=-1"])
    status = sweep.read_job_status(tmp_path)
    assert status == sweep.JobStatus("failed", 2, "bad seed", ("seed=-1",))
    assert json.loads((tmp_path / sweep.JOB_STATUS_FILE).read_text()) == status.to_json()
    sweep.write_job_status(tmp_path, 0, None)  # the first record wins
    assert sweep.read_job_status(tmp_path) == status
