"""A sweep: the jobs of a Hydra multirun, chosen, placed, run, recorded and judged.

The Hydra launchers (``hydra/launcher=runner_slots`` and ``hydra/launcher=slurm``) compose each
job's config and hand this flow :class:`SweepJob`\\ s, each with a way to run itself; what happens
to them is decided here, the same for both:

* **Skip completed jobs** (``hydra.launcher.skip_completed=true``): a job whose run dir holds a
  completed manifest of identical inputs is skipped; any other leftover is moved to
  ``<sweep dir>/.superseded/`` and the job runs again (on Slurm an interrupted run is resumed
  in place instead, :mod:`runner.flows.sweep_slurm`).
* **One image per sweep.** Images are resolved (found, or built once) before any job starts; the
  jobs then find the tag instead of each building it.
* **Slots** (the local launcher): the machine is cut into disjoint slots (:mod:`runner.core.slots`),
  a set of CPU cores and, for GPU jobs, of GPUs. A job runs in a forked process holding one slot;
  when it ends the slot goes to the next job. Concurrent jobs never share a device, and under the
  strict profile a job's bits do not depend on how many ran beside it.
* **Each job's status**: a job that fails is recorded (``job_status.json`` or its manifest) and
  the others go on.
* **Summary and verdict**: ``summary.json`` and ``summary.png`` at the sweep root
  (:mod:`runner.flows.summary`); then the sweep's exit status, judged from its jobs' ends: 130
  when a signal stopped it, 1 when a job did not complete, else 0.

A *sweep job* is one run of the task function with one set of overrides, in its own run dir
(not the worker's ``job.json``).
"""

from __future__ import annotations

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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from runner.core import layout
from runner.core import slots as slots_mod
from runner.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, RunnerError
from runner.core.json_types import JsonObject
from runner.core.manifest import Manifest
from runner.host import facts, records, snapshot
from runner.host import sweep_records as job_records
from runner.host.interrupts import sigterm_as_interrupt

log = logging.getLogger(__name__)
CONSOLE_LOG = "console.log"  # a job's terminal output, in its run dir, when it does not go to the terminal


@dataclass
class SweepSettings:
    """What both launchers' settings share (``hydra.launcher.…``)."""

    # write summary.json and summary.png at the sweep root when the jobs have ended
    summary: bool = True
    # re-running a sweep (same hydra.sweep.dir): skip the jobs whose run dir holds a completed
    # manifest for identical inputs; run the others again (a leftover run dir goes to .superseded/)
    skip_completed: bool = False


@dataclass
class SlotSettings(SweepSettings):
    """``hydra/launcher=runner_slots``. Left at null, a setting is derived from the machine and the
    jobs (cores: this process's CPU affinity; GPUs: ``CUDA_VISIBLE_DEVICES`` or the driver; per-job
    needs: ``launch.gpus``, or ``launch.processes`` × ``determinism.threads``)."""

    # how many jobs run at once; null: as many as fit (GPUs / GPUs per job, or cores / cores per job)
    slots: int | None = None
    # CPU cores pinned to each slot (cpuset_cpus); null: what one job needs, or an even share of `cpus`
    cpus_per_slot: int | None = None
    # the cores to hand out, e.g. "0-7"; null: every core this process may run on
    cpus: str | None = None
    # the GPUs to hand out, e.g. [0, 1, 2, 3]; null: every GPU this machine shows
    gpus: list[int] | None = None


@dataclass(frozen=True)
class JobEnd:
    """How a sweep job ended: its exit status (0: completed) and why not, when it did not.

    ``payload`` is the launcher's own record of the job (Hydra's ``JobReturn``), carried back from
    the job's process untouched; None when the job never reported (skipped, killed, not started)."""

    exit_code: int
    error: str | None = None
    skipped: bool = False  # completed by an earlier run of the sweep
    payload: Any = field(default=None, compare=False)


JobTask = Callable[[slots_mod.Slot | None], JobEnd]  # runs the job here, placed in the slot given


@dataclass
class SweepJob:
    """One job of the sweep: its overrides, where it runs, its config, and how to run it."""

    idx: int
    overrides: list[str]
    run_dir: Path
    config: JsonObject | None  # resolved as its task sees it; None when it does not resolve
    task: JobTask
    name: str = ""  # its overrides as the log shows them
    image: str | None = None  # the id of the image resolved for it before any job started
    image_ref: str | None = None  # and where a registry holds it by digest, when image.registry pushed it

    def __str__(self) -> str:
        return f"#{self.idx} {self.name}"


@dataclass(frozen=True)
class Chosen:
    """Of a sweep's jobs: those to run, and how each skipped one ended (before, completed)."""

    to_run: list[SweepJob]
    ends: dict[int, JobEnd]


