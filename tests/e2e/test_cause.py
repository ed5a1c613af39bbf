"""Naming the cause, against the real engine: a layer with unseeded noise makes two runs diverge,
diff names the step, ``replay --locate`` names that layer's operation; the determinism audit
passes mnist_ddp, stops an op without a deterministic implementation unless allow-listed (and
records it); an edited manifest, and a consistent one whose replay would set another value, are
refused before anything runs."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import manifest, run_runner
from tests.run_records import resealed

pytestmark = pytest.mark.docker

NOISY = ["experiment=noisy", "launch.processes=1", "trainer.max_steps=3", "fingerprints.every_k_steps=1"]


@pytest.fixture(scope="module")
def noisy_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("noisy")
    out = {}
    for name in ("a", "b"):
        # the audit's twin step names the noise before training: allowed, so that the runs train
        allow = "determinism.allow_nondeterministic_ops=[aten::randn]"
        proc = run_runner(*NOISY, allow, "fingerprints.trace_steps=[1]", f"hydra.run.dir={root / name}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = root / name
    return out


def test_two_noisy_runs_diverge_and_diff_names_the_step_and_the_operation(noisy_runs):
    a, b = manifest(noisy_runs["a"]), manifest(noisy_runs["b"])
    assert a["outputs"]["model.pt"]["sha256"] != b["outputs"]["model.pt"]["sha256"]
    assert a["audit"]["refused"] is False and a["audit"]["nondeterministic_ops"] == []  # torch flags no op
    twin = a["audit"]["twin"]  # the twin step found the noise, allowed
    assert (
        twin["op"] == "aten::randn"
        and twin["module"] == "net.1 (Noise)"
        and twin["where"].startswith("experiments/noisy.py:")
    )
    assert list(a["op_traces"]) == ["op-trace-step-00000001.jsonl"]
    proc = run_runner(str(noisy_runs["a"]), str(noisy_runs["b"]), "--json", module="runner.diff")
    assert proc.returncode == 1, proc.stderr  # they differ: 1, as diff(1) says
    d = json.loads(proc.stdout)
    assert d["differs"] is True
    assert d["first_divergence"]["step"] == 1, (
        d
    )  # the first step already differs (weights after it, its loss)
    assert any(
        "first diverging operation" in n and "aten::randn in net.1 (Noise)" in n for n in d["notes"]
    ), d["notes"]


def test_the_plot_of_two_noisy_runs_marks_the_step_diff_names(noisy_runs, tmp_path):
    from PIL import Image

    from tests.host.test_diff_plot import expected_column, marked_column

    png = tmp_path / "noisy.png"
    args = (str(noisy_runs["a"]), str(noisy_runs["b"]))
    proc = run_runner(*args, "--plot", str(png), "--plot-size", "900x450", module="runner.diff")
    assert proc.returncode == 1, proc.stderr
    step = json.loads(run_runner(*args, "--json", module="runner.diff").stdout)["first_divergence"]["step"]
    image = Image.open(png)
    image.load()
    assert image.size == (900, 450) and image.text["runner:first_divergence_step"] == str(step)
    column, height = marked_column(png)
    assert abs(column - expected_column(png, step)) <= 2 and height > 150, (column, height)


def test_locate_names_the_noise_layers_operation(noisy_runs):
    proc = run_runner(str(noisy_runs["a"]), "--locate", "--json", module="runner.replay")
    assert proc.returncode == 1, proc.stderr[-3000:]  # a divergence found
    found = json.loads(proc.stdout)
    assert found["step"] == 1 and found["against"] == "the original's recorded trace"
    diff = found["difference"]
    assert diff["kind"] == "output differs" and diff["a"]["op"] == "aten::randn"
    assert diff["a"]["module"] == "net.1 (Noise)" and diff["a"]["where"].startswith("experiments/noisy.py:")


def test_locate_for_a_run_without_recorded_traces_compares_two_traced_replays(tmp_path):
    """No trace was recorded: two replays traced at the step are compared with each other, and the
    noise, not reproducible on this machine either, shows there (the step found by a full replay
    when none is named is tested in tests/host/test_locate.py)."""
    run = tmp_path / "untraced"
    proc = run_runner(*NOISY, "determinism=fast", f"hydra.run.dir={run}")  # fast: no audit in each replay
    assert proc.returncode == 0 and not manifest(run).get("op_traces"), proc.stderr[-3000:]
    proc = run_runner(str(run), "--locate", "--step", "1", "--json", module="runner.replay")
    assert proc.returncode == 1, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert found["step"] == 1 and found["against"] == "a second replay on this machine"
    diff = found["difference"]
    assert diff["kind"] == "output differs" and diff["a"]["op"] == "aten::randn"
    assert diff["a"]["module"] == "net.1 (Noise)"
    assert [p.rsplit("-", 2)[-2:] for p in found["runs"]] == [["locate", "a"], ["locate", "b"]]


def test_edited_manifest_and_one_whose_replay_would_set_another_value_are_refused(noisy_runs, tmp_path):
    run = tmp_path / "edited"
    shutil.copytree(noisy_runs["a"], run, ignore=shutil.ignore_patterns("replays"))
    m = manifest(run)
    m["environment"]["PYTHONHASHSEED"] = "1"
    (run / "manifest.json").write_text(json.dumps(m, indent=2))  # by hand: the digest no longer matches
    proc = run_runner(str(run), module="runner.replay")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "cannot replay:" in proc.stderr and "was edited after its run" in proc.stderr

    (run / "manifest.json").write_text(resealed(m))  # consistent, but its profile sets PYTHONHASHSEED=0
    proc = run_runner(str(run), module="runner.replay")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    assert (
        "variable PYTHONHASHSEED: recorded 1, here 0 (what the replay would set)"
        in proc.stderr.splitlines()[-1]
    )
    assert not (run / "replays").exists()


def test_audit_finds_nothing_to_refuse_in_mnist_ddp():
    proc = run_runner("launch.processes=1", "model.train_samples=1024", module="runner.audit")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "nothing to refuse" in proc.stdout and "operations seen on cpu, twice" in proc.stdout


def test_strict_run_stops_on_an_op_without_deterministic_implementation_unless_allowed(tmp_path):
    put = [*NOISY, "model.put=true", "model.noise=0"]
    proc = run_runner(*put, f"hydra.run.dir={tmp_path / 'stopped'}")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        "runner: error: run failed: determinism audit: 2 operation(s) without a deterministic"
    )
    assert (
        "aten::put_ (experiments/noisy.py:" in last
        and "allow_nondeterministic_ops=[aten::put,aten::put_]" in last
    )
    m = manifest(tmp_path / "stopped")
    assert m["status"] == "failed" and m["audit"]["refused"] and m["outputs"] == {}

    proc = run_runner(
        *put,
        "determinism.allow_nondeterministic_ops=[aten::put,aten::put_]",
        f"hydra.run.dir={tmp_path / 'allowed'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(tmp_path / "allowed")
    assert m["config"]["determinism"]["allow_nondeterministic_ops"] == ["aten::put", "aten::put_"]
    assert m["audit"]["refused"] is False and {o["op"] for o in m["audit"]["nondeterministic_ops"]} == {
        "aten::put",
        "aten::put_",
    }
    assert m["determinism"]["flags"]["deterministic_warn_only"] is True
