"""Replay and diff against the real Docker engine.

The runs train a project that is a temporary git copy of this repository (``RUNNER_PROJECT``), so
the test can edit and commit "the working tree" after the run without touching the real one, and
an image tag of their own (a ``TEST_VARIANT`` build arg), so the test can ``docker rmi`` it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from runner.core import images, numbers
from runner.host.hashing import sha256_file
from tests.conftest import FAST, ROOT, manifest, run_runner
from tests.run_records import resealed

pytestmark = pytest.mark.docker

OWN_TAG = "+image.variants.cpu.build_args.TEST_VARIANT=replay"


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The repository's committed files in a git repo of their own."""
    copy = tmp_path_factory.mktemp("project")
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "HEAD"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(copy)], input=archive, check=True)
    _git(copy, "init", "-q")
    _git(copy, "add", "-A")
    _git(copy, "commit", "-qm", "the project as it was at the run")
    return copy


@pytest.fixture(scope="module")
def runs(project, tmp_path_factory, engine):
    """Run A (seed 0, strict) and run B (seed 1, fast), both in the test's own image tag."""
    base = tmp_path_factory.mktemp("replay")
    out = {}
    for name, extra in (("a", []), ("b", ["seed=1", "determinism=fast"])):
        proc = run_runner(
            f"hydra.run.dir={base / name}", *FAST, OWN_TAG, *extra, env={"RUNNER_PROJECT": str(project)}
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = base / name
    tag = manifest(out["a"])["image"]["tag"]
    assert manifest(out["a"])["image"]["build_args"] == {"TEST_VARIANT": "replay"}
    yield out
    engine.remove_image(tag)


def _replay(target: Path, *args: str, project: Path) -> subprocess.CompletedProcess:
    return run_runner(str(target), *args, module="runner.replay", env={"RUNNER_PROJECT": str(project)})


def test_replay_after_rmi_code_change_and_move_is_bit_identical(runs, project, engine, tmp_path):
    original = manifest(runs["a"])
    tag = original["image"]["tag"]
    assert engine.remove_image(tag) and engine.image_id(tag) is None

    # the tree moves on: training code and Dockerfile edited, committed
    mnist = project / "experiments" / "mnist.py"
    edited = mnist.read_text().replace("lr=self.hparams.lr,", "lr=self.hparams.lr * 2,")
    assert edited != mnist.read_text()
    mnist.write_text(edited)
    with open(project / "Dockerfile.cpu", "a") as f:
        f.write("# edited after the run\n")
    _git(project, "commit", "-qam", "moved on")
    variant = original["config"]["image"]["variants"]["cpu"]
    today = images.plan(variant, "cpu", project, original["image"]["base_id"])
    assert today.tag != tag  # today's tree would build a different image

    moved = tmp_path / "elsewhere" / "run-a"
    shutil.copytree(runs["a"], moved)
    proc = _replay(moved, project=project)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout
    assert "Traceback" not in proc.stderr
    assert "verdict: bit-identical" in proc.stdout and "rebuilt " + tag in proc.stdout.replace("\n", " ")

    (replay_dir,) = (moved / "replays").iterdir()
    r = manifest(replay_dir)
    assert r["replay_of"] == {
        "path": str(moved),
        "run_id": original["run_id"],
        "manifest_sha256": sha256_file(moved / "manifest.json"),
    }
    assert r["status"] == "completed" and r["run_id"] != original["run_id"]
    assert r["image"]["tag"] == tag and r["image"]["built_now"] is True
    assert r["code"]["snapshot_sha256"] == original["code"]["snapshot_sha256"]
    assert r["code"]["commit"] == original["code"]["commit"]
    assert (
        r["outputs"] == original["outputs"]
        and r["fingerprints"]["sha256"] == original["fingerprints"]["sha256"]
    )
    assert r["environment"] == original["environment"] and r["packages"] == original["packages"]
    verdict = json.loads((replay_dir / "verdict.json").read_text())
    assert verdict["bit_identical"] is True and verdict["drift"] == [] and verdict["outputs_compared"] == 1


def test_diff_of_two_seeds_names_the_seed_and_step_zero(runs):
    proc = run_runner(str(runs["a"]), str(runs["b"]), module="runner.diff")
    assert proc.returncode == 1, proc.stderr  # two seeds: outputs differ
    rows = [[cell.strip() for cell in line.split("│")[1:4]] for line in proc.stdout.splitlines()]
    assert ["seed", "0", "1"] in rows, proc.stdout
    assert "first diverging step: step 0: params_sha256" in proc.stdout
    metrics_a = manifest(runs["a"])["metrics"]
    shown = {r[0]: r[1] for r in rows if len(r) == 3 and r[0] in metrics_a}
    assert shown["test_loss"] == numbers.human(metrics_a["test_loss"]) != repr(metrics_a["test_loss"])
    rate = metrics_a[
        "samples_per_s"
    ]  # a rate: 5 significant figures (whole numbers kept), thousands separated
    assert shown["samples_per_s"] == numbers.human(rate, "samples_per_s") and (
        "," in shown["samples_per_s"]
    ) == (rate >= 1000)
    assert sum(ch.isdigit() for ch in shown["samples_per_s"]) <= max(5, len(str(int(rate))))

    proc = run_runner(str(runs["a"]), str(runs["b"]), "--json", module="runner.diff")
    d = json.loads(proc.stdout)
    assert {c["key"]: c["a"] for c in d["sections"]["metrics"]}["test_loss"] == metrics_a[
        "test_loss"
    ]  # every digit
    assert {"key": "seed", "a": 0, "b": 1, "only_in": None} in d["sections"]["config"]
    assert d["first_divergence"]["step"] in (0, 1) and d["first_divergence"]["step"] == 0
    assert any(c["key"] == "profile.name" for c in d["sections"]["determinism"])
    assert d["outputs_identical"] is False and d["sections"]["packages"] == []


def test_tampered_manifest_is_refused_before_anything_runs(runs, tmp_path):
    run = tmp_path / "tampered"
    shutil.copytree(runs["a"], run)
    m = manifest(run)
    m["code"]["snapshot_sha256"] = "0" * 64
    (run / "manifest.json").write_text(
        resealed(m)
    )  # the digest is no signature: the snapshot hash still holds
    proc = run_runner(str(run), module="runner.replay")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip().startswith("runner: error: code snapshot")
        and "does not match the manifest" in proc.stderr
    )
    assert not (run / "replays").exists()