# -- which jobs run ---------------------------------------------------------------------------------------
def choose(jobs: Sequence[SweepJob], sweep_dir: Path, skip_completed: bool, resume: bool = False) -> Chosen:
    """The jobs to run. With ``skip_completed``: a job completed before is skipped; with ``resume``
    too, an interrupted one is resumed in place (:func:`runner.flows.sweep_slurm.on_node`); any other
    leftover is set aside."""
    to_run, ends = [], {}
    for job in jobs:
        if skip_completed and completed_before(job):
            log.info(f"{job}: completed before, skipped ({job.run_dir})")
            ends[job.idx] = JobEnd(0, skipped=True)
            continue
        if skip_completed and resume and resumable(job):
            log.info(f"{job}: interrupted before; it resumes in {job.run_dir}")
        elif skip_completed and job.run_dir.exists():
            set_aside(sweep_dir, job.run_dir)
        to_run.append(job)
    return Chosen(to_run, ends)


def completed_before(job: SweepJob) -> bool:
    """Does the job's run dir hold a completed run of these very inputs?"""
    m = _manifest(job)
    return m is not None and job_records.completed_for(m.model_dump(), job.config or {}, job.overrides)


def resumable(job: SweepJob) -> bool:
    """Does the job's run dir hold an interrupted run of these very inputs, with its code snapshot
    (so a requeued job continues it instead of starting over)?"""
    m = _manifest(job)
    if m is None or m.status != "interrupted" or m.code is None:
        return False
    return job_records.inputs_key(m.config, m.overrides) == job_records.inputs_key(
        job.config or {}, job.overrides
    )


def _manifest(job: SweepJob) -> Manifest | None:
    if job.config is None or not (job.run_dir / layout.MANIFEST).is_file():
        return None
    try:
        return records.read_manifest(job.run_dir)
    except RunnerError:
        return None


def set_aside(sweep_dir: Path, run_dir: Path) -> Path:
    """A job run again runs in a clean run dir; what its last attempt left is kept aside."""
    dest_root = sweep_dir / job_records.SUPERSEDED_DIR
    dest_root.mkdir(exist_ok=True)
    stem = (
        run_dir.relative_to(sweep_dir).as_posix().replace("/", "_")
        if run_dir.is_relative_to(sweep_dir)
        else run_dir.name
    )
    n = 1
    while (dest_root / f"{stem}.{n}").exists():
        n += 1
    dest = dest_root / f"{stem}.{n}"
    shutil.move(str(run_dir), dest)
    log.info(f"{run_dir}: not a completed run of these inputs; moved to {dest} and running again")
    return dest


# -- before the jobs start --------------------------------------------------------------------------------
def resolve_images(jobs: Sequence[SweepJob]) -> None:
    """Find or build each distinct image the jobs need, once, before any job starts; each job
    is told its image's id (``job.image``)."""
    from runner.core import spec
    from runner.host import engine as engines
    from runner.host import image_builder

    root = snapshot.project_root()
    wanted: dict[str, spec.RunPlan] = {}
    keys: dict[int, str] = {}
    for job in jobs:
        if job.config is None:
            continue
        try:
            p = spec.plan_run(job.config, job.run_dir, root, spec.Host(os.environ, os.getuid(), os.getgid()))
            facts.check_gpus(p.launch)  # nothing is built for a job that asks for GPUs this host lacks
        except RunnerError:
            continue  # this job fails on its own, with its own record
        if not p.containerized:
            continue
        variant = p.config.image.variant(p.image_kind)
        key = json.dumps([p.launch.engine, p.image_kind, variant], sort_keys=True, default=str)
        wanted.setdefault(key, p)
        keys[job.idx] = key
    ids: dict[str, tuple[str, str | None]] = {}
    for key, p in wanted.items():
        engine = engines.connect(p.launch.engine)  # the user's own config chose it
        try:
            resolved = image_builder.resolve_image(engine, p, root, log.info)
            ids[key] = (resolved.record["id"], resolved.record.get("registry_ref"))
            how = "built" if resolved.record["built_now"] else "found"
            log.info(f"image {resolved.tag}: {how} for this sweep ({ids[key][0]})")
        finally:
            engine.close()  # the jobs are forked: they open their own connections
    for job in jobs:
        job.image, job.image_ref = ids.get(keys.get(job.idx, ""), (None, None))


