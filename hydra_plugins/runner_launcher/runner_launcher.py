"""The ``runner_slots`` Hydra launcher: a sweep's jobs side by side, each in its own slot.

Any Hydra sweeper (the basic one, Optuna, Ax, …) hands this launcher batches of jobs — *sweep
jobs*: one set of overrides each, not to be confused with the worker's ``job.json`` — and each
is still a normal run of the task function in its own run dir. What the launcher adds:

* **Slots.** The machine is cut into disjoint slots (:mod:`runner.core.slots`): a set of CPU cores
  (pinned with ``launch.cpuset_cpus``) and, for GPU jobs, a set of GPUs (``launch.gpus``). A job
  runs in a forked process holding one slot; when it ends, the slot goes to the next job.
  Concurrent jobs never share a device, and under the strict profile a job's bits do not
  depend on how many ran beside it.
* **One image per sweep.** Images are resolved (found, or built once) here, before any job
  starts; the jobs then find the tag instead of each building it.
* **Failures stay local.** A failing job is recorded (``job_status.json`` or its manifest) and
  the others go on; the sweep's summary lists it with its exit status.
* **``hydra.launcher.skip_completed=true``.** Re-running a sweep, jobs whose run dir holds a
  completed manifest for identical inputs are skipped; other leftovers are moved to
  ``<sweep dir>/.superseded/`` and the job runs again.
* **Summary.** ``summary.json`` and ``summary.png`` at the sweep root (:mod:`runner.summary`).

With more than one slot the jobs' terminal output goes to ``console.log`` in each run dir
(the training log is in ``logs/train.log`` as always); the launcher prints one line per job.
"""

import copy
import json
import logging
import multiprocessing
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from runner.core import layout
from runner.core import slots as slots_mod
from runner.core.errors import EXIT_INTERRUPTED, EXIT_USAGE, RunnerError
from runner.host import facts, image_builder, snapshot, sweep
from runner.host.interrupts import sigterm_as_interrupt

log = logging.getLogger(__name__)
CONSOLE_LOG = "console.log"


@dataclass
class _SweepJob:
    """One job of the sweep: its overrides, its composed config and its run dir."""

    idx: int
    overrides: list[str]
    cfg: DictConfig  # the job's full config, hydra node included
    run_dir: Path
    task_cfg: dict[str, Any] | None  # resolved, without hydra; None when it does not resolve
    result: JobReturn | None = None


