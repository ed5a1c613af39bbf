"""The core run path against the real Docker engine: `python -m runner` builds or finds the image,
trains the main job in a locked-down container, and records everything in manifest.json."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from runner.core import layout, numbers
from runner.core import manifest as manifest_mod
from runner.host import image_builder, records, snapshot
from runner.host.hashing import sha256_file
from tests.conftest import FAST, ROOT, manifest, run_runner

pytestmark = pytest.mark.docker


def _run(run_dir: Path, *overrides: str) -> dict:
    proc = run_runner(f"hydra.run.dir={run_dir}", *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    (run_dir.parent / f"{run_dir.name}.terminal").write_text(proc.stdout + proc.stderr)  # what a user saw
    return manifest(run_dir)


@pytest.fixture(scope="module")
def twice(tmp_path_factory) -> tuple[Path, Path]:
    """The main job, run twice with the same config (a few steps on 4096 samples)."""
    base = tmp_path_factory.mktemp("core")
    a, b = base / "a", base / "b"
    _run(a, *FAST)
    _run(b, *FAST)
    return a, b


def test_two_runs_of_the_main_job_are_bit_identical(twice):
    a, b = (manifest(d) for d in twice)
    for m in (a, b):
        assert m["status"] == "completed" and m["exit_code"] == 0 and m["error"] is None
        assert "model.pt" in m["outputs"]
    assert a["outputs"] == b["outputs"]
    assert a["fingerprints"]["sha256"] == b["fingerprints"]["sha256"]
    assert a["fingerprints"]["steps"] == 12
    assert a["run_id"] != b["run_id"]
    # the headline hash is the weights file's real hash, not a copied number
    assert a["outputs"]["model.pt"]["sha256"] == sha256_file(twice[1] / "outputs" / "model.pt")


def test_the_terminal_is_quiet_and_the_log_keeps_lightnings_banners(twice):
    """Each rank's Lightning banners go to logs/train.log only; the completion line's numbers read
    as diff's do (5 significant figures, separators for a rate)."""
    terminal = (twice[0].parent / "a.terminal").read_text()
    log = (twice[0] / "logs" / "train.log").read_text()
    banners = ("GPU available:", "TPU available:", "Initializing distributed:", "distributed_backend=")
    for banner in banners:
        assert banner in log and banner not in terminal, banner
    assert "-" * 40 not in terminal and "log_every_n_steps" not in terminal
    m = manifest(twice[0])
    done = next(line for line in terminal.splitlines() if line.startswith("completed "))
    rate = m["metrics"]["samples_per_s"]
    assert f"samples_per_s={numbers.human(rate, 'samples_per_s')}," in done and "e+" not in done
    assert f"test_loss={numbers.human(m['metrics']['test_loss'])}" in done


def _git_state(root: Path) -> dict:
    """The checkout's commit, and whether git sees changes in it, as the test reads them itself."""

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True).stdout

    return {"commit": git("rev-parse", "HEAD").strip(), "dirty": bool(git("status", "--porcelain").strip())}


def test_manifest_records_what_the_issue_lists(twice, engine):
    run_dir = twice[0]
    m = records.read_manifest(run_dir)  # validated against the schema, not only parsed
    assert m.schema_version == manifest_mod.SCHEMA_VERSION
    assert not (run_dir / layout.CLAIM).exists()

    # command line, overrides, resolved config
    assert m.command[-len(FAST) :] == FAST and f"hydra.run.dir={run_dir}" in m.command
    assert m.overrides == FAST
    assert m.config["trainer"]["max_steps"] == 12 and m.config["model"]["train_samples"] == 4096
    assert "${" not in str(m.config)
    assert m.experiment["target"] == "experiments.mnist:train"

    # code: commit, dirty flag, snapshot whose bytes hash to the recorded value
    git = _git_state(ROOT)
    assert m.code.commit == git["commit"] and m.code.dirty == git["dirty"]
    assert m.code.files == len(snapshot.project_files(ROOT)) > 10
    assert sha256_file(run_dir / m.code.snapshot) == m.code.snapshot_sha256

    # image: identity, inputs, base, engine
    img = m.image
    assert img.tag.startswith("runner:cpu-") and img.id == engine.image_id(img.tag)
    assert img.dockerfile_sha256 == sha256_file(ROOT / img.dockerfile)
    assert img.lock_sha256 == sha256_file(ROOT / img.lock)
    assert img.base_ref == "runner-base:bookworm" and img.base_id == engine.image_id(img.base_ref)
    assert img.content_hash.startswith(img.tag.split("-", 1)[1])
    assert img.engine["version"] == engine.version()["version"]

    # packages from inside the image, and the versions the training process ran with
    torch_pkg = [p for p in m.packages if p.lower().startswith("torch==")]
    assert torch_pkg and any(p.lower().startswith("pytorch-lightning==") for p in m.packages)
    assert torch_pkg[0].split("==")[1] == m.process["torch"]
    assert f"pytorch-lightning=={m.process['lightning']}" in [p.lower() for p in m.packages]

    # every variable the runner set, as set, and the flags read back inside the training process
    env = m.environment
    for key, value in {
        "PYTHONHASHSEED": "0",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "ATEN_CPU_CAPABILITY": "avx2",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "NCCL_ALGO": "Ring",
        "NCCL_PROTO": "Simple",
        "NCCL_NVLS_ENABLE": "0",
    }.items():
        assert env[key] == value, key
    flags = m.determinism.flags
    assert flags["deterministic_algorithms"] is True and flags["cudnn_benchmark"] is False
    assert flags["num_threads"] == 1 and flags["cpu_capability"] == "AVX2"
    assert flags["env"]["ATEN_CPU_CAPABILITY"] == "avx2" and flags["env"]["PYTHONHASHSEED"] == "0"
    assert m.determinism.profile["name"] == "strict" and m.determinism.seed == 0

    # host facts
    assert m.host["cpu"]["model"] and "avx2" in m.host["cpu"]["isa_flags"]
    assert m.host["cpu_count"] >= 1 and m.host["kernel"]

    # data: each file with its real hash
    assert m.data.name == "fashion_mnist" and len(m.data.files) == 4
    for name, rec in m.data.files.items():
        assert rec.sha256 == sha256_file(Path(m.data.root) / name)

    # outputs, metrics, timings, status
    assert m.outputs["model.pt"].bytes == (run_dir / "outputs" / "model.pt").stat().st_size
    assert m.metrics["global_step"] == 12 and 0.0 <= m.metrics["test_acc"] <= 1.0
    t = m.timings
    assert t.finished >= t.started and t.total_seconds > 0 and t.train_seconds > 0
    assert m.status == "completed" and m.exit_code == 0


def test_no_container_is_left_behind(twice, engine):
    for d in twice:
        assert engine.containers_labelled("org.runner.run-id", manifest(d)["run_id"]) == []


def test_an_existing_image_is_used_without_a_build(twice, engine, tmp_path):
    """The second run found the image by its content hash; resolving it again sends nothing to build."""
    assert manifest(twice[1])["image"]["built_now"] is False
    assert manifest(twice[1])["image"]["build_seconds"] is None

    from omegaconf import OmegaConf

    from runner.core import spec
    from runner.flows.cli_common import compose
    from runner.host.docker_engine import DockerEngine

    class NoBuild(DockerEngine):
        def build(self, *args, **kwargs):
            raise AssertionError("a build was started although the image exists")

    cfg = OmegaConf.to_container(compose(list(FAST)), resolve=True)
    plan = spec.plan_run(cfg, tmp_path, ROOT, spec.Host(os.environ, os.getuid(), os.getgid()))
    started = time.perf_counter()
    resolved = image_builder.resolve_image(NoBuild(), plan, ROOT, echo=lambda line: None)
    seconds = time.perf_counter() - started
    assert resolved.tag == manifest(twice[1])["image"]["tag"]
    assert resolved.record["built_now"] is False
    assert seconds < 3.0, f"resolving a cached image took {seconds:.2f} s"


@pytest.mark.skipif(os.geteuid() != 0, reason="only root's runs are handed to uid 1000")
def test_outputs_are_owned_by_uid_1000_when_run_as_root(twice):
    run_dir = twice[0]
    assert manifest(run_dir)["launch"]["user"] == "1000:1000"
    written = [p for p in (run_dir / "outputs").rglob("*")] + [run_dir / "fingerprints.jsonl"]
    assert written and all(p.stat().st_uid == 1000 and p.stat().st_gid == 1000 for p in written)


def test_overrides_take_effect(twice, tmp_path):
    run_dir = tmp_path / "my" / "chosen-dir"
    m = _run(run_dir, *FAST, "trainer.max_steps=8", "seed=5")
    assert (run_dir / "manifest.json").is_file() and (run_dir / "outputs" / "model.pt").is_file()
    assert m["config"]["seed"] == 5 and m["determinism"]["seed"] == 5
    assert m["config"]["trainer"]["max_steps"] == 8
    assert m["metrics"]["global_step"] == 8 and m["fingerprints"]["steps"] == 8
    assert m["outputs"]["model.pt"]["sha256"] != manifest(twice[0])["outputs"]["model.pt"]["sha256"]
    # the seed reached the model: its initial weights (step 0's parameter hash) differ from seed 0's
    first = [records.read_fingerprints(d)[0] for d in (run_dir, twice[0])]
    assert first[0]["step"] == first[1]["step"] == 0
    assert first[0]["params_sha256"] != first[1]["params_sha256"]


def test_a_containerized_runs_provenance_names_its_image_lock_base_and_files(twice):
    """Unsigned here (no key set): the envelope is still written, its digests those of the files."""
    import base64
    import json

    from runner.core import provenance
    from runner.host import attest

    run_dir = twice[0]
    m = manifest(run_dir)
    (env,) = attest.read_envelopes(run_dir / layout.PROVENANCE)
    assert env.signatures == []
    st = provenance.read_statement(env, provenance.PROVENANCE_TYPE)
    assert provenance.subject_problems(st, attest.on_disk(run_dir, [s.name for s in st.subject])) == []
    deps = {
        d["name"]: d
        for d in json.loads(base64.b64decode(env.payload))["predicate"]["buildDefinition"][
            "resolvedDependencies"
        ]
    }
    image = m["image"]
    assert (
        "sha256:" + deps["image"]["digest"]["sha256"] == image["id"] and deps["image"]["uri"] == image["tag"]
    )
    assert deps[image["lock"]]["digest"]["sha256"] == image["lock_sha256"]
    assert deps["base-image"]["uri"] == image["base_ref"]
    assert deps["git-commit"]["digest"]["gitCommit"] == m["code"]["commit"]
    assert {f"data/{m['data']['name']}/{n}" for n in m["data"]["files"]} <= set(deps)
