"""``engine=charliecloud`` end to end, as the unprivileged user (``runner-ci``) who runs the runner:
a strict run gives the very weights Docker gives on the same image, it replays bit-identically, and
an interrupted one resumes to those weights too, leaving no process behind. The training is short
but real (2 DDP ranks, dropout on, into a second epoch so a resume lands mid-epoch)."""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

import pytest

from runner.core.errors import EXIT_INTERRUPTED
from runner.host.charliecloud_engine import CharliecloudEngine
from tests import ci_user
from tests.conftest import manifest, run_runner
from tests.live_runs import finish, last_step, start, wait_for

pytestmark = pytest.mark.docker  # the reference run and the image come from the Docker engine

CONFIG = [
    "model.train_samples=4096",
    "trainer.max_steps=40",
    "trainer.max_epochs=2",
    "fingerprints.every_k_steps=4",
    "launch.checkpoint_every_n_steps=10",
    "model.dropout=0.25",
]
CHARLIECLOUD = ["engine=charliecloud"]
RUN_DIR_LABEL = "org.runner.run-dir"


@pytest.fixture(scope="module")
def scratch():
    path = ci_user.scratch("e2e-ch")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def runs(charliecloud_image, scratch, tmp_path_factory) -> tuple[Path, Path, str]:
    """The same config under Docker as root (the reference) and under Charliecloud as the user,
    side by side; returns both run dirs and what the Charliecloud run printed."""
    docker_dir, ch_dir = tmp_path_factory.mktemp("docker") / "run", scratch / "run"
    docker = start(docker_dir, *CONFIG)
    ch = ci_user.popen_as(sys.executable, "-m", "runner", f"hydra.run.dir={ch_dir}", *CONFIG, *CHARLIECLOUD)
    ch_out, ch_err = ch.communicate(timeout=900)
    code, _, err = finish(docker, timeout=900)
    assert code == 0, err[-3000:]
    assert ch.returncode == 0, ch_err[-3000:]
    return docker_dir, ch_dir, ch_out + ch_err


def _left_behind(run_dir: Path) -> list[str]:
    """The run's containers the engine still lists, and any process still running in a Charliecloud
    container (ch-run marks their environment with ``CH_RUNNING``)."""
    cache = Path(ci_user.account().pw_dir) / ".cache/runner/charliecloud"
    engine = CharliecloudEngine(cache_dir=str(cache))
    left = [c.name for c in engine.containers_labelled(RUN_DIR_LABEL, str(run_dir))]
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and b"\0CH_RUNNING=" in b"\0" + (proc / "environ").read_bytes():
                left.append((proc / "cmdline").read_text().replace("\0", " "))
        except OSError:
            continue
    return left


def test_a_strict_run_under_charliecloud_gives_the_weights_docker_gives(runs):
    docker_dir, run_dir, output = runs
    ch, ref = manifest(run_dir), manifest(docker_dir)
    assert ch["status"] == "completed" and ref["status"] == "completed"
    assert ch["outputs"]["model.pt"] == ref["outputs"]["model.pt"]
    assert ch["fingerprints"]["sha256"] == ref["fingerprints"]["sha256"]
    assert ch["image"]["id"] == ref["image"]["id"] and ch["environment"] == ref["environment"]
    # what Charliecloud is and what it could not enforce: recorded, and said in one line
    assert ch["engine"]["name"] == "charliecloud" and ch["engine"]["rootless"] is True
    assert ch["engine"]["version"] and ch["engine"]["unenforced"] == ["shm_size=1g"]
    said = [line for line in output.splitlines() if "cannot enforce" in line]
    assert len(said) == 1 and "shm_size=1g" in said[0]
    assert ch["launch"]["user"] == f"{ci_user.account().pw_uid}:{ci_user.account().pw_gid}"
    assert _left_behind(run_dir) == []


def test_a_charliecloud_run_replays_bit_identically_from_its_image_file(runs, scratch):
    """The run's image exported where Docker holds it (``runner export``), and replayed by the user
    from that file on Charliecloud: the file must hold the recorded image, and the bits match."""
    _, run_dir, _ = runs
    image_file = scratch / "image.tar"
    exported = run_runner("export", str(run_dir), "-o", str(image_file), module="runner.cli")
    assert exported.returncode == 0, exported.stderr[-3000:]
    image_file.chmod(0o644)
    out = scratch / "replay"
    proc = ci_user.python_as(
        str(run_dir), "--out", str(out), "--image", str(image_file), module="runner.replay"
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    replayed = manifest(out)
    assert replayed["engine"]["name"] == "charliecloud"  # the record's engine, by its name
    assert replayed["image"]["id"] == manifest(run_dir)["image"]["id"]
    assert replayed["outputs"]["model.pt"] == manifest(run_dir)["outputs"]["model.pt"]


def test_an_interrupted_charliecloud_run_resumes_to_dockers_weights(runs, scratch):
    cut = scratch / "cut"
    proc = ci_user.popen_as(sys.executable, "-m", "runner", f"hydra.run.dir={cut}", *CONFIG, *CHARLIECLOUD)
    try:
        wait_for(lambda: last_step(cut) >= 15, proc=proc)  # past the checkpoint at step 10
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_INTERRUPTED, err[-3000:]
    m = manifest(cut)
    assert m["status"] == "interrupted" and m["outputs_partial"] is True
    assert _left_behind(cut) == []

    resumed = ci_user.python_as(f"+resume={cut}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    m = manifest(cut)
    assert m["status"] == "completed" and len(m["resumes"]) == 1 and m["resumes"][0]["from_step"] >= 10
    assert m["outputs"]["model.pt"] == manifest(runs[0])["outputs"]["model.pt"]
    assert _left_behind(cut) == []
