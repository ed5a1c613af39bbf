"""A container that dies — non-zero exit, out of memory, killed from outside — leaves a whole record:
status `failed`, the exit code, the log tail, and the outputs written so far, marked partial."""

from __future__ import annotations

import pytest

from runner.core import layout
from tests.conftest import manifest, run_runner
from tests.live_runs import PROBE, containers_of, finish, probe_args, start, wait_for

pytestmark = pytest.mark.docker


def _failed_record(run_dir, stderr: str) -> dict:
    errors = [x for x in stderr.splitlines() if x.startswith("runner: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    m = manifest(run_dir)
    assert m["status"] == "failed" and m["outputs_partial"] is True
    assert "partial.txt" in m["outputs"], "outputs written before the end are kept and hashed"
    assert (run_dir / "outputs" / "partial.txt").read_text() == "written before the end\n"
    assert not (run_dir / layout.CLAIM).exists()
    return m


def test_non_zero_exit_is_recorded_with_code_and_log_tail(tmp_path, engine):
    run_dir = tmp_path / "run"
    p = run_runner(f"hydra.run.dir={run_dir}", *PROBE, probe_args("fail", "3"))
    assert p.returncode == 1
    m = _failed_record(run_dir, p.stderr)
    assert m["exit_code"] == 3 and "status 3" in m["error"]
    assert "probe: failing on purpose" in m["log_tail"]
    assert containers_of(engine, run_dir) == []


def test_out_of_memory_is_recorded_as_such(tmp_path, engine):
    run_dir = tmp_path / "run"
    p = run_runner(f"hydra.run.dir={run_dir}", *PROBE, "launch.mem_limit=96m", probe_args("hog", "1024"))
    assert p.returncode == 1
    m = _failed_record(run_dir, p.stderr)
    assert "out of memory" in m["error"] and "mem_limit=96m" in m["error"], m["error"]
    assert m["exit_code"] == 137 and "probe: allocating" in m["log_tail"]
    assert "did not hold" not in "\n".join(m["log_tail"])
    assert containers_of(engine, run_dir) == []


def test_container_killed_from_outside(tmp_path, engine):
    run_dir = tmp_path / "run"
    proc = start(run_dir, *PROBE, probe_args("wait"))
    (container,) = wait_for(lambda: containers_of(engine, run_dir), proc=proc)
    wait_for(lambda: (run_dir / "outputs" / "partial.txt").exists(), proc=proc)
    container.kill()
    code, _, err = finish(proc)
    assert code == 1
    m = _failed_record(run_dir, err)
    assert m["exit_code"] == 137 and "SIGKILL" in m["error"], m["error"]
    assert any(line.startswith("probe: waiting") for line in m["log_tail"])
    assert containers_of(engine, run_dir) == []


DYING_RANK = [
    "experiment=noisy",
    "experiment.target=tests.data.dying_rank:train",
    "launch.processes=2",
    "determinism=fast",
    "trainer.max_steps=200",
    "+model.die_rank=1",
    "+model.die_step=3",
    "+model.die_code=7",
    "+model.linger=30",
]


def test_one_ddp_rank_dying_stops_the_others_and_fails_the_run(tmp_path, engine):
    """Rank 1 ends with no exception (as a segfault would); rank 0, which would wait for it in a
    collective, is stopped instead (it never ends its 30 s linger), and the run's record is whole:
    failed, rank 1's status, the log line it printed, no weights, nothing left in the engine."""
    run_dir = tmp_path / "run"
    p = run_runner(f"hydra.run.dir={run_dir}", *DYING_RANK, timeout=300)
    assert p.returncode == 1, p.stderr[-3000:]
    errors = [x for x in p.stderr.splitlines() if x.startswith("runner: error:")]
    assert errors == [
        f"runner: error: run failed: training exited with status 7 — see {run_dir}/logs/train.log"
    ]
    m = manifest(run_dir)
    assert m["status"] == "failed" and m["exit_code"] == 7 and m["outputs"] == {}
    log = (run_dir / "logs" / "train.log").read_text()
    assert "rank 1 dies at step 3" in log and "rank 0 lingers at step 3" in log
    assert "rank 0 lingered" not in log
    assert m["fingerprints"]["steps"] < 200  # rank 0 did not train on alone
    assert not containers_of(engine, run_dir) and not (run_dir / layout.CLAIM).exists()


def test_a_rank_failing_because_its_peer_died_is_not_the_runs_status(tmp_path, engine):
    """Rank 0 does not linger: it goes on to its next collective and fails there (status 1,
    its peer gone) at about the time rank 1's end is seen; the run's status is still rank 1's."""
    run_dir = tmp_path / "run"
    p = run_runner(f"hydra.run.dir={run_dir}", *DYING_RANK[:-1], "+model.linger=0", timeout=300)
    assert p.returncode == 1, p.stderr[-3000:]
    m = manifest(run_dir)
    assert m["status"] == "failed" and m["exit_code"] == 7, m["error"]
    assert "rank 1 dies at step 3" in (run_dir / "logs" / "train.log").read_text()
    assert not containers_of(engine, run_dir) and not (run_dir / layout.CLAIM).exists()
