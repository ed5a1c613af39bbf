"""The runner's own help: `python -m runner --help`, `runner --help` and each command's `--help`
list the same commands with the same one-line descriptions (runner.core.commands)."""

from __future__ import annotations

import pytest

from runner import cli
from runner.core.commands import COMMANDS
from tests.conftest import ROOT, run_runner


@pytest.fixture(scope="module")
def hydra_help() -> str:
    proc = run_runner("--help", env={"DOCKER_HOST": "unix:///nonexistent"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_help_page_is_the_runners_own(hydra_help):
    assert "powered by Hydra" not in hydra_help and hydra_help.startswith("runner: run a PyTorch")
    for name, line in COMMANDS.items():
        assert f"  {name:<8} {line}" in hydra_help.splitlines(), name


def test_it_lists_every_config_group_with_its_options(hydra_help):
    for group in ("experiment", "image", "determinism", "dataset"):
        options = sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))
        assert f"{group}: {', '.join(options)}" in hydra_help.splitlines()
    assert "hydra/" not in hydra_help  # Hydra's own groups are behind --hydra-help


def test_it_shows_examples_and_where_runs_are_written(hydra_help):
    examples = hydra_help.split("== Examples ==")[1].split("==")[0]
    assert (
        len([ln for ln in examples.splitlines() if ln.strip().startswith(("python -m runner", "runner "))])
        == 3
    )
    assert "runs/EXPERIMENT/TIME/" in hydra_help and "hydra.run.dir=DIR" in hydra_help


def test_runner_help_lists_the_same_commands():
    assert cli.COMMANDS.keys() == COMMANDS.keys()  # every command dispatched has its line, and back
    proc = run_runner("--help", module="runner.cli")  # what the `runner` console script runs
    assert proc.returncode == 0
    for name, line in COMMANDS.items():
        assert f"  {name:<8} {line}" in proc.stdout.splitlines(), proc.stdout


@pytest.mark.parametrize("name", [c for c in COMMANDS if c != "run"])  # run: the Hydra page, below
def test_each_commands_help_starts_with_its_line(name):
    proc = run_runner(name, "--help", module="runner.cli")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: runner {name} ")
    description = proc.stdout.split("\n\n")[1]  # argparse wraps it to the terminal's width
    assert " ".join(description.split()) == COMMANDS[name], proc.stdout


def test_runner_run_help_is_the_same_page(hydra_help):
    proc = run_runner("run", "--help", module="runner.cli", env={"DOCKER_HOST": "unix:///nonexistent"})
    assert proc.returncode == 0 and proc.stdout == hydra_help


def test_export_mlflow_has_its_own_help():
    """``runner export`` writes a run's image; ``runner export mlflow`` is its own command."""
    proc = run_runner("export", "mlflow", "--help", module="runner.cli")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: runner export mlflow [-h]")
    assert "--tracking-uri URI" in proc.stdout and "runner[mlflow]" in proc.stdout
    assert "mlflow PATH" in " ".join(COMMANDS["export"].split())
