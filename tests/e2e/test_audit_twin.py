"""The determinism audit's twin step, against the real engine: randomness a user brings (a layer's
generator seeded from the clock, an unseeded ``random`` in the step, DataLoader workers seeded from
the clock) is refused before training, in one line naming where; the allow-list lets each run and
the record says so; mnist_ddp and resnet_small pass; and the twin leaves no trace in training.
The experiment: tests/data/twin/twin_experiment.py."""

from __future__ import annotations

import pytest

from tests.conftest import manifest, run_runner

pytestmark = pytest.mark.docker

TWIN = [
    "experiment=noisy",
    "experiment.target=tests.data.twin.twin_experiment:train",
    "launch.processes=1",
    "trainer.max_steps=3",
]

CASES = {  # mode → (the op the refusal names, what the line says of where)
    "clock": ("aten::randn", "in net.1 (ClockNoise), tests/data/twin/twin_experiment.py:35"),
    "random": ("aten::mul", "tests/data/twin/twin_experiment.py:69"),
    "workers": ("dataloader", "Jittered, 1 worker(s): tests/data/twin/twin_experiment.py:55"),
}


@pytest.mark.parametrize("mode", sorted(CASES))
def test_randomness_a_user_brings_is_refused_before_training_unless_allowed(mode, tmp_path):
    op, where = CASES[mode]
    proc = run_runner(*TWIN, f"+twin={mode}", f"hydra.run.dir={tmp_path / 'refused'}")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("runner: error: run failed: determinism audit: "), last
    assert where in last and f"allow_nondeterministic_ops=[{op}]" in last, last
    m = manifest(tmp_path / "refused")
    assert m["status"] == "failed" and m["exit_code"] == 3 and m["outputs"] == {}
    assert m["audit"]["refused"] and m["audit"]["refused_ops"] == [op]
    assert m["fingerprints"] is None or m["fingerprints"]["steps"] == 0  # not one step trained

    proc = run_runner(
        *TWIN,
        f"+twin={mode}",
        f"determinism.allow_nondeterministic_ops=[{op}]",
        f"hydra.run.dir={tmp_path / 'ok'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(tmp_path / "ok")
    assert m["config"]["determinism"]["allow_nondeterministic_ops"] == [op]
    found = m["audit"]["data" if op == "dataloader" else "twin"]
    assert m["audit"]["refused"] is False and found["op"] == op and m["audit"]["allowed_ops"] == [op]
    assert m["timings"]["audit_seconds"] == m["audit"]["seconds"] > 0


def test_a_repeatable_experiment_passes_and_its_batch_is_checked(tmp_path):
    proc = run_runner(*TWIN, "+twin=none", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    a = manifest(tmp_path)["audit"]
    assert a["refused"] is False and a["twin"] is None and a["data"] is None and a["data_checked"] is True


@pytest.mark.parametrize("experiment", ["mnist_ddp", "resnet_small"])
def test_the_shipped_experiments_pass_the_audit(experiment):
    proc = run_runner(f"experiment={experiment}", "model.train_samples=1024", module="runner.audit")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing to refuse" in proc.stdout and "operations seen on cpu, twice" in proc.stdout


def test_the_twin_step_leaves_no_trace_in_training(tmp_path):
    """Two processes (DDP, each rank runs its own twin): the weights, the loss at every step and the
    fingerprints are those of the same run without the audit."""
    common = ["model.train_samples=2048", "trainer.max_steps=6", "fingerprints.every_k_steps=1"]
    for name, audit in (("on", "true"), ("off", "false")):
        proc = run_runner(*common, f"determinism.audit={audit}", f"hydra.run.dir={tmp_path / name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    on, off = manifest(tmp_path / "on"), manifest(tmp_path / "off")
    assert on["audit"]["refused"] is False and off["audit"] is None and on["launch"]["world_size"] == 2
    assert on["outputs"]["model.pt"]["sha256"] == off["outputs"]["model.pt"]["sha256"]
    assert on["fingerprints"]["sha256"] == off["fingerprints"]["sha256"]
    assert on["metrics"]["train_loss"] == off["metrics"]["train_loss"]
