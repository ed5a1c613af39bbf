"""Resume machinery without Docker: the mnist experiment trained in this process (world size 1),
stopped by an exception at a chosen step, resumed from its last checkpoint — mid-epoch and right
after an epoch's last batch — and compared bit for bit with a run never stopped. Plus the pure
parts: the sampler's resume position and the signal deferral the cleanup path relies on."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from runner.core import layout, spec
from runner.flows.cli_common import compose
from runner.host.interrupts import deferred
from runner.worker import determinism
from runner.worker.job import JobContext, latest_checkpoint
from tests.conftest import ROOT

DATA = Path("/usr/share/datasets/fashion-mnist")
# 1024 samples / batch 64 = 16 steps an epoch; checkpoints at 8 (mid-epoch), 16 (epoch end), 24, 32
OVERRIDES = ["model.train_samples=1024", "trainer.max_steps=40", "trainer.max_epochs=3", "model.dropout=0.25",
             "launch.processes=1", "launch.backend=host", "launch.checkpoint_every_n_steps=8",
             "fingerprints.every_k_steps=4"]  # fmt: skip


class _Stop(Exception):
    pass


def _train(run_dir: Path, monkeypatch, stop_at: int | None = None, resume: str | None = None) -> None:
    """What ``runner.worker`` does for one rank, in this process: job.json, determinism, train()."""
    from omegaconf import OmegaConf
    from pytorch_lightning import Callback

    from experiments import mnist

    cfg = OmegaConf.to_container(compose(OVERRIDES), resolve=True)
    plan = spec.plan_run(cfg, run_dir, ROOT, {}, os.getuid(), os.getgid())
    job = plan.job_document(str(run_dir), str(ROOT), str(DATA), dataset_files=cfg["dataset"]["files"])
    job["resume"] = resume
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / layout.WORKER_REQUEST).write_text(json.dumps(job))
    monkeypatch.setenv("RUNNER_JOB", str(run_dir / layout.WORKER_REQUEST))

    class StopAt(Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == stop_at:
                raise _Stop

    if stop_at is not None:
        plain = JobContext.trainer_kwargs

        def with_stop(self, *a, **k):
            kw = plain(self, *a, **k)
            kw["callbacks"].append(StopAt())
            return kw

        monkeypatch.setattr(JobContext, "trainer_kwargs", with_stop)
    determinism.apply(cfg["determinism"], cfg["seed"])
    try:
        mnist.train(OmegaConf.create(cfg), run_dir)
    finally:
        monkeypatch.undo()


@pytest.mark.skipif(not (DATA / "train-images-idx3-ubyte.gz").is_file(), reason="Fashion-MNIST not installed")
@pytest.mark.parametrize("stop_at, from_step", [(13, 8), (21, 16)], ids=["mid-epoch", "after-epoch-end"])
def test_resume_in_process_is_bit_identical(tmp_path, monkeypatch, stop_at, from_step):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    _train(whole, monkeypatch)
    with pytest.raises(_Stop):
        _train(cut, monkeypatch, stop_at=stop_at)
    step, ckpt = latest_checkpoint(cut / layout.CHECKPOINT_DIR)
    assert step == from_step
    _train(cut, monkeypatch, resume=str(ckpt))
    assert (cut / "outputs" / "model.pt").read_bytes() == (whole / "outputs" / "model.pt").read_bytes()
    assert (cut / "fingerprints.jsonl").read_text() == (whole / "fingerprints.jsonl").read_text()


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