def plan_slots(jobs: Sequence[SweepJob], settings: SlotSettings) -> list[slots_mod.Slot]:
    """This machine cut into slots for these jobs (cores this process may use, GPUs it shows)."""
    # a job whose launch does not parse is planned around: it fails alone, in its slot, when it runs
    needs = [n for j in jobs if j.config is not None and (n := slots_mod.job_needs(j.config)) is not None]
    usable = facts.detect_cpus()
    cpus = slots_mod.parse_cpu_list(settings.cpus) if settings.cpus else usable
    if not set(cpus) <= set(usable):
        raise RunnerError(
            f"hydra.launcher.cpus={settings.cpus}: this process may only run on cores "
            f"{slots_mod.format_cpu_list(usable)}",
            EXIT_USAGE,
        )
    wants_gpus = any(n.gpus for n in needs)
    gpus = (settings.gpus if settings.gpus is not None else facts.detect_gpus()) if wants_gpus else []
    plan = slots_mod.plan_slots(cpus, gpus, needs, settings.slots, settings.cpus_per_slot)
    smallest = min(len(s.cpus) for s in plan) if plan else 0
    biggest_need = max((n.cores for n in needs if not n.gpus), default=0)
    if smallest and biggest_need > smallest:
        log.warning(f"a job needs {biggest_need} cores but a slot has {smallest}: it will run, more slowly")
    return plan


# -- the local sweep --------------------------------------------------------------------------------------
def run_local(jobs: Sequence[SweepJob], sweep_dir: Path, settings: SlotSettings) -> dict[int, JobEnd]:
    """The whole sweep on this machine: choose, resolve images, run the jobs in slots, summarise;
    each job's end by its index. Raises RunnerError when the sweep did not succeed (see :func:`judge`)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    chosen = choose(jobs, sweep_dir, settings.skip_completed)
    plan = plan_slots(chosen.to_run, settings)
    if chosen.to_run:
        resolve_images(chosen.to_run)
    log.info(
        f"Launching {len(chosen.to_run)} of {len(jobs)} jobs in {len(plan)} slot(s): "
        + "; ".join(s.describe() for s in plan)
    )
    pool = SlotPool(plan, quiet=len(plan) > 1 and len(chosen.to_run) > 1)
    ends = {**chosen.ends, **pool.run(chosen.to_run)}
    stopped = "finished jobs are recorded" if pool.stop.signum is not None else None
    finish(sweep_dir, jobs, ends, settings.summary, stopped)
    return ends


class SlotPool:
    """Runs jobs, at most one per slot at a time, each in a forked process, until all have ended
    or a signal came (``stop``)."""

    def __init__(self, plan: Sequence[slots_mod.Slot], quiet: bool) -> None:
        self.free = sorted(plan, key=lambda s: s.index)
        self.quiet = quiet  # each job's terminal output to its console.log
        self.stop = Stop("no new jobs; waiting for running jobs to stop and record themselves")
        self._forwarded = False
        self._running: dict[Any, tuple[SweepJob, Any, slots_mod.Slot]] = {}

    def run(self, jobs: Sequence[SweepJob]) -> dict[int, JobEnd]:
        ends: dict[int, JobEnd] = {}
        pending = deque(jobs)
        with self.stop.watching():
            while pending or self._running:
                while pending and self.free and self.stop.signum is None:
                    self._start(pending.popleft())
                if not self._running:
                    break
                ends.update(self._collect())
                self._forward_sigterm()
        for job in pending:
            log.info(f"{job}: not started (sweep interrupted)")
            ends[job.idx] = JobEnd(EXIT_INTERRUPTED, "not started: sweep interrupted")
        return ends

    def _start(self, job: SweepJob) -> None:
        slot = self.free.pop(0)
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        sys.stdout.flush()
        sys.stderr.flush()
        proc = ctx.Process(target=_child, name=f"runner-job-{job.idx}", args=(send, job, slot, self.quiet))
        proc.start()
        send.close()
        self._running[receive] = (job, proc, slot)
        log.info(f"{job} → {slot.describe()}: {job.run_dir}")

    def _collect(self) -> dict[int, JobEnd]:
        """The jobs that ended in the last half second; their slots are free again."""
        ends = {}
        for conn in multiprocessing.connection.wait(list(self._running), timeout=0.5):
            job, proc, slot = self._running.pop(conn)
            end = _receive(conn)
            proc.join()
            ends[job.idx] = end if end is not None else _lost(job, proc.exitcode)
            self.free = sorted([*self.free, slot], key=lambda s: s.index)
            report(job, ends[job.idx])
        return ends

    def _forward_sigterm(self) -> None:
        """A terminal's Ctrl-C reaches the jobs itself; SIGTERM does not: it is passed on, once."""
        if self.stop.signum == signal.SIGTERM and not self._forwarded:
            for _job, proc, _slot in self._running.values():
                if proc.pid and proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)
            self._forwarded = True


class Stop:
    """The first SIGINT or SIGTERM the sweep's process got while :meth:`watching` (None: none)."""

    def __init__(self, what: str) -> None:
        self.what = what  # what the sweep does when stopped
        self.signum: int | None = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum = signum
            log.info(f"stopping: {self.what}")

    @contextmanager
    def watching(self) -> Iterator[Stop]:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)


