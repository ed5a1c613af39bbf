"""Ctrl-C, SIGTERM and `docker stop` against the real engine, and `+resume=RUN_DIR` after them.

An interrupted run leaves no container, a whole manifest that reads `interrupted`, exit status
130; resumed from its last checkpoint it ends bit-identical to a run never interrupted. The
training is short but real (2 DDP ranks, dropout on so torch's RNG matters, several epochs so
the resume lands mid-epoch): 4096 samples → 32 steps an epoch, checkpoints every 10 steps.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest

from runner.core import layout
from runner.core.layout import latest_checkpoint
from tests.conftest import manifest, run_runner
from tests.live_runs import containers_of, finish, last_step, start, wait_for

pytestmark = pytest.mark.docker

STEPS_PER_EPOCH = 32
RESUMABLE = [
    "model.train_samples=4096",
    "trainer.max_steps=96",
    "trainer.max_epochs=3",
    "fingerprints.every_k_steps=4",
    "launch.checkpoint_every_n_steps=10",
    "model.dropout=0.25",
]


def _one_error_line(stderr: str) -> str:
    lines = [x for x in stderr.strip().splitlines() if x.startswith("runner: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def _no_leftovers(engine, run_dir: Path) -> None:
    assert containers_of(engine, run_dir) == [], "a container of the run is still there"
    assert not (run_dir / layout.CLAIM).exists()
    assert not list(run_dir.glob(".manifest.json.*")), "a temporary manifest was left behind"


def _interrupt(run_dir: Path, sig: int, at_step: int, engine, overrides=RESUMABLE, again: int = 0):
    """Start a run, send ``sig`` once its fingerprints reach ``at_step`` (``again`` more times while
    it cleans up); return (exit status, stderr)."""
    proc = start(run_dir, *overrides)
    wait_for(lambda: last_step(run_dir) >= at_step, proc=proc)
    proc.send_signal(sig)
    for _ in range(again):
        time.sleep(0.3)
        proc.send_signal(sig)
    code, _, err = finish(proc)
    return code, err


def test_sigterm_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path, engine):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    reference_run = start(whole, *RESUMABLE)  # side by side with the one that gets interrupted
    code, err = _interrupt(cut, signal.SIGTERM, at_step=36, engine=engine)
    ref_code, _, ref_err = finish(reference_run)
    assert ref_code == 0, ref_err[-3000:]
    assert code == 130 and "interrupted" in _one_error_line(err)
    _no_leftovers(engine, cut)
    m = manifest(cut)
    assert m["status"] == "interrupted" and m["exit_code"] == 130 and m["outputs_partial"] is True
    found = latest_checkpoint(cut / "checkpoints")
    assert found is not None and 0 < found[0] < 96, "no periodic checkpoint before the interrupt"

    p = run_runner(f"+resume={cut}")
    assert p.returncode == 0, p.stderr[-3000:]
    resumed, reference = manifest(cut), manifest(whole)
    assert resumed["status"] == "completed" and resumed["outputs_partial"] is False
    assert resumed["run_id"] == m["run_id"] and resumed["config"] == m["config"]
    (entry,) = resumed["resumes"]
    assert entry["from_step"] == found[0] and entry["checkpoint"] == found[1].name
    assert entry["previous"]["status"] == "interrupted" and entry["container"] != m["launch"]["container"]
    assert entry["from_step"] % STEPS_PER_EPOCH != 0, "checkpoints every 10 steps: the resume lands mid-epoch"
    assert (
        resumed["code"]["snapshot_sha256"] == m["code"]["snapshot_sha256"]
        and resumed["image"]["id"] == m["image"]["id"]
    )
    # the headline: final weights and every step's loss and parameter hash, bit for bit
    assert resumed["outputs"]["model.pt"]["sha256"] == reference["outputs"]["model.pt"]["sha256"]
    assert (cut / "fingerprints.jsonl").read_bytes() == (whole / "fingerprints.jsonl").read_bytes()
    assert resumed["metrics"]["global_step"] == 96
    _no_leftovers(engine, cut)

    p = run_runner(f"+resume={cut}")  # a completed run has nothing left to resume
    assert p.returncode == 2 and "nothing to resume" in p.stderr


def test_repeated_ctrl_c_during_cleanup_still_leaves_a_whole_record(tmp_path, engine):
    run_dir = tmp_path / "run"
    code, err = _interrupt(run_dir, signal.SIGINT, at_step=8, engine=engine, again=4)
    assert code == 130 and "interrupted" in _one_error_line(err)
    _no_leftovers(engine, run_dir)
    m = json.loads((run_dir / "manifest.json").read_text())  # whole JSON, and the schema accepts it
    from runner.host import records

    assert records.read_manifest(run_dir).status == "interrupted" and m["outputs_partial"] is True
    assert m["log_tail"], "the record keeps the end of the training log"


def test_docker_stop_ends_ddp_training_promptly(tmp_path, engine):
    """`docker stop` sends SIGTERM to the worker (PID 1), which stops both DDP ranks: the container
    is gone well before Docker's 10 s SIGKILL, and the runner records how it ended."""
    run_dir = tmp_path / "run"
    proc = start(run_dir, *RESUMABLE[:-2], "trainer.max_steps=2000", "trainer.max_epochs=100")
    wait_for(lambda: last_step(run_dir) >= 8, proc=proc)
    (container,) = containers_of(engine, run_dir)
    assert container.attrs["Config"]["Cmd"] == ["python", "-m", "runner.worker"]  # the worker is PID 1
    t0 = time.monotonic()
    container.stop(timeout=10)
    stopped_after = time.monotonic() - t0
    code, _, err = finish(proc)
    assert stopped_after < 6, f"docker stop took {stopped_after:.1f} s: the worker did not end the ranks"
    m = manifest(run_dir)
    assert code == 1 and m["status"] == "failed" and m["exit_code"] == 143, (code, m["error"])
    assert "SIGTERM" in m["error"] and m["outputs_partial"] is True
    _no_leftovers(engine, run_dir)