def test_fast_profile_replays_and_env_drift_stops_unless_allowed(runs, project, tmp_path):
    run = tmp_path / "drifted"
    shutil.copytree(runs["b"], run)
    m = manifest(run)
    real_base = m["image"]["base_id"]
    m["image"]["base_id"] = "sha256:" + "0" * 64  # as if the base had been rebuilt since
    m["image"]["tag"] = "runner:cpu-gone0000000000000000"  # and the exact image were gone
    (run / "manifest.json").write_text(resealed(m))

    proc = _replay(run, project=project)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("runner: error: the recorded environment cannot be rebuilt exactly")
    assert f"base image runner-base:bookworm: recorded id sha256:{'0' * 64}, here id {real_base}" in last
    assert "--allow-env-drift" in last and not (run / "replays").exists()

    proc = _replay(run, "--allow-env-drift", "--json", project=project)
    assert "Traceback" not in proc.stderr
    v = json.loads(proc.stdout)
    assert proc.returncode == (0 if v["bit_identical"] else 1), proc.stderr[-2000:]
    assert v["status"] == "completed"
    assert {
        "what": "base image runner-base:bookworm",
        "recorded": f"id sha256:{'0' * 64}",
        "found": f"id {real_base}",
    } in v["drift"]
    assert any("'fast' does not promise identical bits" in n for n in v["notes"])
    assert any("--allow-env-drift" in n for n in v["notes"])
    r = manifest(Path(v["replay"]))
    assert r["replay_of"]["run_id"] == m["run_id"] and r["image"]["base_id"] == real_base
