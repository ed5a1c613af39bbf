"""The ``slurm`` Hydra launcher: a sweep's jobs as Slurm jobs, each a pinned container with a manifest.

It is the ``runner_slots`` launcher with Slurm in place of this machine's slots, built on
submitit (which writes the ``sbatch`` script and carries the job to the node as a pickle):

* **Preflight.** Before anything is submitted: a controller must answer and the partition must
  exist (:func:`runner.host.slurm.check`), else one line and exit status 3 or 2.
* **One image per sweep.** Images are resolved (found, or built once) here; the jobs find the tag.
* **One array.** All jobs go in one job array, each asking for the most demanding job's nodes,
  cores and GPUs (or the launcher's ``cpus_per_task`` / ``gpus_per_node``). A job over several
  nodes (``launch.nodes``) runs the runner on its first node, which starts one container per
  node (:mod:`runner.host.nodes`).
* **On the node.** A job pins its container to its allocation's cores and hands it the GPUs
  Slurm gave it (:mod:`runner.core.cluster`); the manifest's ``cluster`` records the job id,
  array index, node list, partition and allocation.
* **Preemption and requeue.** SIGTERM (``scancel``, a preemption, ``scontrol requeue``) stops
  the container and records the run as interrupted, its checkpoints kept. A requeued job finds
  that record in its run dir and resumes it (:mod:`runner.flows.resume`), so it ends with the
  bits an uninterrupted run has. Slurm's time-limit warning (SIGUSR2) does the same and then
  requeues the job itself. A sweep run again with ``hydra.launcher.skip_completed=true`` skips
  completed jobs and resumes interrupted ones in place.
* **Status and summary** are as for a local sweep: ``job_status.json`` per job, ``summary.json``
  and ``summary.png`` at the sweep root. Each job's terminal output is ``console.log`` in its
  run dir; Slurm's own log of it is under ``<sweep dir>/.slurm``.
"""

from __future__ import annotations

import copy
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hydra_plugins.runner_launcher.runner_launcher import (
    CONSOLE_LOG,
    RunnerSlotsLauncher,
    _exit_code,
    _skipped_return,
    _SweepJob,
)
from runner.core import cluster, layout
from runner.core import slots as slots_mod
from runner.core.errors import EXIT_INTERRUPTED, EXIT_USAGE, RunnerError
from runner.host import slurm, snapshot, sweep

log = logging.getLogger(__name__)


class RunnerSlurmLauncher(RunnerSlotsLauncher):
    def __init__(
        self,
        partition: str | None = None,
        timeout_min: int = 60,
        cpus_per_task: int | None = None,
        gpus_per_node: int | None = None,
        mem_gb: int | None = None,
        array_parallelism: int | None = None,
        folder: str | None = None,
        additional_parameters: dict[str, Any] | None = None,
        setup: list[str] | None = None,
        poll_s: float = 2.0,
        summary: bool = True,
        skip_completed: bool = False,
    ) -> None:
        super().__init__(summary=summary, skip_completed=skip_completed)
        self.partition = partition
        self.timeout_min = timeout_min
        self.cpus_per_task = cpus_per_task
        self.gpus_per_node = gpus_per_node
        self.mem_gb = mem_gb
        self.array_parallelism = array_parallelism
        self.folder = folder
        self.additional_parameters = dict(additional_parameters or {})
        self.setup_lines = list(setup or [])
        self.poll_s = poll_s

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        from runner.flows.cli_common import fail

        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).resolve()
        try:
            slurm.check(self.partition)  # before any file is written: no cluster, no sweep dir
            sweep_dir.mkdir(parents=True, exist_ok=True)
            jobs = [self._prepare(initial_job_idx + i, list(ov)) for i, ov in enumerate(job_overrides)]
            to_run = self._to_run(jobs, sweep_dir, self.skip_completed)
            if to_run:
                self._resolve_images(to_run)
            handles = self._submit(to_run, sweep_dir)
        except RunnerError as exc:
            fail(exc)
        self._wait(handles)
        return self._finish(jobs, sweep_dir, "its Slurm jobs were cancelled and recorded")

    def _to_run(self, jobs: list[_SweepJob], sweep_dir: Path, skip_completed: bool) -> list[_SweepJob]:
        """The jobs to submit: with ``skip_completed``, completed ones are skipped, interrupted ones
        resumed in place, and any other leftover set aside."""
        to_run = []
        for job in jobs:
            what = " ".join(filter_overrides(job.overrides))
            if skip_completed and self._already_done(job):
                log.info(f"#{job.idx} {what}: completed before, skipped ({job.run_dir})")
                continue
            if skip_completed and resumable(job.run_dir, job.task_cfg, job.overrides):
                log.info(f"#{job.idx} {what}: interrupted before; it resumes in {job.run_dir}")
            elif skip_completed and job.run_dir.exists():
                self._set_aside(sweep_dir, job.run_dir)
            to_run.append(job)
        return to_run

    def _submit(self, jobs: list[_SweepJob], sweep_dir: Path) -> dict[str, tuple[_SweepJob, Any]]:
        """One sbatch (a job array) for the sweep; returns each Slurm job id with its job and handle."""
        if not jobs:
            return {}
        import submitit

        executor = submitit.SlurmExecutor(folder=Path(self.folder or sweep_dir / ".slurm"), max_num_timeout=0)
        asks = cluster.request(
            [j.task_cfg for j in jobs if j.task_cfg is not None], self.cpus_per_task, self.gpus_per_node
        )
        params = self._parameters(asks, sweep_dir)
        executor.update_parameters(**params)
        state = Singleton.get_state()
        try:
            with executor.batch():
                handles = [
                    executor.submit(
                        SlurmTask(
                            self.hydra_context,
                            self.task_function,
                            j.cfg,
                            j.run_dir,  # type: ignore[arg-type]
                            j.overrides,
                            j.task_cfg,
                            state,
                        )
                    )
                    for j in jobs
                ]
        except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as exc:
            detail = getattr(exc, "output", None) or getattr(exc, "stderr", None) or str(exc)
            if isinstance(detail, bytes):
                detail = detail.decode(errors="replace")
            line = [x for x in str(detail).splitlines() if x.strip()][-1:] or [type(exc).__name__]
            raise RunnerError(
                f"sbatch refused the sweep's jobs ({asks}): {line[0].strip()}", EXIT_USAGE
            ) from None
        out = {}
        for job, h in zip(jobs, handles, strict=True):
            log.info(
                f"#{job.idx} {' '.join(filter_overrides(job.overrides))} "
                f"→ Slurm job {h.job_id}: {job.run_dir}"
            )
            out[str(h.job_id)] = (job, h)
        return out

    def _parameters(self, asks: dict[str, Any], sweep_dir: Path) -> dict[str, Any]:
        """submitit's parameters for each job of the sweep. A job over several nodes holds them all
        (sbatch's ``--nodes``), while submitit's own step, where the runner runs, takes the first
        node alone: the runner starts the other nodes' containers itself (:mod:`runner.host.nodes`)."""
        nodes = asks.get("nodes", 1)
        params: dict[str, Any] = {
            "time": self.timeout_min,
            "nodes": 1,
            "ntasks_per_node": 1,
            "stderr_to_stdout": True,
            "job_name": f"runner-{sweep_dir.name}"[:64],
            "setup": self.setup_lines,
            "additional_parameters": {
                "chdir": str(snapshot.project_root()),
                **({"nodes": nodes} if nodes > 1 else {}),
                **self.additional_parameters,
            },
            **{k: v for k, v in asks.items() if k != "nodes"},
        }
        if nodes > 1:
            params["srun_args"] = ["--nodes=1", "--ntasks=1"]
        if self.partition:
            params["partition"] = self.partition
        if self.mem_gb:
            params["mem"] = f"{self.mem_gb}GB"
        if self.array_parallelism:
            params["array_parallelism"] = self.array_parallelism
        return params

    def _wait(self, handles: dict[str, tuple[_SweepJob, Any]]) -> None:
        """Until every job has left Slurm's queue for good (a requeued one comes back: it is waited for)."""
        pending = dict(handles)
        cancelled = False
        unseen: dict[str, int] = {}
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while pending:
                if self._signal is not None and not cancelled:
                    slurm.cancel(list(pending))
                    cancelled = True
                states = slurm.states(list(pending))
                for (
                    jid
                ) in pending:  # squeue lists a job for MinJobAge after it ends: one it misses twice is gone
                    unseen[jid] = 0 if jid in states else unseen.get(jid, 0) + 1
                done = [
                    j
                    for j in pending
                    if slurm.is_active(states.get(j)) is False and (j in states or unseen[j] > 2)
                ]
                for jid in done:
                    job, handle = pending.pop(jid)
                    job.result = _outcome(job, handle, states.get(jid))
                    self._report(job)
                if pending:
                    time.sleep(self.poll_s)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def resumable(run_dir: Path, task_cfg: dict[str, Any] | None, overrides: list[str]) -> bool:
    """Does ``run_dir`` hold an interrupted run of these very inputs, with its code snapshot (so a
    requeued job continues it instead of starting over)?"""
    from runner.host import records

    if task_cfg is None or not (run_dir / layout.MANIFEST).is_file():
        return False
    try:
        m = records.read_manifest(run_dir)
    except RunnerError:
        return False
    if m.status != "interrupted" or m.code is None:
        return False
    return sweep.inputs_key(m.config, m.overrides) == sweep.inputs_key(task_cfg, overrides)


def _outcome(job: _SweepJob, handle: Any, state: str | None) -> JobReturn:
    """The job's JobReturn as the task sent it back; a job that ended without one (cancelled before
    it started, killed, its node lost) gets a record saying so."""
    if not handle.paths.result_pickle.exists() and state in (
        None,
        "CANCELLED",
        "PREEMPTED",
        "NODE_FAIL",
        "BOOT_FAIL",
    ):
        code, why = EXIT_INTERRUPTED, f"Slurm job {handle.job_id} ended {state or 'unseen'} before reporting"
    else:
        try:
            return handle.result()
        except Exception as exc:  # noqa: BLE001 - submitit's error carries the job's traceback and log
            code, why = 1, f"Slurm job {handle.job_id} ({state}): " + " ".join(str(exc).split())[:300]
    sweep.write_job_status(job.run_dir, code, why, job.overrides)
    err: BaseException = KeyboardInterrupt() if code == EXIT_INTERRUPTED else RuntimeError(why)
    return JobReturn(overrides=job.overrides, status=JobStatus.FAILED, _return_value=err)


# -- on the node ---------------------------------------------------------------------------------------
class SlurmTask:
    """One sweep job, as submitit carries it to its node and calls it there (again after a requeue)."""

    def __init__(
        self,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        cfg: DictConfig,
        run_dir: Path,
        overrides: list[str],
        task_cfg: dict[str, Any] | None,
        singleton_state: Any,
    ) -> None:
        self.hydra_context = hydra_context
        self.task_function = task_function
        self.cfg = cfg
        self.run_dir = run_dir
        self.overrides = overrides
        self.task_cfg = task_cfg
        self.singleton_state = singleton_state

    def __getstate__(self) -> dict[str, Any]:
        """The task function travels by name: under ``@hydra.main`` it is not its module's attribute
        (the wrapper is), and pickled by value it would drag its module's globals along."""
        state = dict(self.__dict__)
        fn = state.pop("task_function")
        state["task_function_ref"] = (fn.__module__, fn.__qualname__)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import importlib

        module, name = state.pop("task_function_ref")
        fn = getattr(importlib.import_module(module), name)
        state["task_function"] = getattr(fn, "__wrapped__", fn)
        self.__dict__.update(state)

    def __call__(self) -> JobReturn:
        got: list[int] = []

        def interrupt(signum, _frame):  # SIGTERM: scancel, preemption, requeue; SIGUSR2: the time limit nears
            got.append(signum)
            raise KeyboardInterrupt

        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(sig, interrupt)
        Singleton.set_state(self.singleton_state)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        _output_to(self.run_dir / CONSOLE_LOG)
        (self.run_dir / sweep.JOB_STATUS_FILE).unlink(
            missing_ok=True
        )  # this attempt's outcome is recorded anew
        record, slot = slurm.current()
        print(
            f"runner: Slurm job {(record or {}).get('job_id')} on {(record or {}).get('node')}, "
            f"{slot.describe() if slot else 'no allocation'}",
            flush=True,
        )
        try:
            if resumable(self.run_dir, self.task_cfg, self.overrides):
                ret = self._resume()
            else:
                ret = run_job(
                    hydra_context=self.hydra_context,
                    task_function=self.task_function,
                    config=_placed(self.cfg, slot),
                    job_dir_key="hydra.sweep.dir",
                    job_subdir_key="hydra.sweep.subdir",
                )
        except BaseException as exc:  # noqa: BLE001 - e.g. a signal outside the run's own handling
            ret = JobReturn(overrides=self.overrides, status=JobStatus.FAILED, _return_value=exc)
        code = _exit_code(ret)
        error = (
            None
            if code == 0 or ret.status == JobStatus.COMPLETED
            else f"{type(ret._return_value).__name__}: {ret._return_value}"
        )
        sweep.write_job_status(self.run_dir, code, error, self.overrides)
        if code == EXIT_INTERRUPTED and signal.SIGUSR2 in got:  # out of time: come back and resume
            subprocess.run(["scontrol", "requeue", os.environ.get("SLURM_JOB_ID", "")], check=False)
        return _picklable(ret, code)

    def _resume(self) -> JobReturn:
        from runner.flows import resume

        code = 0
        try:
            m = resume.resume(
                self.run_dir, [f"+resume={self.run_dir}"], echo=lambda line: print(line, flush=True)
            )
            print(f"{m.status} {self.run_dir} (resumed from step {m.resumes[-1]['from_step']})", flush=True)
        except RunnerError as exc:
            print(f"runner: error: {exc.message}", flush=True)
            code = exc.exit_code
        ret = _skipped_return(_SweepJob(0, self.overrides, self.cfg, self.run_dir, self.task_cfg))
        ret.return_value = code
        return ret


def _output_to(path: Path) -> None:
    """This process's stdout and stderr, appended to ``path`` (the job's console.log)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _placed(cfg: DictConfig, slot: slots_mod.Slot | None) -> DictConfig:
    """The job's config pinned to its allocation (as a local sweep pins a job to its slot)."""
    cfg = copy.deepcopy(cfg)
    if slot is None:
        return cfg
    launch = OmegaConf.to_container(cfg.launch, resolve=True) if "launch" in cfg else {}
    with read_write(cfg), open_dict(cfg):
        for key, value in slots_mod.placement(slot, launch).items():  # type: ignore[arg-type]
            cfg.launch[key] = value
    return cfg


def _picklable(ret: JobReturn, code: int) -> JobReturn:
    """What the sweep process gets back: the JobReturn, with an exception it can unpickle."""
    import pickle

    try:
        pickle.dumps(ret)
    except Exception:  # noqa: BLE001 - whatever does not pickle is replaced by what it says
        ret._return_value = RuntimeError(str(ret._return_value)) if ret.status == JobStatus.FAILED else code
    return ret
