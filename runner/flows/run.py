"""One run, start to finish: plan → code → data → image → train → outputs → manifest.

A new run, a replay and a resume are this one pipeline, told apart only by their
:class:`~runner.core.run_input.RunInput` (where the code, the image and the variables come from,
and whether an earlier attempt is continued). Each step lives in its own module; this one
orchestrates and owns the run dir's lifecycle: it refuses a run dir that already holds a manifest
(a resume needs one that reads interrupted, failed or abandoned); once it has taken the run dir it
writes a provisional record (status ``running``: a runner killed outright leaves a run that reads
``abandoned`` and resumes), and every way out — success, a training failure, a build failure,
Ctrl-C, a bug — ends in a whole manifest with the matching status, built by :func:`runner.core.record.build`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.core import images, layout, manifest, record, spec, worker_io
from runner.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_USAGE, RunnerError
from runner.core.run_input import RunInput
from runner.core.worker_io import AuditVerdict, ContractError, WorkerResult
from runner.host import (
    attest,
    console,
    datasets,
    facts,
    image_builder,
    params,
    records,
    rundir,
    slurm,
    snapshot,
    trainer_keys,
)
from runner.host.hashing import HashCache, hash_tree, sha256_file
from runner.host.interrupts import deferred

if TYPE_CHECKING:
    from runner.core.engine_types import ContainerRequest
    from runner.host.engine import Engine
    from runner.host.executors import Exit
    from runner.host.nodes import NodesBackend

Echo = Callable[[str], None]


@dataclasses.dataclass
class _Run:
    """One run under way: its input and plan, the run dir it holds, and what it has gathered."""

    input: RunInput
    plan: spec.RunPlan
    root: Path  # the project the run is planned against: today's tree, or the recorded snapshot
    claim_fd: int
    got: record.Gathered
    cache: HashCache = dataclasses.field(default_factory=HashCache)
    signer: attest.signing.Signer | None = None  # signs provenance.intoto.jsonl; None: unsigned

    @property
    def dir(self) -> Path:
        return self.plan.run_dir


def run(inp: RunInput, run_dir: Path, echo: Echo = print, engine: Engine | None = None) -> manifest.Manifest:
    """Run once and return the manifest written for it (whatever its status).

    Bad input is refused before the run dir is taken. Raises RunnerError for a failed or
    interrupted run *after* its manifest is written.
    """
    r = _start(inp, run_dir.resolve())
    if r.signer is None:
        echo(attest.unsigned_line())
    try:
        _provisional(r)  # a record from the start: a runner killed outright leaves a run that reads
        ran = _carry_out(r, echo, engine)
    except KeyboardInterrupt:
        _record_early_end(r, record.Ending("interrupted", EXIT_INTERRUPTED, "interrupted before training"))
        raise RunnerError(
            f"interrupted; partial record in {r.dir / layout.MANIFEST}", EXIT_INTERRUPTED
        ) from None
    except RunnerError as exc:
        # a failed build: its last lines are the record's log tail
        tail = _tail(r.dir / layout.LOGS_DIR / layout.BUILD_LOG) if r.got.image is None else []
        _record_early_end(r, record.Ending("failed", exc.exit_code, exc.message), tail)
        raise
    except Exception as exc:  # a bug: keep its traceback, but leave a whole record and a free run dir
        _record_early_end(
            r, record.Ending("failed", EXIT_FAILED, f"internal error: {type(exc).__name__}: {exc}")
        )
        raise

    # The run is over; what is left is its record. A Ctrl-C from here on waits for the record
    # (and is dropped: there is nothing left to interrupt).
    with deferred(redeliver=False), rundir.released(r.dir, r.claim_fd):
        audit = _audit(r.dir)
        end = record.ending(
            ran.exit_code, oom_killed=ran.oom_killed, interrupted=ran.interrupted, plan=r.plan, audit=audit
        )
        log_tail = ran.log_tail if end.status != "completed" else []
        m = _finish(r, end, log_tail, audit, container_exit=ran.exit_code)
    if end.status != "completed":
        log = r.dir / layout.LOGS_DIR / layout.TRAIN_LOG
        raise RunnerError(f"run {end.status}: {end.error} — see {log}", end.exit_code)
    return m


# -- before the run dir is taken ------------------------------------------------------------------------
def _start(inp: RunInput, run_dir: Path) -> _Run:
    """Plan and check the run, then take its run dir (and, for a resume, read the attempt it continues)."""
    root = snapshot.extract(inp.code.archive, inp.code.sha256) if inp.code else snapshot.project_root()
    plan = _plan(inp, run_dir, root)
    _check(inp, plan, root)
    if plan.nodes > 1:  # before the run dir is taken: no allocation, one line and nothing written
        slurm.check_span(plan.nodes)
    signer = attest.signer_for(inp.config, fresh=inp.kind == "new")  # a bad key: refused before the run dir
    got = record.Gathered(started=time.time(), host=facts.host(), cluster=slurm.record())
    claim_fd = rundir.claim_run_dir(run_dir, resumable=inp.resume is not None)
    if inp.resume:
        try:
            got.resumes = record.resumes(records.read_manifest(run_dir), inp.resume, plan.container_name)
            (run_dir / layout.RESULT).unlink(missing_ok=True)  # the attempt before left none, or a stale one
        except BaseException:
            rundir.release(run_dir, claim_fd)
            raise
    return _Run(inp, plan, root, claim_fd, got, signer=signer)


def _plan(inp: RunInput, run_dir: Path, root: Path) -> spec.RunPlan:
    """The run's plan: a resume keeps the run's id (in a container of its own name); recorded
    variables, when given, take the place of the plan's."""
    facts.check_gpus(inp.config)  # GPUs asked for but not here: refused before anything is fetched or built
    plan = spec.plan_run(
        inp.config,
        run_dir,
        root,
        os.environ,
        os.getuid(),
        os.getgid(),
        detected_gpus=facts.detected_gpus(inp.config),
        run_id=inp.resume.run_id if inp.resume else None,
    )
    if inp.resume:  # same run, new container: a name of its own, so nothing can collide with the last one
        plan = dataclasses.replace(plan, container_name=f"runner-{plan.run_id}-resume-{uuid.uuid4().hex[:6]}")
    if inp.environment is not None:
        plan = plan.with_recorded_env(inp.environment, os.environ, root)
    return plan


