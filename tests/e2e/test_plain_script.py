"""A plain script not written for the runner (it spawns its own gloo processes) runs as an
experiment: its outputs are in the manifest, two runs are bit-identical, and the seed reaches it."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.host.hashing import sha256_file
from tests.conftest import manifest, run_runner

pytestmark = pytest.mark.docker

QUICK = ["experiment=plain_script", "experiment.args=[--steps,12,--samples,2048,--hidden,16]"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two runs of the same config (a, b) and one with another seed (s)."""
    base = tmp_path_factory.mktemp("plain")
    out = {}
    for name, extra in (("a", []), ("b", []), ("s", ["seed=11"])):
        out[name] = base / name
        proc = run_runner(f"hydra.run.dir={out[name]}", *QUICK, *extra)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_the_script_runs_and_its_outputs_are_recorded(runs):
    m = manifest(runs["a"])
    assert m["status"] == "completed" and m["experiment"]["script"] == "experiments/plain_script/train.py"
    assert m["experiment"]["args"] == ["--steps", "12", "--samples", "2048", "--hidden", "16"]
    assert set(m["outputs"]) == {"model.pt", "metrics.json"}
    assert m["outputs"]["model.pt"]["sha256"] == sha256_file(runs["a"] / "outputs" / "model.pt")
    assert m["metrics"]["steps"] == 12 and m["metrics"]["train_loss"] > 0  # from the script's metrics.json
    assert m["data"]["name"] == "fashion_mnist" and m["environment"]["ATEN_CPU_CAPABILITY"] == "avx2"
    assert any(p.lower().startswith("torch==") for p in m["packages"])


def test_two_runs_are_bit_identical(runs):
    a, b = manifest(runs["a"]), manifest(runs["b"])
    assert a["outputs"] == b["outputs"] and a["metrics"] == b["metrics"]


def test_the_seed_reaches_the_script(runs):
    s = manifest(runs["s"])
    assert s["determinism"]["seed"] == 11
    assert s["outputs"]["model.pt"] != manifest(runs["a"])["outputs"]["model.pt"]
