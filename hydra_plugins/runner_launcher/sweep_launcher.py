"""What the runner's two Hydra launchers share: Hydra's side of a sweep.

A launcher composes each job's config as Hydra's basic launcher does, hands the jobs to its
sweep flow (:mod:`runner.flows.sweep`, :mod:`runner.flows.sweep_slurm`) and returns Hydra's
``JobReturn`` of each. The flow decides the rest and judges the sweep: when not every job
completed, or a signal stopped it, the command ends there with the flow's one line and exit
status (1 or 130), after the batch's summary is written. (An optimising sweeper's later batches
then do not run, as with Hydra's basic sweeper, which stops at a failed job.)
"""

from __future__ import annotations

import copy
import importlib
import os
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.core import slots as slots_mod
from runner.core.config import Launch, launch_or_none
from runner.core.errors import EXIT_INTERRUPTED, RunnerError
from runner.core.json_types import JsonObject
from runner.flows.sweep import JobEnd, SweepJob, SweepSettings


class SweepLauncher(Launcher):
    """A Hydra launcher whose sweep is a runner flow: ``settings`` (its config, typed) and ``flow``
    (the sweep: jobs, sweep dir and settings in, each job's end out) make a launcher."""

    settings_type: ClassVar[type[SweepSettings]] = SweepSettings
    flow: Callable[..., dict[int, JobEnd]]  # a staticmethod
    travels: ClassVar[bool] = False  # the jobs are pickled to other machines (Hydra's state goes along)

    def __init__(self, **settings: Any) -> None:
        plain = {k: OmegaConf.to_container(v) if OmegaConf.is_config(v) else v for k, v in settings.items()}
        self.settings = self.settings_type(**plain)
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
        from runner.flows.cli_common import fail

        setup_globals()
        assert self.config is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        cfgs = [self._compose(initial_job_idx + i, list(ov)) for i, ov in enumerate(job_overrides)]
        jobs = [self._job(cfg, list(ov)) for cfg, ov in zip(cfgs, job_overrides, strict=True)]
        try:
            ends = self.flow(jobs, sweep_dir, self.settings)
        except RunnerError as exc:
            fail(exc)
        return [job_return(cfg, job, ends[job.idx]) for cfg, job in zip(cfgs, jobs, strict=True)]

    def _compose(self, idx: int, overrides: list[str]) -> DictConfig:
        """A job's whole config (hydra node included), composed as Hydra's basic launcher does."""
        assert self.config is not None and self.hydra_context is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        return cfg

    def _job(self, cfg: DictConfig, overrides: list[str]) -> SweepJob:
        """The flow's view of a job: where it runs, its resolved config, and Hydra's way to run it."""
        assert self.hydra_context is not None and self.task_function is not None
        sweep = OmegaConf.select(cfg, "hydra.sweep")
        run_dir = Path(os.path.abspath(os.path.join(str(sweep.dir), str(sweep.subdir))))
        config = resolved_task_config(cfg, run_dir)
        state = Singleton.get_state() if self.travels else None
        task = HydraTask(self.hydra_context, self.task_function, cfg, launch_or_none(config), state)
        name = " ".join(filter_overrides(overrides))
        return SweepJob(int(cfg.hydra.job.num), overrides, run_dir, config, task, name)


class HydraTask:
    """One sweep job's task: Hydra's ``run_job`` of the task function with the job's config,
    placed in the slot it is given. It may travel to a Slurm node (pickled, Hydra's state along)."""

    def __init__(
        self,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        cfg: DictConfig,
        launch: Launch | None,
        singleton_state: Any = None,
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.cfg = cfg
        self.launch = launch  # as the job asked, resolved; None: it does not parse (the job says so)
        self.singleton_state = singleton_state

    def __call__(self, slot: slots_mod.Slot | None) -> JobEnd:
        if self.singleton_state is not None:
            Singleton.set_state(self.singleton_state)
        cfg = copy.deepcopy(self.cfg)
        if slot is not None and self.launch is not None:
            with read_write(cfg), open_dict(cfg):
                for key, value in slots_mod.placement(slot, self.launch).items():
                    cfg.launch[key] = value
        ret = run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
        code = exit_code(ret)
        failed = code != 0 and ret.status != JobStatus.COMPLETED  # a RunnerError's message the task recorded
        exc = ret._return_value
        if failed and not isinstance(exc, KeyboardInterrupt):  # a bug: its traceback, in the job's output
            traceback.print_exception(exc)
        return JobEnd(code, f"{type(exc).__name__}: {exc}" if failed else None, payload=ret)

    def __getstate__(self) -> dict[str, Any]:
        """The task function travels by name: under ``@hydra.main`` it is not its module's attribute
        (the wrapper is), and pickled by value it would drag its module's globals along."""
        state = dict(self.__dict__)
        fn = state.pop("task_function")
        state["task_function_ref"] = (fn.__module__, fn.__qualname__)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        module, name = state.pop("task_function_ref")
        fn = getattr(importlib.import_module(module), name)
        state["task_function"] = getattr(fn, "__wrapped__", fn)
        self.__dict__.update(state)


def resolved_task_config(cfg: DictConfig, run_dir: Path) -> JsonObject | None:
    """The job's config as its task will see it (resolved, no hydra node), or None if it does not resolve."""
    hc = HydraConfig.instance()
    saved = hc.cfg
    probe = copy.deepcopy(cfg)
    try:
        with read_write(probe.hydra.runtime), open_dict(probe.hydra.runtime):
            probe.hydra.runtime.output_dir = str(run_dir)
        hc.set_config(probe)
        with read_write(probe), open_dict(probe):
            del probe["hydra"]
        return OmegaConf.to_container(probe, resolve=True)  # type: ignore[return-value]
    except Exception:  # noqa: BLE001 - the job itself reports what does not resolve
        return None
    finally:
        hc.cfg = saved


def exit_code(ret: JobReturn) -> int:
    """A job's exit status: the task's int return value, 0 for any other completed return."""
    if ret.status == JobStatus.COMPLETED:
        v = ret._return_value
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else 0
    return EXIT_INTERRUPTED if isinstance(ret._return_value, KeyboardInterrupt) else 1


def job_return(cfg: DictConfig, job: SweepJob, end: JobEnd) -> JobReturn:
    """Hydra's record of a job: the one its task returned, or one made from how it ended (a job
    skipped as completed before, resumed on its node, or one that never reported)."""
    if isinstance(end.payload, JobReturn):
        return end.payload
    if end.exit_code != 0:
        err = KeyboardInterrupt() if end.exit_code == EXIT_INTERRUPTED else RuntimeError(end.error)
        return JobReturn(overrides=job.overrides, status=JobStatus.FAILED, _return_value=err)
    hydra_cfg = copy.deepcopy(cfg)
    with read_write(hydra_cfg.hydra.runtime), open_dict(hydra_cfg.hydra.runtime):
        hydra_cfg.hydra.runtime.output_dir = str(job.run_dir)
    task_cfg = copy.deepcopy(cfg)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return JobReturn(
        overrides=job.overrides,
        cfg=task_cfg,
        hydra_cfg=hydra_cfg,
        working_dir=os.getcwd(),
        task_name=str(cfg.hydra.job.name),
        status=JobStatus.COMPLETED,
        _return_value=0,
    )
