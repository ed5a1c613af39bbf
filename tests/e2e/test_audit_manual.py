"""The twin step of a LightningModule with manual optimization under DDP (2 CPU processes, gloo),
against the real engine: it stays outside DDP's gradient all-reduce, puts back what the step
changed (the learning-rate scheduler the step itself steps included), so the run trains exactly as
it does without the audit; and it names a layer's clock-seeded noise on each rank.
The experiment: tests/data/twin/manual_experiment.py."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT, manifest, run_runner

pytestmark = pytest.mark.docker

SOURCE = "tests/data/twin/manual_experiment.py"
NOISE_LINE = next(
    n for n, text in enumerate((ROOT / SOURCE).read_text().splitlines(), 1) if "torch.randn(" in text
)
MANUAL = [
    "experiment=noisy",
    "experiment.target=tests.data.twin.manual_experiment:train",
    "launch.processes=2",
    "trainer.max_steps=6",
    "fingerprints.every_k_steps=1",
]


def test_the_twin_of_a_manual_ddp_step_leaves_no_trace_in_training(tmp_path):
    for name, audit in (("on", "true"), ("off", "false")):
        proc = run_runner(
            *MANUAL, "+manual=none", f"determinism.audit={audit}", f"hydra.run.dir={tmp_path / name}"
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    on, off = manifest(tmp_path / "on"), manifest(tmp_path / "off")
    assert on["launch"]["world_size"] == 2 and off["audit"] is None
    assert on["audit"]["refused"] is False and on["audit"]["twin"] is None and on["audit"]["ops_seen"] > 0
    assert on["outputs"]["model.pt"]["sha256"] == off["outputs"]["model.pt"]["sha256"]
    assert on["fingerprints"]["sha256"] == off["fingerprints"]["sha256"] and on["fingerprints"]["steps"] == 6
    assert on["metrics"]["train_loss"] == off["metrics"]["train_loss"]


def test_a_manual_ddp_steps_clock_seeded_noise_is_refused_before_training(tmp_path):
    proc = run_runner(*MANUAL, "+manual=clock", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 3, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert f"aten::randn (in encoder.1 (ClockNoise), {SOURCE}:{NOISE_LINE})" in last, last
    m = manifest(tmp_path)
    assert m["exit_code"] == 3 and m["audit"]["refused_ops"] == ["aten::randn"] and m["outputs"] == {}
