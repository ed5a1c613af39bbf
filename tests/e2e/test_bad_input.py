"""Bad input gets one line on stderr (`runner: error: …`), a non-zero exit and never a traceback;
a run refused before it started leaves no run dir; one that had started leaves a whole manifest saying
how it failed, and a free run dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.core import layout
from runner.core.errors import EXIT_BUILD, EXIT_ENVIRONMENT, EXIT_USAGE
from tests.cli_output import error_line
from tests.conftest import manifest, run_runner


def refused_before_start(tmp_path: Path, *overrides: str, code: int = EXIT_USAGE) -> str:
    run_dir = tmp_path / "run"
    proc = run_runner(f"hydra.run.dir={run_dir}", *overrides)
    line = error_line(proc, code)
    assert proc.stderr.strip() == line  # nothing else was printed
    assert not run_dir.exists()  # refused before it wrote anything: no run dir to list or clean up
    return line


def failed_run(run_dir: Path) -> dict:
    """The record a started-then-failed run leaves."""
    m = manifest(run_dir)
    assert m["status"] == "failed" and m["exit_code"] != 0 and m["error"]
    assert not (run_dir / layout.CLAIM).exists()
    return m


def test_unknown_experiment_lists_the_available_ones(tmp_path):
    line = refused_before_start(tmp_path, "experiment=nope")
    assert "experiment/nope" in line and "mnist_ddp" in line and "plain_script" in line


def test_bad_override_syntax(tmp_path):
    assert "bad override" in refused_before_start(tmp_path, "trainer.max_steps=[")


def test_unknown_key_says_how_to_add_one(tmp_path):
    line = refused_before_start(tmp_path, "trainer.bogus=1")
    assert "trainer.bogus" in line and "+trainer.bogus=1" in line


def test_unknown_trainer_argument_is_refused_before_launch(tmp_path):
    line = refused_before_start(tmp_path, "+trainer.max_step=3")
    assert "max_step (did you mean max_steps?)" in line


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("model=3", "model: Input should be a valid dictionary"),
        ("model.channels=abc", "model.channels: Input should be a valid integer"),
        ("model.lr=-0.1", "model.lr: Input should be greater than 0 (got -0.1)"),
        ("+model.chanels=8", "model.chanels: Extra inputs are not permitted"),
    ],
)
def test_experiment_parameters_are_checked_against_its_schema_before_launch(tmp_path, override, expected):
    assert expected in refused_before_start(tmp_path, override)


def test_a_schema_that_cannot_be_loaded_is_named(tmp_path):
    line = refused_before_start(tmp_path, "experiment.schemas.model=experiments.nope:Params")
    assert "cannot load 'experiments.nope:Params'" in line


def test_bad_seed(tmp_path):
    assert "seed" in refused_before_start(tmp_path, "seed=-1")


def test_docker_engine_unreachable(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_runner(f"hydra.run.dir={run_dir}", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    line = error_line(proc, EXIT_ENVIRONMENT)
    assert "Docker engine not reachable at unix:///nonexistent.sock" in line
    assert "not reachable" in failed_run(run_dir)["error"]


def test_missing_dataset(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_runner(f"hydra.run.dir={run_dir}", "dataset.root=/nonexistent")
    line = error_line(proc, EXIT_ENVIRONMENT)
    assert "train-images-idx3-ubyte.gz" in line and "/nonexistent" in line
    assert failed_run(run_dir)["data"] is None


@pytest.mark.docker
def test_build_failure_shows_the_log_tail_and_marks_the_run_failed(tmp_path, engine):
    run_dir = tmp_path / "run"
    proc = run_runner(
        f"hydra.run.dir={run_dir}", "image.variants.cpu.dockerfile=tests/data/Dockerfile.broken"
    )
    line = error_line(proc, EXIT_BUILD)
    assert "image build failed" in line and "returned a non-zero code: 7" in line
    m = failed_run(run_dir)
    assert m["exit_code"] == EXIT_BUILD and m["image"] is None and m["outputs"] == {}
    assert "about to fail on purpose" in m["log_tail"]
    assert "about to fail on purpose" in (run_dir / "logs" / "build.log").read_text()
    tag = line.split("image build failed for ", 1)[1].split(":", 2)
    assert engine.image_id(f"{tag[0]}:{tag[1]}") is None  # no half-built image under the tag