def _check(inp: RunInput, plan: spec.RunPlan, root: Path) -> None:
    """Refuse, before anything is built or run, what would only fail inside the training process."""
    images.check_registry((plan.config.get("image") or {}).get("registry"))
    if plan.experiment.get("target"):  # a misspelt Trainer argument fails here, not after the launch
        variant = (plan.config.get("image") or {}).get("variants", {}).get(plan.image_kind) or {}
        lock = root / str(variant["lock"]) if plan.backend == "docker" and variant.get("lock") else None
        trainer_keys.check(plan.config.get("trainer"), lock)
    if inp.code is None:  # a recorded config passed once; a snapshot's code is not imported on the host
        params.check(plan.config, plan.experiment.get("schemas"), root)


def replan(
    config: Mapping[str, Any], run_dir: Path, snap_dir: Path, run_id: str | None = None
) -> spec.RunPlan:
    """Plan a recorded config against its restored snapshot before anything runs (a replay, a
    resume): a record whose config no runner would have written is refused here, in one line."""
    with recorded_config():
        try:
            facts.check_gpus(
                config
            )  # a GPU run replayed where there are none: refused before the image is had
            return spec.plan_run(
                config,
                run_dir,
                snap_dir,
                os.environ,
                os.getuid(),
                os.getgid(),
                run_id=run_id,
                detected_gpus=facts.detected_gpus(config),
            )
        except RunnerError as exc:
            raise RunnerError(f"the recorded config cannot be run: {exc.message}", exc.exit_code) from None


@contextlib.contextmanager
def recorded_config() -> Iterator[None]:
    """Read a recorded config: a shape no runner would have written is one line, not a traceback."""
    try:
        yield
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        detail = " ".join(str(exc).split())[:120]
        raise RunnerError(
            f"the recorded config cannot be run: {type(exc).__name__}: {detail}", EXIT_USAGE
        ) from None


