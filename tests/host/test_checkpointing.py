"""Resume machinery without Docker: the mnist experiment run by the real worker (``python -m
runner.worker`` with a ``job.json``, started as the host backend starts it, world size 1), stopped
at a chosen step, resumed from its last checkpoint — mid-epoch and right after an epoch's last
batch — and compared bit for bit with a run never stopped. Plus the pure parts: the sampler's
resume position and the signal deferral the cleanup path relies on."""

from __future__ import annotations

import dataclasses
import os
import signal
from pathlib import Path

import pytest

from runner.core import fingerprints, layout, spec, worker_io
from runner.core.layout import latest_checkpoint
from runner.flows.cli_common import compose
from runner.host import records
from runner.host.executors import HostBackend, Workload
from runner.host.interrupts import deferred
from tests.conftest import ROOT

DATA = Path("/usr/share/datasets/fashion-mnist")
MAX_STEPS = 40
# 1024 samples / batch 64 = 16 steps an epoch; checkpoints at 8 (mid-epoch), 16 (epoch end), 24, 32
OVERRIDES = [
    "model.train_samples=1024",
    "trainer.max_epochs=3",
    "model.dropout=0.25",
    "launch.processes=1",
    "launch.backend=host",
    "launch.checkpoint_every_n_steps=8",
    "fingerprints.every_k_steps=4",
]
needs_data = pytest.mark.skipif(
    not (DATA / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not installed"
)


def _worker(run_dir: Path, max_steps: int = MAX_STEPS, resume: Path | None = None) -> list[str]:
    """Train in ``run_dir`` with the real worker, as ``HostBackend`` runs it for the launcher: the
    plan's ``job.json`` (``resume``: the checkpoint to continue from), the plan's environment, the
    output in ``logs/train.log``. Returns the output's last lines; a failed run fails the test."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(compose([*OVERRIDES, f"trainer.max_steps={max_steps}"]), resolve=True)
    plan = spec.plan_run(cfg, run_dir, ROOT, spec.Host(os.environ, os.getuid(), os.getgid()))
    job = plan.job_document(str(run_dir), str(ROOT), str(DATA), dataset_files=cfg["dataset"]["files"])
    job = dataclasses.replace(job, resume=str(resume) if resume else None)
    run_dir.mkdir(parents=True, exist_ok=True)
    worker_io.write(run_dir / layout.WORKER_REQUEST, job)
    done = HostBackend().run(Workload(plan, ROOT, DATA), echo=lambda line: None)
    assert done.exit_code == 0, "\n".join(done.log_tail)
    return done.log_tail


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """A run never stopped."""
    run_dir = tmp_path_factory.mktemp("whole")
    _worker(run_dir)
    return run_dir


@needs_data
@pytest.mark.parametrize("stop_at, from_step", [(13, 8), (21, 16)], ids=["mid-epoch", "after-epoch-end"])
def test_a_resumed_run_is_bit_identical(whole, tmp_path, stop_at, from_step):
    cut = tmp_path / "cut"
    _worker(cut, max_steps=stop_at)  # stops at stop_at, past its last checkpoint, with rows after it
    assert fingerprints.last_step(records.read_fingerprints(cut)) == stop_at
    step, ckpt = latest_checkpoint(cut / layout.CHECKPOINT_DIR)
    assert step == from_step
    log = _worker(cut, resume=ckpt)
    assert any(f"Restored all states from the checkpoint at {ckpt}" in line for line in log), (
        log
    )  # not a fresh start
    assert (cut / layout.OUTPUTS_DIR / "model.pt").read_bytes() == (
        whole / layout.OUTPUTS_DIR / "model.pt"
    ).read_bytes()
    assert (cut / layout.FINGERPRINTS).read_text() == (whole / layout.FINGERPRINTS).read_text()
    assert fingerprints.last_step(records.read_fingerprints(cut)) == MAX_STEPS


def test_sampler_resumes_mid_epoch_and_starts_the_next_epoch_whole():
    from experiments.mnist import EpochBatches

    s = EpochBatches(n=1024, batch_size=64, world=1)
    assert len(s) == 16 and list(s) == list(range(16))
    s.resume_at(epoch=2, batches_done=5)
    assert len(s) == 16, "Lightning counts the batches trained before the checkpoint towards the epoch"
    assert list(s) == list(range(5, 16)) and list(s) == list(range(16))  # one pass only
    s.resume_at(epoch=2, batches_done=16)
    assert list(s) == list(range(16))


def test_a_signal_inside_deferred_waits_for_the_block():
    with pytest.raises(KeyboardInterrupt), deferred() as d:  # redelivered once the block is done
        signal.raise_signal(signal.SIGINT)
        done = True  # still reached: the interrupt waited
    assert done and d.pending == [signal.SIGINT]

    with deferred(redeliver=False) as d:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
    assert d.pending == [signal.SIGINT, signal.SIGTERM]  # dropped: nothing raised
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_nested_deferral_hands_the_signal_to_the_outer_block():
    with deferred(redeliver=False) as outer:
        with deferred() as inner:
            signal.raise_signal(signal.SIGINT)
        assert inner.pending == [signal.SIGINT] and outer.pending == [signal.SIGINT]