class RunnerSlotsLauncher(Launcher):
    def __init__(
        self,
        slots: int | None = None,
        cpus_per_slot: int | None = None,
        cpus: str | None = None,
        gpus: list[int] | None = None,
        summary: bool = True,
        skip_completed: bool = False,
    ) -> None:
        self.slots = slots
        self.cpus_per_slot = cpus_per_slot
        self.cpus = cpus
        self.gpus = list(gpus) if gpus is not None else None
        self.summary = summary
        self.skip_completed = skip_completed
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None
        self._signal: int | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    # -- the sweep ---------------------------------------------------------------------------------------
    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        from runner.flows.cli_common import fail

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        sweep_dir.mkdir(parents=True, exist_ok=True)

        jobs = [self._prepare(initial_job_idx + i, list(ov)) for i, ov in enumerate(job_overrides)]
        to_run: list[_SweepJob] = []
        for job in jobs:
            if self.skip_completed and self._already_done(job):
                log.info(
                    f"#{job.idx} {' '.join(filter_overrides(job.overrides))}: "
                    f"completed before, skipped ({job.run_dir})"
                )
                continue
            if self.skip_completed and job.run_dir.exists():
                self._set_aside(sweep_dir, job.run_dir)
            to_run.append(job)

        try:
            plan = self._slots(to_run)
            if to_run:
                self._resolve_images(to_run)
        except RunnerError as exc:
            fail(exc)
        log.info(
            f"Launching {len(to_run)} of {len(jobs)} jobs in {len(plan)} slot(s): "
            + "; ".join(s.describe() for s in plan)
        )
        self._dispatch(to_run, plan)

        return self._finish(jobs, sweep_dir, "finished jobs are recorded")

    def _finish(self, jobs: list[_SweepJob], sweep_dir: Path, on_interrupt: str) -> list[JobReturn]:
        """Every job has ended: note the failed ones, write the summary, and end the sweep with
        exit 130 when a signal stopped it (``on_interrupt`` says what became of its jobs)."""
        for job in jobs:
            code = _exit_code(job.result)
            if code != 0:
                sweep.failed_sweep_jobs.append(
                    {"idx": job.idx, "run_dir": str(job.run_dir), "exit_code": code}
                )
        if self.summary:
            self._write_summary(sweep_dir)
        if self._signal is not None:
            from runner.flows.cli_common import fail

            fail(RunnerError(f"sweep interrupted; {on_interrupt} in {sweep_dir}", EXIT_INTERRUPTED))
        return [job.result for job in jobs]  # type: ignore[misc]

    # -- preparing jobs ----------------------------------------------------------------------------------
    def _prepare(self, idx: int, overrides: list[str]) -> _SweepJob:
        """A job's config, composed as Hydra's basic launcher does, and where it will run."""
        assert self.config is not None and self.hydra_context is not None
        cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(cfg):
            cfg.hydra.job.id = idx
            cfg.hydra.job.num = idx
        run_dir = Path(
            os.path.abspath(
                os.path.join(
                    str(OmegaConf.select(cfg, "hydra.sweep.dir")),
                    str(OmegaConf.select(cfg, "hydra.sweep.subdir")),
                )
            )
        )
        return _SweepJob(idx, overrides, cfg, run_dir, _resolved_task_config(cfg, run_dir))

    def _already_done(self, job: _SweepJob) -> bool:
        from runner.host import records

        if job.task_cfg is None or not (job.run_dir / layout.MANIFEST).is_file():
            return False
        try:
            m = records.read_manifest(job.run_dir)
        except RunnerError:
            return False
        if not sweep.completed_for(m.model_dump(), job.task_cfg, job.overrides):
            return False
        job.result = _skipped_return(job)
        return True

    @staticmethod
    def _set_aside(sweep_dir: Path, run_dir: Path) -> None:
        """A job run again runs in a clean run dir; what its last attempt left is kept."""
        dest_root = sweep_dir / sweep.SUPERSEDED_DIR
        dest_root.mkdir(exist_ok=True)
        stem = (
            run_dir.relative_to(sweep_dir).as_posix().replace("/", "_")
            if run_dir.is_relative_to(sweep_dir)
            else run_dir.name
        )
        n = 1
        while (dest_root / f"{stem}.{n}").exists():
            n += 1
        shutil.move(str(run_dir), dest_root / f"{stem}.{n}")
        log.info(
            f"{run_dir}: not a completed run of these inputs; "
            f"moved to {dest_root / f'{stem}.{n}'} and running again"
        )

    def _slots(self, jobs: list[_SweepJob]) -> list[slots_mod.Slot]:
        needs = [slots_mod.job_needs(j.task_cfg) for j in jobs if j.task_cfg is not None]
        usable = facts.detect_cpus()
        cpus = slots_mod.parse_cpu_list(self.cpus) if self.cpus else usable
        if not set(cpus) <= set(usable):
            raise RunnerError(
                f"hydra.launcher.cpus={self.cpus}: this process may only run on cores "
                f"{slots_mod.format_cpu_list(usable)}",
                EXIT_USAGE,
            )
        wants_gpus = any(n.gpus for n in needs)
        gpus = (self.gpus if self.gpus is not None else facts.detect_gpus()) if wants_gpus else []
        plan = slots_mod.plan_slots(cpus, gpus, needs, self.slots, self.cpus_per_slot)
        smallest = min(len(s.cpus) for s in plan) if plan else 0
        biggest_need = max((n.cores for n in needs if not n.gpus), default=0)
        if smallest and biggest_need > smallest:
            log.warning(
                f"a job needs {biggest_need} cores but a slot has {smallest}: it will run, more slowly"
            )
        return plan

    def _resolve_images(self, jobs: list[_SweepJob]) -> None:
        """Find or build each distinct image the jobs need, once, before any job starts."""
        from runner.core import spec
        from runner.host import engine as engines

        root = snapshot.project_root()
        wanted: dict[str, tuple[spec.RunPlan, Path]] = {}
        for job in jobs:
            if job.task_cfg is None:
                continue
            try:
                p = spec.plan_run(job.task_cfg, job.run_dir, root, os.environ, os.getuid(), os.getgid())
                facts.check_gpus(p.config)  # nothing is built for a job that asks for GPUs this host lacks
            except RunnerError:
                continue  # this job fails on its own, with its own record
            if p.backend != "docker":
                continue
            variant = (p.config.get("image") or {}).get("variants", {}).get(p.image_kind, {})
            key = json.dumps([p.launch.get("engine"), p.image_kind, variant], sort_keys=True, default=str)
            wanted.setdefault(key, (p, job.run_dir))
        for p, _ in wanted.values():
            engine = engines.connect(p.launch.get("engine"))  # the user's own config chose it
            try:
                resolved = image_builder.resolve_image(engine, p, root, lambda line: log.info(line))
                log.info(
                    f"image {resolved.tag}: "
                    f"{'built' if resolved.record['built_now'] else 'found'} for this sweep"
                )
            finally:
                engine.close()  # the jobs are forked: they open their own connections

    # -- running jobs ------------------------------------------------------------------------------------
    def _dispatch(self, jobs: list[_SweepJob], plan: list[slots_mod.Slot]) -> None:
        """Run the jobs, at most one per slot at a time, until all have ended (or a signal came)."""
        ctx = multiprocessing.get_context("fork")
        quiet = len(plan) > 1 and len(jobs) > 1
        pending = deque(jobs)
        free = list(plan)
        running: dict[Any, tuple[_SweepJob, Any, slots_mod.Slot]] = {}
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending or running:
                while pending and free and self._signal is None:
                    job, slot = pending.popleft(), free.pop(0)
                    _place(job, slot)
                    receive, send = ctx.Pipe(duplex=False)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    proc = ctx.Process(
                        target=_child,
                        name=f"runner-job-{job.idx}",
                        args=(
                            send,
                            self.hydra_context,
                            self.task_function,
                            job.cfg,
                            job.run_dir,
                            job.overrides,
                            quiet,
                        ),
                    )
                    proc.start()
                    send.close()
                    running[receive] = (job, proc, slot)
                    log.info(
                        f"#{job.idx} {' '.join(filter_overrides(job.overrides))} "
                        f"→ {slot.describe()}: {job.run_dir}"
                    )
                if not running:
                    break
                for conn in multiprocessing.connection.wait(list(running), timeout=0.5):
                    job, proc, slot = running.pop(conn)
                    job.result = _receive(conn, job)
                    proc.join()
                    if job.result is None:
                        job.result = _lost_return(job, proc.exitcode)
                    free.append(slot)
                    free.sort(key=lambda s: s.index)
                    self._report(job)
                if (
                    self._signal == signal.SIGTERM
                ):  # a terminal's Ctrl-C reaches the jobs itself; SIGTERM does not
                    for _job, proc, _slot in running.values():
                        if proc.pid and proc.is_alive():
                            os.kill(proc.pid, signal.SIGTERM)
                    self._signal = -signal.SIGTERM  # forwarded once
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
        for job in pending:
            log.info(
                f"#{job.idx} {' '.join(filter_overrides(job.overrides))}: not started (sweep interrupted)"
            )
            job.result = _lost_return(job, EXIT_INTERRUPTED, started=False)

    def _on_signal(self, signum, _frame) -> None:
        if self._signal is None:
            self._signal = signum
            log.info("stopping: no new jobs; waiting for running jobs to stop and record themselves")

    @staticmethod
    def _report(job: _SweepJob) -> None:
        code = _exit_code(job.result)
        status = sweep.read_job_status(job.run_dir) or {}
        what = "completed" if code == 0 else f"{status.get('status', 'failed')} (exit {code})"
        detail = f": {status['error']}" if code and status.get("error") else ""
        log.info(f"#{job.idx} {' '.join(filter_overrides(job.overrides))}: {what}{detail}")

    @staticmethod
    def _write_summary(sweep_dir: Path) -> None:
        from runner.flows import summary

        try:
            result = summary.write(sweep_dir)
        except RunnerError as exc:
            log.warning(f"no summary: {exc.message}")
            return
        for line in summary.describe_line(result):
            log.info(line)
        log.info(f"summary: {sweep_dir / summary.SUMMARY_JSON}, {sweep_dir / summary.SUMMARY_PNG}")


# -- helpers (module level: the forked child runs _child) ----------------------------------------------
def _resolved_task_config(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
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


def _place(job: _SweepJob, slot: slots_mod.Slot) -> None:
    """Put the job in its slot: its cores (and GPUs) become part of its launch config."""
    launch = (job.task_cfg or {}).get("launch") or {}
    with read_write(job.cfg), open_dict(job.cfg):
        for key, value in slots_mod.placement(slot, launch).items():
            job.cfg.launch[key] = value


def _child(
    send, hydra_context, task_function, cfg: DictConfig, run_dir: Path, overrides: list[str], quiet: bool
) -> None:
    """One job, in a forked process: Hydra's run_job, then its outcome recorded and sent back."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the parent's handler counts signals
    sigterm_as_interrupt()
    if quiet:
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(run_dir / CONSOLE_LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    try:
        ret = run_job(
            hydra_context=hydra_context,
            task_function=task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )
    except BaseException as exc:  # noqa: BLE001 - e.g. Ctrl-C outside the run's own handling
        ret = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=exc)
    code = _exit_code(ret)
    error = (
        None
        if code == 0
        else (
            None
            if ret.status == JobStatus.COMPLETED
            else f"{type(ret._return_value).__name__}: {ret._return_value}"
        )
    )
    sweep.write_job_status(
        run_dir, code, error, overrides
    )  # a RunnerError's message was recorded by the task
    try:
        send.send(ret)
    except (pickle.PicklingError, TypeError, AttributeError):
        if ret.status == JobStatus.FAILED:
            ret._return_value = RuntimeError(str(ret._return_value))
        else:
            ret._return_value = code
        send.send(ret)
    send.close()


def _receive(conn, job: _SweepJob) -> JobReturn | None:
    try:
        return conn.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        return None
    finally:
        conn.close()


def _exit_code(ret: JobReturn | None) -> int:
    """A job's exit status: the task's int return value, 0 for any other completed return."""
    if ret is None:
        return 1
    if ret.status == JobStatus.COMPLETED:
        v = ret._return_value
        return int(v) if isinstance(v, int) and not isinstance(v, bool) else 0
    return EXIT_INTERRUPTED if isinstance(ret._return_value, KeyboardInterrupt) else 1


def _skipped_return(job: _SweepJob) -> JobReturn:
    hydra_cfg = copy.deepcopy(job.cfg)
    with read_write(hydra_cfg.hydra.runtime), open_dict(hydra_cfg.hydra.runtime):
        hydra_cfg.hydra.runtime.output_dir = str(job.run_dir)
    task_cfg = copy.deepcopy(job.cfg)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return JobReturn(
        overrides=job.overrides,
        cfg=task_cfg,
        hydra_cfg=hydra_cfg,
        working_dir=os.getcwd(),
        task_name=str(job.cfg.hydra.job.name),
        status=JobStatus.COMPLETED,
        _return_value=0,
    )


def _lost_return(job: _SweepJob, exitcode: int | None, started: bool = True) -> JobReturn:
    """A job whose process ended without a word (killed), or that never started."""
    code = EXIT_INTERRUPTED if not started or exitcode in (-signal.SIGINT, -signal.SIGTERM) else 1
    if started:
        sweep.write_job_status(
            job.run_dir, code, f"job process ended with status {exitcode} before reporting", job.overrides
        )
    why = "not started: sweep interrupted" if not started else f"job process ended with status {exitcode}"
    err = KeyboardInterrupt() if code == EXIT_INTERRUPTED else RuntimeError(why)
    return JobReturn(overrides=job.overrides, status=JobStatus.FAILED, _return_value=err)
