"""A run's manifest, built from its plan, its input, what it gathered and how it ended. Pure.

The pipeline (:mod:`runner.flows.run`) fills a :class:`Gathered` step by step (code, data,
image, environment, timings) and, however the run ends — completed, failed, interrupted, or a
bug — collects an :class:`RunOutcome` and hands both to :func:`build`. A run that stopped early
therefore still gets a whole manifest, holding whatever it had got to. Writing it is
:func:`runner.host.records.write_manifest`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.core import fingerprints, layout, manifest
from runner.core.audit_rules import EXIT_REFUSED
from runner.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, NO_SPACE, signal_name
from runner.core.manifest import Status
from runner.core.run_input import Resume, RunInput
from runner.core.spec import JOB, RunPlan
from runner.core.worker_io import AuditVerdict, WorkerResult

RUNNING = "running"
ABANDONED = "abandoned"


def status_read(recorded: str, runner_alive: bool) -> str:
    """How a run reads: its recorded status, except that a record still saying ``running`` whose
    runner is gone (``runner_alive`` False: no runner holds the run dir's claim, see
    :func:`runner.host.rundir.runner_alive`) reads ``abandoned``: it was killed without a word
    (SIGKILL, the machine lost) and continues with ``+resume=RUN_DIR``."""
    return ABANDONED if recorded == RUNNING and not runner_alive else recorded


def provisional(plan: RunPlan, run: RunInput, got: Gathered, now: float) -> manifest.Manifest:
    """The record a run writes as it takes its dir and again once its image is known: status
    ``running`` with what it has so far (config, code, image), so that a run killed outright
    still leaves one that reads, and resumes."""
    out = RunOutcome(
        ending=Ending("running", 0, None),
        exit_code=0,
        log_tail=[],
        result=None,
        outputs={},
        fingerprints=None,
        finished=now,
    )
    return build(plan, run, got, out)


@dataclass
class Gathered:
    """What a run has had so far; each step of the pipeline fills in its part."""

    started: float
    host: manifest.HostFacts
    resumes: list[manifest.ResumeRecord] = field(default_factory=list)
    code: manifest.Code | None = None
    data: manifest.Data | None = None
    image: manifest.Image | None = None
    engine: manifest.Engine | None = None
    environment: dict[str, str] = field(
        default_factory=dict
    )  # as the training process gets it (redacted by build)
    cluster: manifest.ClusterRecord | None = None  # the Slurm job the runner ran in; None outside one
    image_seconds: float | None = None
    container_seconds: float | None = None


@dataclass(frozen=True)
class FingerprintFile:
    """The run's ``fingerprints.jsonl``: its sha256 and the rows it holds (as the tolerant reading
    of :func:`runner.core.fingerprints.parse` gives them: each with an integer ``step``)."""

    sha256: str
    rows: list[fingerprints.Row]


@dataclass(frozen=True)
class Ending:
    """How a run ended: its status, the runner's exit status for it, and one line on why."""

    status: Status
    exit_code: int
    error: str | None


@dataclass(frozen=True)
class RunOutcome:
    """What a run left behind, collected once it is over."""

    ending: Ending
    exit_code: int  # the training process's own status when it has one, else the runner's
    log_tail: list[str]
    result: WorkerResult | None  # result.json as the worker wrote it (None when missing or unreadable)
    outputs: Mapping[str, Any]  # file name → {sha256, bytes}
    fingerprints: FingerprintFile | None
    finished: float
    audit: AuditVerdict | None = None  # the determinism audit's verdict before training; None: none ran
    op_traces: Mapping[str, manifest.FileRecord] | None = None  # per-operation trace files written, by name


@dataclass(frozen=True)
class Exited:
    """How the training process ended, as its executor saw it (``oom_where``: whose container the
    kernel killed for memory, where the executor knows better than the plan's limit: a node's)."""

    code: int
    oom_killed: bool = False
    interrupted: bool = False
    oom_where: str | None = None


def ending(
    exited: Exited,
    *,
    plan: RunPlan,
    audit: AuditVerdict | None = None,
    log_tail: list[str] | None = None,
) -> Ending:
    """The ending of a run whose training process ended as ``exited`` says (``audit``: what the
    determinism audit before training found, when one ran; ``log_tail``: the log's last lines, where
    a training process that found its disk full said where)."""
    exit_code, interrupted = exited.code, exited.interrupted
    said = [x for x in log_tail or [] if NO_SPACE in x]
    if said and exit_code != 0 and not interrupted:
        line = said[-1][said[-1].index(NO_SPACE) :]
        if plan.containerized:  # the path as the host sees it
            line = line.replace(f" {JOB}/", f" {plan.run_dir}/")
        return Ending(
            "failed", EXIT_FAILED, f"{line}; once space is freed, +resume={plan.run_dir} continues it"
        )
    if interrupted:
        stopped = "container stopped and removed" if plan.containerized else "training processes stopped"
        return Ending("interrupted", EXIT_INTERRUPTED, f"interrupted (Ctrl-C / SIGTERM); {stopped}")
    if exit_code != 0:
        why = why_failed(exit_code, exited.oom_killed, plan.launch.mem_limit, audit, exited.oom_where)
        refused = audit is not None and audit.refused  # stopped before training, as `runner audit` is
        return Ending("failed", EXIT_REFUSED if refused else EXIT_FAILED, why)
    return Ending("completed", 0, None)


