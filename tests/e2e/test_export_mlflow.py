"""``runner export mlflow``: a real two-seed sweep (a few steps each, one job replayed) into a real
MLflow SQLite store, read back with ``MlflowClient``; exported again without duplicates; the same
store served by ``mlflow server`` on 127.0.0.1 and listed through its REST API."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runner.core import fingerprints, tracking
from runner.core.compare import flatten
from tests.conftest import ROOT, manifest, run_runner

pytestmark = pytest.mark.docker

SMALL = [
    "trainer.max_steps=4",
    "model.train_samples=512",
    "fingerprints.every_k_steps=2",
    "launch.processes=1",
    "determinism=fast",  # no audit step: a few seconds a job
]


def _export(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return run_runner("export", "mlflow", *args, module="runner.cli", cwd=cwd)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    sweep_dir = tmp_path_factory.mktemp("mlflow") / "seeds"
    proc = run_runner("-m", f"hydra.sweep.dir={sweep_dir}", "seed=0,1", *SMALL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_runner(str(sweep_dir / "0"), module="runner.replay")  # a verdict to export
    assert proc.returncode in (0, 1), proc.stderr[-3000:]  # fast: the bits need not agree
    return sweep_dir


@pytest.fixture(scope="module")
def store(sweep, tmp_path_factory) -> tuple[str, Path]:
    db = tmp_path_factory.mktemp("store") / "mlruns.db"
    uri = f"sqlite:///{db}"
    proc = _export(str(sweep), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("created MLflow run") == 3 and "Traceback" not in proc.stderr
    return uri, db


def _runs(uri: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids))


def test_a_sweep_is_a_parent_run_with_a_child_per_job(sweep, store):
    uri, db = store
    client = MlflowClient(tracking_uri=uri)
    runs = _runs(uri)
    parents = [r for r in runs if tracking.SWEEP_TAG in r.data.tags]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert (
        client.get_experiment(parent.info.experiment_id).name == manifest(sweep / "0")["experiment"]["name"]
    )
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"summary.png", "summary.json"}
    assert parent.info.status == "FINISHED"
    assert (db.parent / "mlartifacts").is_dir()  # the default SQLite layout: artifacts beside the database


def test_each_run_has_its_config_metrics_tags_and_files(sweep, store, tmp_path):
    uri, _ = store
    client = MlflowClient(tracking_uri=uri)
    by_dir = {Path(r.data.tags["runner.run_dir"]): r for r in _runs(uri) if "runner.run_dir" in r.data.tags}
    for job in ("0", "1"):
        m = manifest(sweep / job)
        run = by_dir[(sweep / job).resolve()]
        flat = flatten(m["config"])
        assert run.data.params["seed"] == job and run.data.params["model.lr"] == str(flat["model.lr"])
        assert len(run.data.params) == len(flat)
        rows = fingerprints.parse((sweep / job / "fingerprints.jsonl").read_text(), strict=True)
        history = client.get_metric_history(run.info.run_id, "loss")
        assert [(h.step, h.value) for h in history] == fingerprints.losses(rows)
        assert run.data.metrics["test_acc"] == m["metrics"]["test_acc"]
        assert client.get_metric_history(run.info.run_id, "train_loss")  # Lightning's CSV log, by step
        tags = run.data.tags
        assert tags["runner.run_id"] == m["run_id"] and tags["runner.status"] == "completed"
        assert tags["runner.git_commit"] == m["code"]["commit"]
        assert tags["runner.image_digest"] == (m["image"].get("registry_ref") or m["image"]["id"])
        assert tags["runner.manifest_digest"] == m["digest"] and tags["runner.digest_check"] == "ok"
        verdicts = [json.loads(v.read_text()) for v in (sweep / job).glob("replays/*/verdict.json")]
        expected = {True: "1 same", False: "1 differ"}[verdicts[0]["bit_identical"]] if verdicts else "none"
        assert tags["runner.replays"] == expected and len(verdicts) == (job == "0")
        assert run.info.status == "FINISHED"
        files = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert files == {"manifest.json", "provenance.intoto.jsonl", "outputs.json"}  # weights not copied
        got = client.download_artifacts(run.info.run_id, "outputs.json", str(tmp_path))
        refs = json.loads(Path(got).read_text())
        assert refs["model.pt"]["sha256"] == m["outputs"]["model.pt"]["sha256"]
        assert refs["model.pt"]["uri"] == (sweep / job / "outputs" / "model.pt").resolve().as_uri()


def test_exporting_again_updates_without_duplicates(sweep, store):
    uri, _ = store
    before = {r.info.run_id: r for r in _runs(uri)}
    client = MlflowClient(tracking_uri=uri)
    points = {i: len(client.get_metric_history(i, "loss")) for i in before}
    proc = _export(str(sweep / "1"), str(sweep), "--tracking-uri", uri)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "created" not in proc.stderr and proc.stderr.count("updated MLflow run") == 4
    after = _runs(uri)
    assert {r.info.run_id for r in after} == set(before)
    assert {i: len(client.get_metric_history(i, "loss")) for i in before} == points


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_lists_the_exported_runs_through_its_rest_api(store, tmp_path):
    uri, _ = store
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1"]
        + ["--port", str(port), "--workers", "1", "--default-artifact-root", str(tmp_path / "artifacts")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "MLFLOW_TRACKING_URI": ""},
    )
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{base}/experiments/search?max_results=100", timeout=5) as r:
                    experiments = json.load(r)["experiments"]
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow server did not answer"
                time.sleep(1)
        body = json.dumps({"experiment_ids": [e["experiment_id"] for e in experiments]}).encode()
        request = urllib.request.Request(
            f"{base}/runs/search", body, {"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=10) as r:
            listed = json.load(r)["runs"]
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert {r["info"]["run_id"] for r in listed} == {r.info.run_id for r in _runs(uri)}
    tags = [{t["key"]: t["value"] for t in r["data"].get("tags", [])} for r in listed]
    assert sorted(t.get("runner.seed", "") for t in tags if "runner.run_id" in t) == ["0", "1"]


def test_bad_paths_and_uris_are_one_line(tmp_path):
    proc = _export(str(tmp_path / "nope"), "--tracking-uri", f"sqlite:///{tmp_path}/x.db")
    assert (
        proc.returncode == 2
        and proc.stderr == f"runner: error: no run dir or sweep dir at {tmp_path / 'nope'}\n"
    )
    assert not (tmp_path / "x.db").exists()  # a path that is nothing makes no store
    (tmp_path / "empty").mkdir()
    proc = _export(str(tmp_path / "empty"), "--tracking-uri", f"sqlite:///{tmp_path}/x.db")
    assert proc.returncode == 2 and "holds no run dirs" in proc.stderr and proc.stderr.count("\n") == 1
    proc = _export(str(tmp_path / "empty"), "--tracking-uri", "not a uri")
    assert proc.returncode == 2 and "is not a tracking URI" in proc.stderr and "Traceback" not in proc.stderr