# -- the run ----------------------------------------------------------------------------------------------
def _carry_out(r: _Run, echo: Echo, engine: Engine | None) -> Exit:
    """Code, data, image, job file, training; each step records what it got in ``r.got``."""
    snap_dir = _code(r)
    data_root = _data(r, echo)
    t_image = time.time()
    train, paths = _executor(r, snap_dir, data_root, echo, engine)
    r.got.image_seconds = time.time() - t_image
    _write_job(r, paths)
    _provisional(r)  # now with the code and the image: what a resume of an abandoned run needs
    plan = r.plan
    exp = plan.experiment
    what = exp.get("target") or exp.get("script") or f"-m {exp.get('module')}"
    if exp.get("launcher") == "torchrun":
        what = f"torchrun {what}"
    echo(
        f"run {plan.run_id}: {what} "
        f"seed={plan.seed} world={plan.world_size}×{plan.accelerator} backend={plan.backend}"
    )
    ran = train()
    r.got.container_seconds = ran.seconds
    return ran


def _code(r: _Run) -> Path:
    """The run's code in its run dir — a snapshot of the tree as it is now, or the recorded one —
    unpacked (hash-checked) for the run; returns where."""
    code, archive = r.input.code, r.dir / layout.CODE_ARCHIVE
    if code is None:
        info = snapshot.take(r.root, r.dir)
        r.got.code = manifest.Code(
            commit=info.commit,
            dirty=info.dirty,
            snapshot=info.archive,
            snapshot_sha256=info.sha256,
            files=info.files,
        )
        return snapshot.extract(r.dir / info.archive, info.sha256)
    if code.archive.resolve() != archive:
        shutil.copyfile(code.archive, archive)
    r.got.code = manifest.Code(
        commit=code.commit,
        dirty=code.dirty,
        files=code.files,
        snapshot=layout.CODE_ARCHIVE,
        snapshot_sha256=code.sha256,
    )
    return snapshot.extract(archive, code.sha256)


def _data(r: _Run, echo: Echo) -> Path:
    """The data set, downloaded when missing, every file hashed; returns its root."""
    dataset = r.plan.config["dataset"]
    root, files = datasets.prepare(dataset, r.cache, log=echo)
    r.got.data = manifest.Data.model_validate({"name": dataset["name"], "root": str(root), "files": files})
    return root


def _executor(
    r: _Run, snap_dir: Path, data_root: Path, echo: Echo, engine: Engine | None
) -> tuple[Callable[[], Exit], tuple[str, str, str]]:
    """The training, ready to start where the worker runs (in the run's image, or on the host), and
    the run dir, code and data paths as the worker sees them."""
    plan = r.plan
    if plan.backend != "docker":
        from runner.host.executors import HostBackend

        r.got.environment = plan.host_env(os.environ, snap_dir)
        train = functools.partial(HostBackend().run, plan, None, snap_dir, data_root, echo)
        return train, (str(r.dir), str(snap_dir), str(data_root))
    from runner.host import engine as engines
    from runner.host.executors import DockerBackend

    engine = engine or engines.connect()
    build_log = r.dir / layout.LOGS_DIR / layout.BUILD_LOG
    image = r.input.image or image_builder.resolve_image(engine, plan, r.root, echo, build_log=build_log)
    r.got.image = manifest.Image.model_validate(image.record)
    r.got.engine = _engine_record(engine, plan.container_request(image.tag, snap_dir, data_root), echo)
    r.got.environment = plan.container_env()
    backend: DockerBackend | NodesBackend = (
        DockerBackend(engine) if plan.nodes == 1 else _nodes_backend(r, engine)
    )
    train = functools.partial(backend.run, plan, image.tag, snap_dir, data_root, echo)
    return train, (spec.JOB, spec.CODE, spec.DATA)


def _engine_record(engine: Engine, req: ContainerRequest, echo: Echo) -> manifest.Engine:
    """The engine for the record; a limit or lock of ``req`` it cannot enforce is said in one line
    (the engine leaves it out) and recorded, never dropped silently."""
    info = engine.describe()
    unenforced = info.unenforced(req)
    if unenforced:
        how = f"{info.name} {info.version or ''}".strip() + (" (rootless)" if info.rootless else "")
        echo(
            f"warning: {how} cannot enforce {', '.join(unenforced)} here: the run goes on without it "
            "(recorded as the manifest's engine.unenforced)"
        )
    return manifest.Engine(
        name=info.name, version=info.version, rootless=info.rootless, unenforced=unenforced
    )