def why_failed(
    exit_code: int,
    oom_killed: bool,
    mem_limit: Any = None,
    audit: AuditVerdict | None = None,
    oom_where: str | None = None,
) -> str:
    """One line on how training ended, for the record and the terminal (``oom_where``: whose
    container the kernel killed for memory, under which limit: a node's, say)."""
    if audit and audit.refused and audit.message:  # the audit stopped it before training
        return audit.message
    if oom_killed:
        where = oom_where or (f"launch.mem_limit={mem_limit}" if mem_limit else None)
        return "killed: out of memory" + (f" ({where})" if where else "")
    killer = signal_name(exit_code)
    if killer:
        return f"training was killed by {killer} (exit status {exit_code})"
    return f"training exited with status {exit_code}"


def resumes(prior: manifest.Manifest, resume: Resume, container: str) -> list[manifest.ResumeRecord]:
    """The ``resumes`` of a run resumed from the attempt ``prior`` records, this resume last."""
    ended: manifest.Attempt = {
        "status": status_read(prior.status, runner_alive=False),  # the resume holds the claim now
        "exit_code": prior.exit_code,
        "error": prior.error,
        "container": prior.launch.get("container"),
        "log_tail": prior.log_tail[-10:],
        "steps": prior.fingerprints.steps if prior.fingerprints else 0,
        "timings": prior.timings.model_dump(),
    }
    return [*prior.resumes, {**resume.entry(), "container": container, "previous": ended}]


def launch_section(plan: RunPlan) -> manifest.LaunchRecord:
    """The manifest's ``launch``: how the run was started."""
    gpus = plan.gpus
    return {
        "backend": str(plan.backend),
        "user": plan.user,
        "gpus": list(gpus) if isinstance(gpus, tuple) else gpus,
        "world_size": plan.world_size,
        "nodes": plan.nodes,
        "accelerator": plan.accelerator,
        "container": plan.container_name if plan.containerized else None,
        "cpuset_cpus": plan.launch.cpuset_cpus,
        "mem_limit": plan.launch.mem_limit,
    }


def fingerprint_section(plan: RunPlan, found: FingerprintFile | None) -> Mapping[str, Any] | None:
    """The manifest's ``fingerprints``: the file, its hash, and the last step it reaches."""
    if found is None:
        return None
    return {
        "file": layout.FINGERPRINTS,
        "sha256": found.sha256,
        "every_k_steps": plan.config.fingerprint_every,
        "steps": fingerprints.last_step(found.rows),
    }


def build(plan: RunPlan, run: RunInput, got: Gathered, out: RunOutcome) -> manifest.Manifest:
    """The manifest of a run: every field from the plan, the input, what was gathered and the outcome."""
    result = out.result or WorkerResult()
    timings = {
        "started": got.started,
        "finished": out.finished,
        "total_seconds": out.finished - got.started,
        "train_seconds": result.train_seconds,
        "image_seconds": got.image_seconds,
        "container_seconds": got.container_seconds,
        "audit_seconds": None if out.audit is None else out.audit.seconds,
    }
    return manifest.Manifest.model_validate(
        {
            "schema_version": manifest.SCHEMA_VERSION,
            "run_id": plan.run_id,
            "status": out.ending.status,
            "exit_code": out.exit_code,
            "error": out.ending.error,
            "log_tail": out.log_tail,
            "command": run.command,
            "overrides": run.overrides,
            "config": dict(plan.config.raw),
            "experiment": dict(plan.experiment.section),
            "code": got.code,
            "containerized": plan.containerized,
            "image": got.image,
            "engine": got.engine,
            "launch": launch_section(plan),
            "environment": manifest.redact(got.environment),
            "determinism": {"profile": dict(plan.profile.raw), "seed": plan.seed, "flags": result.flags},
            "host": got.host,
            "process": result.process,
            "packages": list(result.packages),
            "data": got.data,
            "outputs": out.outputs,
            "outputs_partial": out.ending.status != "completed",
            "fingerprints": fingerprint_section(plan, out.fingerprints),
            "metrics": result.metrics,
            "timings": timings,
            "replay_of": run.replay_of,
            "resumes": got.resumes,
            "audit": None if out.audit is None else out.audit.to_json(),
            "op_traces": out.op_traces,
            "cluster": got.cluster,
        }
    )
