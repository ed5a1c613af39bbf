"""Run dirs are never overwritten, and runners started at once never share a run dir or a container.

The claim is an flock taken before the manifest is looked at: of two runners aimed at one dir,
one runs and the other is refused; runners aimed at dirs with the same name still get their own
run id and container name (random suffix)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runner.core import layout
from runner.core.errors import RunnerError
from runner.host import rundir
from tests.conftest import manifest, run_runner
from tests.live_runs import PROBE, containers_of, finish, probe_args, start, wait_for


def _tree_bytes(root):
    return {p.relative_to(root): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.docker
def test_two_runners_at_once(tmp_path, engine):
    same, other = tmp_path / "a" / "run", tmp_path / "b" / "run"  # same basename: the suffix must differ
    wait = probe_args("report", "--wait", "go")
    procs = [start(same, *PROBE, wait), start(same, *PROBE, wait), start(other, *PROBE, wait)]
    refused = wait_for(lambda: [p for p in procs[:2] if p.poll() is not None], proc=procs[2])
    wait_for(lambda: len(containers_of(engine, same)) == 1 and len(containers_of(engine, other)) == 1)
    (same / "go").touch()
    (other / "go").touch()
    results = [finish(p) for p in procs]

    (loser,) = refused
    code, _, err = results[procs.index(loser)]
    assert code == 2 and "in use by another run" in err and "Traceback" not in err, err[-2000:]
    winner = results[1 - procs.index(loser)]
    assert winner[0] == 0 and results[2][0] == 0, (winner[2][-2000:], results[2][2][-2000:])
    a, b = manifest(same), manifest(other)
    assert a["status"] == b["status"] == "completed"
    assert a["run_id"] != b["run_id"] and a["launch"]["container"] != b["launch"]["container"]
    assert containers_of(engine, same) == [] and containers_of(engine, other) == []


@pytest.mark.docker
def test_a_run_dir_with_a_manifest_is_never_overwritten(tmp_path, engine):
    run_dir = tmp_path / "run"
    p = run_runner(f"hydra.run.dir={run_dir}", *PROBE, probe_args("report"))
    assert p.returncode == 0, p.stderr[-2000:]
    before = _tree_bytes(run_dir)
    again = run_runner(f"hydra.run.dir={run_dir}", *PROBE, probe_args("fail", "5"))
    assert again.returncode == 2 and "never overwritten" in again.stderr and "Traceback" not in again.stderr
    assert _tree_bytes(run_dir) == before, "the refused run changed files in the run dir (Hydra's included)"
    assert containers_of(engine, run_dir) == []


def test_claim_is_exclusive_and_survives_a_killed_holder(tmp_path):
    run_dir = tmp_path / "run"
    fd = rundir.claim_run_dir(run_dir)
    with pytest.raises(RunnerError, match="in use by another run"):
        rundir.claim_run_dir(run_dir)
    rundir.release(run_dir, fd)
    assert not (run_dir / layout.CLAIM).exists()
    # a runner killed while holding the claim: the kernel drops its lock, the file it left is no obstacle
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from runner.host import rundir; "
                f"rundir.claim_run_dir(Path({str(run_dir)!r})); print('held', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunnerError, match="in use"):
        rundir.claim_run_dir(run_dir)
    holder.kill()
    holder.wait()
    assert (run_dir / layout.CLAIM).exists()
    rundir.release(run_dir, rundir.claim_run_dir(run_dir))


def test_only_an_interrupted_failed_or_abandoned_run_is_resumable(tmp_path):
    from runner.host import records
    from tests.run_records import make_run

    for status, ok in (("interrupted", True), ("failed", True), ("running", True), ("completed", False)):
        run_dir = make_run(tmp_path / status, status=status, exit_code=0 if status == "completed" else 1)
        with pytest.raises(RunnerError, match="never overwritten"):
            rundir.claim_run_dir(run_dir)
        if ok:
            rundir.release(run_dir, rundir.claim_run_dir(run_dir, resumable=True))
        else:
            with pytest.raises(RunnerError, match="only an interrupted, failed or abandoned run"):
                rundir.claim_run_dir(run_dir, resumable=True)
        assert records.read_manifest(run_dir).status == status and not (run_dir / layout.CLAIM).exists()
    with pytest.raises(RunnerError, match="no manifest"):
        rundir.claim_run_dir(tmp_path / "empty", resumable=True)


_HOLD = (  # a runner that holds the run dir's claim (as a resume does) until it is killed
    "import sys, time; from pathlib import Path; from runner.host import rundir; "
    "rundir.claim_run_dir(Path(sys.argv[1]), resumable=True); print('held', flush=True); time.sleep(60)"
)


def test_a_running_record_whose_runner_is_gone_reads_abandoned_and_is_never_taken(tmp_path):
    """A record that still says running reads running while a runner holds the dir's claim, and
    abandoned once that runner is gone (SIGKILL: the kernel drops its lock, the claim file stays).
    A new run is refused with the hint to resume; a resume takes it."""
    from runner.host import records
    from tests.run_records import make_run

    run_dir = make_run(tmp_path / "run", status="running", exit_code=0)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert rundir.runner_alive(run_dir) and rundir.run_status(run_dir, "running") == "running"
    with pytest.raises(RunnerError, match="in use"):
        rundir.claim_run_dir(run_dir, resumable=True)
    holder.kill()
    holder.wait()
    assert (run_dir / layout.CLAIM).exists() and not rundir.runner_alive(run_dir)
    assert rundir.run_status(run_dir, records.read_manifest(run_dir).status) == "abandoned"
    assert rundir.run_status(run_dir, "failed") == "failed"
    with pytest.raises(RunnerError, match=rf"abandoned run .* \+resume={run_dir}$"):
        rundir.refuse_held(run_dir)
    with pytest.raises(RunnerError, match=rf"abandoned run .* \+resume={run_dir}$"):
        rundir.claim_run_dir(run_dir)
    rundir.release(run_dir, rundir.claim_run_dir(run_dir, resumable=True))


def _hydra_started(run_dir, log="app.log"):
    (run_dir / ".hydra").mkdir(parents=True)
    for name in rundir.HYDRA_FILES:
        (run_dir / ".hydra" / name).write_text("x: 1\n")
    (run_dir / log).write_text("")


def test_a_run_dir_refused_before_any_write_is_removed_and_any_other_is_kept(tmp_path):
    untouched = tmp_path / "untouched"
    _hydra_started(untouched)
    assert rundir.discard_if_unused(untouched, "app.log") and not untouched.exists()
    # anything beyond Hydra's own files keeps the whole dir: a record, a claim, the user's file
    for extra in (layout.MANIFEST, layout.CLAIM, "notes.txt", ".hydra/edited.yaml"):
        kept = tmp_path / extra.replace("/", "_")
        _hydra_started(kept)
        (kept / extra).write_text("{}")
        before = _tree_bytes(kept)
        assert not rundir.discard_if_unused(kept, "app.log")
        assert _tree_bytes(kept) == before
    other_log = tmp_path / "other_log"
    _hydra_started(other_log, log="train.log")
    assert not rundir.discard_if_unused(other_log, "app.log") and other_log.is_dir()
    assert not rundir.discard_if_unused(tmp_path / "missing", "app.log")


def test_the_resume_point_is_the_newest_checkpoint_the_fingerprints_reach(tmp_path):
    """What +resume starts from, and what an engine-lost line names: a checkpoint past the last
    fingerprint row written (a run killed outright) is not it."""
    from runner.host import records

    ckpts = tmp_path / layout.CHECKPOINT_DIR
    ckpts.mkdir()
    for step in (5, 10):
        (ckpts / f"step-{step:08d}.ckpt").write_bytes(b"x")
    rows = [{"step": s, "loss": 1.0} for s in range(1, 8)]
    (tmp_path / layout.FINGERPRINTS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert records.resume_point(tmp_path) == (5, ckpts / "step-00000005.ckpt")
    (tmp_path / layout.FINGERPRINTS).unlink()  # no fingerprints at all: the newest checkpoint
    assert records.resume_point(tmp_path) == (10, ckpts / "step-00000010.ckpt")


def test_a_run_dir_that_cannot_be_made_is_one_line(tmp_path):
    """Hydra made its dir; the runner's claim is the next write (a dir out of inodes fails here)."""
    (tmp_path / "file").write_text("not a dir")
    with pytest.raises(RunnerError, match=r"^cannot take the run dir .*/file/run: Not a directory$") as exc:
        rundir.claim_run_dir(tmp_path / "file" / "run")
    assert exc.value.exit_code == 2