def _nodes_backend(r: _Run, engine: Engine) -> NodesBackend:
    """One container per node of the Slurm allocation (``launch.nodes``), meeting on the interface
    :func:`runner.host.nodes.rendezvous` picks; where they met is recorded with the cluster. The
    agents use the engine a new run's config names; for a replay or resume, the option of the
    user's ``engine`` group this run's engine is (by name, never a recorded ``_target_``)."""
    from runner.flows.cli_common import engine_spec
    from runner.flows.node import agent_command
    from runner.host import nodes

    plan = r.plan
    meet = nodes.rendezvous(plan.nodes, plan.launch.get("network_interface"))
    r.got.cluster = {**(r.got.cluster or {}), "rendezvous": meet.record()}
    fresh = r.input.code is None and r.input.resume is None
    image = r.got.image
    pull = {"ref": image.registry_ref, "id": image.id} if image and image.registry_ref else None
    chosen = plan.launch.get("engine") if fresh else engine_spec(engine.describe().name)
    return nodes.NodesBackend(engine, meet, chosen, agent_command, pull)


def _write_job(r: _Run, paths: tuple[str, str, str]) -> None:
    """``job.json`` for the worker (naming the checkpoint a resume continues from)."""
    plan = r.plan
    job = plan.job_document(*paths, dataset_files=plan.config["dataset"]["files"])
    resume = r.input.resume
    if resume and resume.checkpoint:
        job = dataclasses.replace(job, resume=f"{paths[0]}/{layout.CHECKPOINT_DIR}/{resume.checkpoint}")
    worker_io.write(r.dir / layout.WORKER_REQUEST, job)
    if plan.backend == "docker":
        rundir.make_writable_for(r.dir, plan.user)


# -- the record -------------------------------------------------------------------------------------------
def _provisional(r: _Run) -> None:
    """The run's record so far, status ``running``, written whole (a kill mid-write leaves the one
    before); :func:`_finish` replaces it with how the run ended."""
    with deferred():
        records.write_manifest(r.dir, record.provisional(r.plan, r.input, r.got, time.time()))


def _record_early_end(r: _Run, end: record.Ending, log_tail: list[str] | None = None) -> None:
    """Write the manifest of a run that stopped before training ended, and give the run dir back.
    A second Ctrl-C meanwhile is dropped: the record still lands whole."""
    with deferred(redeliver=False), rundir.released(r.dir, r.claim_fd):
        _finish(r, end, log_tail or [], _audit(r.dir))


def _finish(
    r: _Run,
    end: record.Ending,
    log_tail: list[str],
    audit: AuditVerdict | None,
    container_exit: int | None = None,
) -> manifest.Manifest:
    """Collect what the run left and write its manifest (``audit``: the audit's verdict, when one
    ran). Never raises for missing pieces: a failed
    run's record is still whole, with whatever the run left behind."""
    fp = r.dir / layout.FINGERPRINTS
    prints = (
        record.FingerprintFile(sha256_file(fp), records.read_fingerprints(r.dir)) if fp.is_file() else None
    )
    result = _result(r.dir / layout.RESULT)
    outputs = hash_tree(r.dir / layout.OUTPUTS_DIR, r.cache)
    outcome = record.RunOutcome(
        ending=end,
        exit_code=container_exit or end.exit_code,
        log_tail=log_tail,
        result=result,
        outputs=outputs,
        fingerprints=prints,
        audit=audit,
        op_traces=records.op_traces_written(r.dir),
        finished=time.time(),
    )
    m = record.build(r.plan, r.input, r.got, outcome)
    records.write_manifest(r.dir, m)
    note = attest.write_provenance(r.dir, m, r.signer)
    if note:
        console.echo(note)
    return m


def _audit(run_dir: Path) -> AuditVerdict | None:
    """The audit's verdict, for the record; None when none ran or its file is not whole (the
    audit was cut off: the run's record is written either way)."""
    try:
        return records.read_audit(run_dir)
    except RunnerError:
        return None


def _result(path: Path) -> WorkerResult | None:
    """``result.json`` as the training process wrote it; None when it is missing, torn or of another
    shape (written by the training process: whatever it holds, the record is still written)."""
    try:
        return worker_io.read(path, WorkerResult.from_json)
    except (OSError, ContractError):
        return None


def _tail(path: Path, n: int = 40) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []
