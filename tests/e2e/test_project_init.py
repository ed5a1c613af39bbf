"""Any git repository is a runner project: ``runner init`` scaffolds it, ``python -m runner
experiment=example`` runs there with its own snapshot and config (no make, no file of this
checkout), a project-level dependency reaches the image and changes its tag, and the wheel
carries the runner's built-in config, Dockerfiles and locks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from runner.core import images
from tests.conftest import ROOT, manifest, run_runner

# The runner under test is this checkout's, whatever the working directory.
RUNNER_ENV = {"PYTHONPATH": str(ROOT), "RUNNER_PROJECT": ""}


def fresh_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(path)], check=True)
    return path


def init(project: Path) -> None:
    proc = run_runner("init", module="runner.cli", cwd=project, env=RUNNER_ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_init_writes_a_project_and_keeps_what_is_there(tmp_path):
    project = fresh_repo(tmp_path / "proj")
    (project / "example_train.py").write_text("print('mine')\n")
    init(project)
    for rel in (
        "conf/config.yaml",
        "conf/experiment/example.yaml",
        "Dockerfile.cpu",
        "images/cpu.in",
        "images/cpu.lock",
    ):
        assert (project / rel).is_file(), rel
    assert (project / "example_train.py").read_text() == "print('mine')\n"  # never overwritten
    assert (project / "images/cpu.lock").read_bytes() == (ROOT / "images/cpu.lock").read_bytes()
    assert "experiment: example" in (project / "conf/config.yaml").read_text()
    assert "runs/" in (project / ".gitignore").read_text().splitlines()  # run dirs stay out of snapshots
    init(project)  # again: nothing written twice
    assert (project / ".gitignore").read_text().splitlines().count("runs/") == 1


def test_init_outside_a_project_is_one_line(tmp_path):
    proc = run_runner("init", module="runner.cli", cwd=ROOT, env=RUNNER_ENV)
    assert proc.returncode == 2 and proc.stderr.startswith("runner: error: runner init works in")


@pytest.mark.docker
def test_init_then_run_the_example_in_a_fresh_repository(tmp_path):
    project = fresh_repo(tmp_path / "proj")
    init(project)
    run_dir = tmp_path / "run"
    proc = run_runner("experiment=example", f"hydra.run.dir={run_dir}", cwd=project, env=RUNNER_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(run_dir)
    assert m["experiment"]["script"] == "example_train.py" and set(m["outputs"]) == {"weights.pt"}
    assert m["image"]["lock"] == "images/cpu.lock" and m["code"]["files"] >= 9
    replay = run_runner(str(run_dir), module="runner.replay", cwd=project, env=RUNNER_ENV)
    assert replay.returncode == 0, replay.stdout[-2000:] + replay.stderr[-2000:]


def test_the_lightning_template_trains_through_the_public_api(tmp_path):
    """The template that shows ``from runner import current`` trains as written (on the host
    backend: the same worker, no engine needed)."""
    project = fresh_repo(tmp_path / "proj")
    init(project)
    assert "from runner import current\n" in (project / "example_lightning.py").read_text()
    run_dir = tmp_path / "run"
    proc = run_runner(
        "experiment=example_lightning",
        "launch.backend=host",
        "launch.processes=1",
        "trainer.max_steps=3",
        f"hydra.run.dir={run_dir}",
        cwd=project,
        env=RUNNER_ENV,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(run_dir)
    assert m["status"] == "completed" and m["metrics"]["global_step"] == 3
    assert set(m["outputs"]) == {"model.pt"}


def test_a_changed_lock_changes_the_image_tag(tmp_path):
    project = fresh_repo(tmp_path / "proj")
    init(project)
    variant = {
        "dockerfile": "Dockerfile.cpu",
        "lock": "images/cpu.lock",
        "base": {"ref": "b:1", "digest": None},
    }
    before = images.plan(variant, "cpu", project, "sha256:" + "b" * 64).tag
    with (project / "images/cpu.lock").open("a") as f:
        f.write("tabulate==0.9.0 \\\n    --hash=sha256:" + "0" * 64 + "\n")
    assert images.plan(variant, "cpu", project, "sha256:" + "b" * 64).tag != before


@pytest.mark.docker
@pytest.mark.slow
def test_a_project_dependency_reaches_the_image(tmp_path):
    """``tabulate`` (not in the runner's own image) added to images/cpu.in, locked, built, imported."""
    project = fresh_repo(tmp_path / "proj")
    init(project)
    with (project / "images/cpu.in").open("a") as f:
        f.write("tabulate\n")
    proc = run_runner("lock", "cpu", module="runner.cli", cwd=project, env=RUNNER_ENV, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tabulate==" in (project / "images/cpu.lock").read_text()
    (project / "uses_dep.py").write_text(
        "import tabulate\nopen('dep.txt', 'w').write(tabulate.__version__)\n"
    )
    run_dir = tmp_path / "run"
    proc = run_runner(
        "experiment=example",
        "experiment.script=uses_dep.py",
        "experiment.args=[]",
        f"hydra.run.dir={run_dir}",
        cwd=project,
        env=RUNNER_ENV,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(run_dir)
    assert (run_dir / "outputs/dep.txt").read_text() and any(
        p.startswith("tabulate==") for p in m["packages"]
    )
    assert m["image"]["lock_sha256"] != images.sha256_bytes((ROOT / "images/cpu.lock").read_bytes())


def test_the_wheel_carries_the_builtin_config_dockerfiles_and_locks(tmp_path):
    src = tmp_path / "src"  # a copy of the tracked tree: the build leaves nothing in this checkout
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True, check=True
    )
    for rel in filter(None, listed.stdout.split("\0")):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(src),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("runner-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for rel in (
        "conf/config.yaml",
        "conf/image/default.yaml",
        "Dockerfile.cpu",
        "images/cpu.lock",
        "images/cpu.in",
    ):
        assert f"runner/_builtin/{rel}" in names, rel
    assert "hydra_plugins/runner_searchpath/__init__.py" in names
    assert not any(n.startswith("experiments/") for n in names)  # this repository's own project code