def _child(send: Any, job: SweepJob, slot: slots_mod.Slot, quiet: bool) -> None:
    """One job, in a forked process: its task, then its end recorded and sent back."""
    signal.signal(signal.SIGINT, signal.default_int_handler)  # the parent's handler counts signals
    sigterm_as_interrupt()
    if quiet:
        job.run_dir.mkdir(parents=True, exist_ok=True)
        output_to(job.run_dir / CONSOLE_LOG)
    end = run_task(job, slot)
    send.send(picklable(end))
    send.close()


def run_task(job: SweepJob, slot: slots_mod.Slot | None) -> JobEnd:
    """The job's task, here; whatever it raised is its end; its status is recorded (a task that
    recorded its own, a RunnerError's message, keeps it: the first record wins)."""
    try:
        end = job.task(slot)
    except BaseException as exc:  # noqa: BLE001 - e.g. Ctrl-C outside the run's own handling
        code = EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else EXIT_FAILED
        end = JobEnd(code, f"{type(exc).__name__}: {exc}")
    job_records.write_job_status(job.run_dir, end.exit_code, end.error, job.overrides)
    return end


def picklable(end: JobEnd) -> JobEnd:
    """The end as it can travel to the sweep's process: without its payload when that does not pickle."""
    try:
        pickle.dumps(end)
    except Exception:  # noqa: BLE001 - whatever does not pickle stays behind
        return replace(end, payload=None)
    return end


def _receive(conn: Any) -> JobEnd | None:
    try:
        return conn.recv()
    except (EOFError, OSError, pickle.UnpicklingError):
        return None
    finally:
        conn.close()


def _lost(job: SweepJob, exitcode: int | None) -> JobEnd:
    """A job whose process ended without a word (killed): recorded as such."""
    code = EXIT_INTERRUPTED if exitcode in (-signal.SIGINT, -signal.SIGTERM) else EXIT_FAILED
    why = f"job process ended with status {exitcode} before reporting"
    job_records.write_job_status(job.run_dir, code, why, job.overrides)
    return JobEnd(code, why)


def output_to(path: Path) -> None:
    """This process's stdout and stderr, appended to ``path`` (the job's console.log)."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


# -- after the jobs ---------------------------------------------------------------------------------------
def report(job: SweepJob, end: JobEnd) -> None:
    """One line for the job that ended: completed, or its status, exit status and error."""
    status = job_records.read_job_status(job.run_dir)
    what = (
        "completed"
        if end.exit_code == 0
        else f"{status.status if status else 'failed'} (exit {end.exit_code})"
    )
    detail = f": {status.error}" if end.exit_code and status and status.error else ""
    log.info(f"{job}: {what}{detail}")


def finish(
    sweep_dir: Path, jobs: Sequence[SweepJob], ends: dict[int, JobEnd], summary: bool, stopped: str | None
) -> None:
    """Every job has ended: write the summary, then judge the sweep (raises when it did not
    succeed). ``stopped``: what became of the jobs when a signal stopped the sweep, else None."""
    if summary:
        write_summary(sweep_dir)
    problem = judge(sweep_dir, jobs, ends, stopped, summary)
    if problem is not None:
        raise problem


def judge(
    sweep_dir: Path,
    jobs: Sequence[SweepJob],
    ends: dict[int, JobEnd],
    stopped: str | None = None,
    summary: bool = True,
) -> RunnerError | None:
    """The sweep's verdict from its jobs' ends: exit 130 when a signal stopped it, 1 when a job did
    not complete, None when every job completed."""
    if stopped is not None:
        return RunnerError(f"sweep interrupted; {stopped} in {sweep_dir}", EXIT_INTERRUPTED)
    failed = [(job, ends[job.idx]) for job in jobs if ends[job.idx].exit_code != 0]
    if not failed:
        return None
    where = "see summary.json at the sweep root" if summary else "see job_status.json in their run dirs"
    return RunnerError(
        f"{len(failed)} job(s) of the sweep did not complete: "
        + ", ".join(f"#{job.idx} (exit {end.exit_code})" for job, end in failed)
        + f" — {where}",
        EXIT_FAILED,
    )


def write_summary(sweep_dir: Path) -> None:
    """``summary.json`` and ``summary.png`` at the sweep root; a sweep without a summary says why."""
    from runner.flows import summary

    try:
        result = summary.write(sweep_dir)
    except RunnerError as exc:
        log.warning(f"no summary: {exc.message}")
        return
    for line in summary.describe_line(result):
        log.info(line)
    log.info(f"summary: {sweep_dir / summary.SUMMARY_JSON}, {sweep_dir / summary.SUMMARY_PNG}")
