"""The Hydra task: composed config → :func:`runner.flows.run.run` → a line of summary."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner.core import numbers
from runner.core.errors import RunnerError
from runner.flows.cli_common import fail, project_conf_dir, resolved
from runner.host import console


def run_composed(cfg: DictConfig) -> float:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    container = resolved(cfg)
    from runner.core.run_input import RunInput
    from runner.flows import run

    inp = RunInput.new(container, [sys.executable, "-m", "runner", *sys.argv[1:]], list(hc.overrides.task))
    m = run.run(inp, run_dir, echo=console.echo)  # on the engine the config names (launch.engine)
    metrics = ", ".join(f"{k}={numbers.human(v, k)}" for k, v in m.metrics.items())
    console.stderr.print(f"[bold green]completed[/] {run_dir}  {metrics}", soft_wrap=True)
    objective = cfg.get("sweep_objective")
    if objective:  # an optimising sweeper (Optuna, Ax, …) reads the task's return value
        if objective not in m.metrics:
            raise RunnerError(
                f"sweep_objective={objective!r} is not among the run's metrics: {', '.join(m.metrics)}"
            )
        value = m.metrics[objective]
        if not isinstance(value, (int, float)):
            raise RunnerError(
                f"sweep_objective={objective!r}: the run's {objective} is not a number: {value!r}"
            )
        return float(value)
    return 0


def _task(cfg: DictConfig) -> float:
    mode = HydraConfig.get().mode
    multirun = mode is not None and mode.name == "MULTIRUN"
    try:
        return run_composed(cfg)
    except RunnerError as exc:
        if multirun:  # one failing sweep job must not stop the sweep; the summary lists it
            console.stderr.print(f"[red]runner: error:[/] {exc.message}")
            from runner.host import sweep_records

            hc = HydraConfig.get()
            sweep_records.write_job_status(
                Path(hc.runtime.output_dir), exc.exit_code, exc.message, list(hc.overrides.task)
            )
            return exc.exit_code
        from runner.host import rundir

        hc = HydraConfig.get()  # refused before it wrote anything: no run dir left behind to list
        rundir.discard_if_unused(Path(hc.runtime.output_dir), f"{hc.job.name}.log")
        fail(exc)


def hydra_entry() -> None:
    """``python -m runner``: one run, or a sweep (``-m``), whose launcher ends the command with the
    sweep's exit status when not every job completed (:func:`runner.flows.sweep.judge`)."""
    # decorated here, not at import: finding the project's conf/ runs git
    hydra.main(config_path=str(project_conf_dir()), config_name="config", version_base="1.3")(_task)()
