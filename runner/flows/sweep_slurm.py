"""A sweep on Slurm: its jobs as one job array, each a pinned container with a manifest.

The sweep of :mod:`runner.flows.sweep` with Slurm in place of this machine's slots, on submitit
(which writes the ``sbatch`` script and carries each job to its node as a pickle):

* **Preflight.** Before anything is submitted: a controller must answer and the partition must
  exist (:func:`runner.host.slurm.check`), else one line and exit status 3 or 2.
* **One array.** All jobs go in one job array, each asking for the most demanding job's nodes,
  cores and GPUs (or the launcher's ``cpus_per_task`` / ``gpus_per_node``). A job over several
  nodes (``launch.nodes``) runs the runner on its first node, which starts one container per
  node (:mod:`runner.host.nodes`).
* **On the node** (:func:`on_node`). A job runs the image the sweep resolved before submitting,
  by its id (``launch.image_id``), never by a tag its node's engine could hold for another image
  (a node without it pulls it by the digest ``image.registry`` recorded, ``launch.image_ref``);
  it pins its container to its allocation's cores and hands it the GPUs Slurm gave it
  (:mod:`runner.core.cluster`); the manifest's ``cluster`` records the
  job id, array index, node list, partition and allocation. Its terminal output is ``console.log``
  in its run dir; Slurm's own log of it is under ``<sweep dir>/.slurm``.
* **Preemption and requeue.** SIGTERM (``scancel``, a preemption, ``scontrol requeue``) stops the
  container and records the run as interrupted, its checkpoints kept. A requeued job finds that
  record in its run dir and resumes it (:mod:`runner.flows.resume`), so it ends with the bits an
  uninterrupted run has. Slurm's time-limit warning (SIGUSR2) does the same and then requeues the
  job itself. A sweep run again with ``hydra.launcher.skip_completed=true`` skips completed jobs
  and resumes interrupted ones in place.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.core import cluster
from runner.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, RunnerError
from runner.flows.sweep import (
    CONSOLE_LOG,
    JobEnd,
    Stop,
    SweepJob,
    SweepSettings,
    choose,
    finish,
    output_to,
    picklable,
    report,
    resolve_images,
    resumable,
    run_task,
)
from runner.host import slurm, snapshot
from runner.host import sweep_records as job_records

log = logging.getLogger(__name__)
_GONE = ("CANCELLED", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL")  # states of a job that may never have reported


@dataclass
class SlurmSettings(SweepSettings):
    """``hydra/launcher=slurm``. Left at null, what a job asks Slurm for is derived from the jobs
    themselves: cores from ``launch.processes`` × ``determinism.threads``, GPUs from ``launch.gpus``."""

    # the partition to submit to; null: the cluster's default partition
    partition: str | None = None
    # each job's time limit in minutes (Slurm's --time)
    timeout_min: int = 60
    # cores per job; null: the most demanding job's processes × threads
    cpus_per_task: int | None = None
    # GPUs per job; null: the most demanding job's launch.gpus
    gpus_per_node: int | None = None
    # memory per job in GB; null: the partition's default
    mem_gb: int | None = None
    # at most this many of the sweep's jobs run at once (the array's %N); null: as Slurm schedules them
    array_parallelism: int | None = None
    # where Slurm's and submitit's own logs of each job go; null: <sweep dir>/.slurm
    folder: str | None = None
    # any other sbatch option, e.g. {account: lab, qos: high, constraint: a100}
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    # lines run in the job before the runner starts (module load …, a rootless engine's socket …)
    setup: list[str] = field(default_factory=list)
    # seconds between checks of the jobs' states
    poll_s: float = 2.0


def run_slurm(jobs: list[SweepJob], sweep_dir: Path, settings: SlurmSettings) -> dict[int, JobEnd]:
    """The whole sweep on Slurm: check the cluster, choose, resolve images, submit, wait, summarise;
    each job's end by its index. Raises RunnerError when the sweep did not succeed."""
    slurm.check(settings.partition)  # before any file is written: no cluster, no sweep dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    chosen = choose(jobs, sweep_dir, settings.skip_completed, resume=True)
    if chosen.to_run:
        resolve_images(chosen.to_run)
    waiting = Waiting(submit(chosen.to_run, sweep_dir, settings), settings.poll_s)
    ends = {**chosen.ends, **waiting.run()}
    stopped = "its Slurm jobs were cancelled and recorded" if waiting.stop.signum is not None else None
    finish(sweep_dir, jobs, ends, settings.summary, stopped)
    return ends


def submit(jobs: list[SweepJob], sweep_dir: Path, settings: SlurmSettings) -> dict[str, tuple[SweepJob, Any]]:
    """One sbatch (a job array) for the sweep; each Slurm job id with its sweep job and submitit's job."""
    if not jobs:
        return {}
    asks = cluster.request(
        [j.config for j in jobs if j.config is not None], settings.cpus_per_task, settings.gpus_per_node
    )
    folder = Path(settings.folder or sweep_dir / ".slurm")
    calls = [functools.partial(on_node, job) for job in jobs]
    handles = slurm.submit_array(calls, folder, sbatch_parameters(asks, settings, sweep_dir.name), str(asks))
    out = {}
    for job, h in zip(jobs, handles, strict=True):
        log.info(f"{job} → Slurm job {h.job_id}: {job.run_dir}")
        out[str(h.job_id)] = (job, h)
    return out


def sbatch_parameters(
    asks: cluster.SlurmAsk, settings: SlurmSettings, sweep_name: str
) -> slurm.SbatchParameters:
    """submitit's parameters for each job of the sweep. A job over several nodes holds them all
    (sbatch's ``--nodes``), while submitit's own step, where the runner runs, takes the first
    node alone: the runner starts the other nodes' containers itself (:mod:`runner.host.nodes`)."""
    nodes = asks["nodes"]
    params: slurm.SbatchParameters = {
        "time": settings.timeout_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "stderr_to_stdout": True,
        "job_name": f"runner-{sweep_name}"[:64],
        "setup": list(settings.setup),
        "additional_parameters": {
            "chdir": str(snapshot.project_root()),
            **({"nodes": nodes} if nodes > 1 else {}),
            **settings.additional_parameters,
        },
        "cpus_per_task": asks["cpus_per_task"],
    }
    if "gpus_per_node" in asks:
        params["gpus_per_node"] = asks["gpus_per_node"]
    if nodes > 1:
        params["srun_args"] = ["--nodes=1", "--ntasks=1"]
    if settings.partition:
        params["partition"] = settings.partition
    if settings.mem_gb:
        params["mem"] = f"{settings.mem_gb}GB"
    if settings.array_parallelism:
        params["array_parallelism"] = settings.array_parallelism
    return params


class Waiting:
    """Waits until every job has left Slurm's queue for good (a requeued one comes back: it is
    waited for); a signal to the sweep cancels them all (``stop``)."""

    def __init__(self, handles: dict[str, tuple[SweepJob, Any]], poll_s: float) -> None:
        self.pending = dict(handles)
        self.poll_s = poll_s
        self.stop = Stop("cancelling the sweep's Slurm jobs; waiting for them to record themselves")
        self._unseen: dict[str, int] = {}

    def run(self) -> dict[int, JobEnd]:
        ends: dict[int, JobEnd] = {}
        cancelled = False
        with self.stop.watching():
            while self.pending:
                if self.stop.signum is not None and not cancelled:
                    slurm.cancel(list(self.pending))
                    cancelled = True
                ends.update(self._poll())
                if self.pending:
                    time.sleep(self.poll_s)
        return ends

    def _poll(self) -> dict[int, JobEnd]:
        """The jobs that have ended since the last look. squeue lists a job for MinJobAge after it
        ends: one it misses three times running is gone."""
        states = slurm.states(list(self.pending))
        for jid in self.pending:
            self._unseen[jid] = 0 if jid in states else self._unseen.get(jid, 0) + 1
        ends = {}
        for jid in [j for j in self.pending if not slurm.is_active(states.get(j))]:
            if jid in states or self._unseen[jid] > 2:
                job, handle = self.pending.pop(jid)
                ends[job.idx] = _outcome(job, handle, states.get(jid))
                report(job, ends[job.idx])
        return ends


def _outcome(job: SweepJob, handle: Any, state: str | None) -> JobEnd:
    """The job's end as its node sent it back; a job that ended without one (cancelled before it
    started, killed, its node lost) gets a record saying so."""
    if not handle.paths.result_pickle.exists() and (state is None or state in _GONE):
        code, why = EXIT_INTERRUPTED, f"Slurm job {handle.job_id} ended {state or 'unseen'} before reporting"
    else:
        try:
            end = handle.result()
        except Exception as exc:  # noqa: BLE001 - submitit's error carries the job's traceback and log
            code, why = (
                EXIT_FAILED,
                f"Slurm job {handle.job_id} ({state}): " + " ".join(str(exc).split())[:300],
            )
        else:
            if isinstance(end, JobEnd):
                return end
            code, why = EXIT_FAILED, f"Slurm job {handle.job_id} ({state}) sent back {type(end).__name__}"
    job_records.write_job_status(job.run_dir, code, why, job.overrides)
    return JobEnd(code, why)


# -- on the node ------------------------------------------------------------------------------------------
def on_node(job: SweepJob) -> JobEnd:
    """One sweep job, as submitit calls it on its node (again after a requeue): an interrupted run
    of it is resumed, else its task runs, pinned to the allocation; its end is recorded."""
    got: list[int] = []

    def interrupt(
        signum: int, _frame: object
    ) -> None:  # SIGTERM: scancel, preemption, requeue; SIGUSR2: time
        got.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGUSR2):
        signal.signal(sig, interrupt)
    job.run_dir.mkdir(parents=True, exist_ok=True)
    output_to(job.run_dir / CONSOLE_LOG)
    (job.run_dir / job_records.JOB_STATUS_FILE).unlink(
        missing_ok=True
    )  # this attempt's outcome is recorded anew
    record, slot = slurm.current()
    if slot is not None and job.image:  # the image the sweep resolved, by its id: never a tag here
        slot = dataclasses.replace(slot, image=job.image, image_ref=job.image_ref)
    where = slot.describe() if slot else "no allocation"
    print(
        f"runner: Slurm job {(record or {}).get('job_id')} on {(record or {}).get('node')}, {where}",
        flush=True,
    )
    if resumable(job):
        end = _resume(job)
        job_records.write_job_status(job.run_dir, end.exit_code, end.error, job.overrides)
    else:
        end = run_task(job, slot)
    if end.exit_code == EXIT_INTERRUPTED and signal.SIGUSR2 in got:  # out of time: come back and resume
        slurm.requeue_self()
    return picklable(end)


def _resume(job: SweepJob) -> JobEnd:
    """The job's interrupted run, continued in its run dir."""
    from runner.flows import resume

    try:
        m = resume.resume(job.run_dir, [f"+resume={job.run_dir}"], echo=lambda line: print(line, flush=True))
    except RunnerError as exc:
        print(f"runner: error: {exc.message}", flush=True)
        return JobEnd(exc.exit_code, exc.message)
    except KeyboardInterrupt:
        return JobEnd(EXIT_INTERRUPTED, "KeyboardInterrupt: ")
    print(f"{m.status} {job.run_dir} (resumed from step {m.resumes[-1]['from_step']})", flush=True)
    return JobEnd(0)
