"""One run, start to finish: plan → code → data → image → train → outputs → manifest.

A new run, a replay and a resume are this one pipeline, told apart only by their
:class:`~runner.core.run_input.RunInput` (where the code, the image and the variables come from,
and whether an earlier attempt is continued). :func:`prepare` checks and plans a run before
anything is run or written; :func:`execute` carries it out. A replay and a resume prepare theirs,
check it against their record and hand it in, so nothing is unpacked, hashed or planned twice.
Each step lives in its own module; this one
orchestrates and owns the run dir's lifecycle: it refuses a run dir that already holds a manifest
(a resume needs one that reads interrupted, failed or abandoned); once it has taken the run dir and
its code snapshot it writes a provisional record (status ``running``: a runner killed outright leaves
a run that reads ``abandoned`` and resumes), and every way out — success, a training failure, a build failure,
Ctrl-C, a bug — ends in a whole manifest with the matching status, built by :func:`runner.core.record.build`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core import audit_rules, cluster, fingerprints, layout, manifest, record, spec, worker_io
from runner.core.config import parse as parse_config
from runner.core.errors import (
    ENGINE_LOST,
    EXIT_ENGINE_LOST,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NO_SPACE,
    EXIT_USAGE,
    EngineLost,
    RunnerError,
    no_space,
)
from runner.core.run_input import ResolvedImage, RunInput
from runner.core.worker_io import AuditVerdict, ContractError, WorkerResult
from runner.host import (
    attest,
    backends,
    console,
    datasets,
    facts,
    params,
    records,
    rundir,
    slurm,
    snapshot,
    trainer_keys,
)
from runner.host.engine import Workload
from runner.host.hashing import HashCache, hash_tree, sha256_file
from runner.host.interrupts import deferred

if TYPE_CHECKING:
    from runner.core.engine_types import ContainerRequest
    from runner.host.engine import Engine, Executor, Exit

Echo = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A run checked and planned, its run dir not yet taken: what :func:`execute` carries out.

    :func:`prepare` makes it; a replay and a resume prepare theirs, check them against the record
    (the snapshot is unpacked and hashed once, the config planned once, a resume's data had once)
    and hand them to :func:`execute`.
    """

    input: RunInput
    plan: spec.RunPlan
    root: Path  # the project planned against: today's tree, or the recorded snapshot unpacked
    engine: Engine | None  # the container engine (not connected yet); None: no container runs
    data: manifest.Data | None = None  # the data set, when it was had before (a resume checks its hashes)
    signer: attest.signing.Signer | None = None  # signs provenance.intoto.jsonl; None: unsigned

    def recorded(self, image: ResolvedImage | None, environment: Mapping[str, str]) -> Prepared:
        """This run with a record's image and variables (a replay's, once it has checked them)."""
        inp = dataclasses.replace(self.input, image=image, environment=dict(environment))
        plan = self.plan.with_recorded_env(environment, os.environ, self.root)
        return dataclasses.replace(self, input=inp, plan=plan)


@dataclasses.dataclass
class _Run:
    """One run under way: what was prepared, the run dir it holds, and what it has gathered."""

    prepared: Prepared
    claim_fd: int
    got: record.Gathered
    cache: HashCache = dataclasses.field(default_factory=HashCache)

    @property
    def input(self) -> RunInput:
        return self.prepared.input

    @property
    def plan(self) -> spec.RunPlan:
        return self.prepared.plan

    @property
    def dir(self) -> Path:
        return self.plan.run_dir


def run(inp: RunInput, run_dir: Path, echo: Echo = print, engine: Engine | None = None) -> manifest.Manifest:
    """Prepare and execute one run (:func:`prepare`, :func:`execute`); its manifest, whatever its status."""
    return execute(prepare(inp, run_dir, engine), echo)


def execute(p: Prepared, echo: Echo = print) -> manifest.Manifest:
    """Take the run dir, run, and return the manifest written for the run (whatever its status).

    Raises RunnerError for a failed or interrupted run *after* its manifest is written.
    """
    r = _claim(p)
    if p.signer is None:
        echo(attest.unsigned_line())
    try:
        ran = _carry_out(r, echo)
    except KeyboardInterrupt:
        _record_early_end(r, record.Ending("interrupted", EXIT_INTERRUPTED, "interrupted before training"))
        raise RunnerError(
            f"interrupted; partial record in {r.dir / layout.MANIFEST}", EXIT_INTERRUPTED
        ) from None
    except OSError as exc:
        if exc.errno != errno.ENOSPC:  # a bug like any other below: its traceback, a whole record
            _record_bug(r, exc)
            raise
        # a full disk under the runner's own writing (the code snapshot, the job file, a record)
        where = exc.filename or r.dir
        then = (
            f"+resume={r.dir} continues it"
            if r.got.code
            else "run it again in another dir (nothing of it ran)"
        )
        line = f"{no_space(where, _free(r.dir))}; once space is freed, {then}"
        _record_early_end(r, record.Ending("failed", EXIT_FAILED, line))
        raise RunnerError(f"run failed: {line}", EXIT_FAILED) from None
    except EngineLost as exc:  # dockerd stopped or restarted mid-run
        raise _engine_lost(r, exc) from None
    except RunnerError as exc:
        # a failed build: its last lines are the record's log tail
        tail = _tail(r.dir / layout.LOGS_DIR / layout.BUILD_LOG) if r.got.image is None else []
        _record_early_end(r, record.Ending("failed", exc.exit_code, exc.message), tail)
        raise
    except Exception as exc:  # a bug: keep its traceback, but leave a whole record and a free run dir
        _record_bug(r, exc)
        raise
    return _record_end(r, ran)


def _record_bug(r: _Run, exc: Exception) -> None:
    _record_early_end(r, record.Ending("failed", EXIT_FAILED, f"internal error: {type(exc).__name__}: {exc}"))


def _record_end(r: _Run, ran: Exit) -> manifest.Manifest:
    """The run is over; what is left is its record. A Ctrl-C from here on waits for the record (and
    is dropped: there is nothing left to interrupt). Raises RunnerError when it did not complete."""
    with deferred(redeliver=False), rundir.released(r.dir, r.claim_fd):
        audit = _audit(r.dir)
        exited = record.Exited(ran.exit_code, ran.oom_killed, ran.interrupted, ran.oom_where)
        end = record.ending(exited, plan=r.plan, audit=audit, log_tail=_no_space_said(r, ran))
        log_tail = ran.log_tail if end.status != "completed" else []
        m = _finish(r, end, log_tail, audit, container_exit=ran.exit_code)
    if end.status != "completed":
        log = r.dir / layout.LOGS_DIR / layout.TRAIN_LOG
        raise RunnerError(f"run {end.status}: {end.error} — see {log}", end.exit_code)
    return m


# -- before the run dir is taken ------------------------------------------------------------------------
def prepare(inp: RunInput, run_dir: Path, engine: Engine | None = None) -> Prepared:
    """Unpack the recorded code (hash-checked, once), plan the run and check it: bad input is
    refused here, in one line, before anything is built or run and before the run dir is taken.

    ``engine`` runs the container; None: the one a new run's config names (``launch.engine``), or
    the default engine for a recorded run (a record does not choose code to run)."""
    root = snapshot.extract(inp.code.archive, inp.code.sha256) if inp.code else snapshot.project_root()
    plan = plan_for(inp, run_dir.resolve(), root)
    _check(inp, plan, root)
    if plan.nodes > 1:  # before the run dir is taken: no allocation, one line and nothing written
        slurm.check_span(plan.nodes)
    signer = attest.signer_for(inp.config, fresh=inp.kind == "new")  # a bad key: refused before the run dir
    if plan.containerized and engine is None:
        from runner.host import engine as engines

        engine = engines.make(plan.launch.engine if inp.kind == "new" else None)
    return Prepared(inp, plan, root, engine if plan.containerized else None, signer=signer)


def plan_for(inp: RunInput, run_dir: Path, root: Path) -> spec.RunPlan:
    """The run's plan, against ``root``: a resume keeps the run's id (in a container of its own
    name); recorded variables, when given, take the place of the plan's. A recorded config (a
    replay's, a resume's) that no runner would have written is refused in one line."""
    with _reading(inp):
        config = parse_config(inp.config)
        facts.check_gpus(config.launch)  # GPUs asked for but not here: refused before anything is had
        host = spec.Host(os.environ, os.getuid(), os.getgid(), gpus=facts.detected_gpus(config.launch))
        plan = spec.plan_run(config, run_dir, root, host, run_id=inp.resume.run_id if inp.resume else None)
    if inp.resume:  # same run, new container: a name of its own, so nothing can collide with the last one
        plan = dataclasses.replace(plan, container_name=f"runner-{plan.run_id}-resume-{uuid.uuid4().hex[:6]}")
    if inp.environment is not None:
        plan = plan.with_recorded_env(inp.environment, os.environ, root)
    return plan


@contextlib.contextmanager
def _reading(inp: RunInput) -> Iterator[None]:
    """A recorded config's refusal says so; a new run's is the config's own."""
    if inp.code is None:
        yield
        return
    with recorded_config():
        try:
            yield
        except RunnerError as exc:
            raise RunnerError(f"the recorded config cannot be run: {exc.message}", exc.exit_code) from None


def _check(inp: RunInput, plan: spec.RunPlan, root: Path) -> None:
    """Refuse, before anything is built or run, what would only fail inside the training process."""
    if not plan.experiment.program:  # a misspelt Trainer argument fails here, not after the launch
        lock = plan.config.image.variant(plan.image_kind).get("lock")
        trainer_keys.check(plan.config.trainer, root / str(lock) if plan.containerized and lock else None)
    if inp.code is None:  # a recorded config passed once; a snapshot's code is not imported on the host
        params.check(plan.config.raw, plan.experiment.schemas, root)


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


def prepare_data(plan: spec.RunPlan, echo: Echo, cache: HashCache | None = None) -> manifest.Data:
    """The data set the plan names, downloaded when missing, every file hashed."""
    dataset = plan.config.dataset
    root, files = datasets.prepare(dataset, cache or HashCache(), log=echo)
    return manifest.Data.model_validate({"name": dataset["name"], "root": str(root), "files": files})


def _claim(p: Prepared) -> _Run:
    """Take the run dir (and, for a resume, read the attempt it continues)."""
    run_dir = p.plan.run_dir
    got = record.Gathered(started=time.time(), host=facts.host(), cluster=slurm.record())
    claim_fd = rundir.claim_run_dir(run_dir, resumable=p.input.resume is not None)
    try:
        rundir.reserve(run_dir)  # a disk that fills up mid-run still takes the record
        if p.input.resume:
            got.resumes = record.resumes(
                records.read_manifest(run_dir), p.input.resume, p.plan.container_name
            )
            (run_dir / layout.RESULT).unlink(missing_ok=True)  # the attempt before left none, or a stale one
            # a script starts over: what its processes met before is not this attempt's
            shutil.rmtree(run_dir / audit_rules.DIR / audit_rules.SCRIPT_DIR, ignore_errors=True)
    except BaseException:
        rundir.unreserve(run_dir)
        rundir.release(run_dir, claim_fd)
        raise
    return _Run(p, claim_fd, got)


# -- the run ----------------------------------------------------------------------------------------------
def _carry_out(r: _Run, echo: Echo) -> Exit:
    """Code, data, image, job file, training; each step records what it got in ``r.got``."""
    plan = r.plan
    code_dir = _code(r)
    # a record from the start, with the config and the code: a runner killed outright from here on
    # leaves a run that reads `abandoned` and resumes (its image chosen again from that code)
    _provisional(r)
    data_root = _data(r, echo)
    t_image = time.time()
    executor = _executor(r)
    image = r.input.image or executor.image(
        plan, r.prepared.root, echo, r.dir / layout.LOGS_DIR / layout.BUILD_LOG
    )
    if image is not None:
        r.got.image = manifest.Image.model_validate(image.record)
    r.got.image_seconds = time.time() - t_image
    work = Workload(plan, code_dir, data_root, image)
    r.got.engine = _engine_record(
        executor, plan.container_request(image.tag if image else "", code_dir, data_root), echo
    )
    r.got.environment = plan.worker_env(os.environ, code_dir)
    _write_job(r, plan.worker_paths(code_dir, data_root))
    _provisional(r)  # now with the image too: a resume of an abandoned run runs that very image
    echo(
        f"run {plan.run_id}: {plan.experiment.describe()} "
        f"seed={plan.seed} world={plan.world_size}×{plan.accelerator} backend={plan.backend}"
    )
    ran = executor.run(work, echo)
    r.got.container_seconds = ran.seconds
    return ran


def _code(r: _Run) -> Path:
    """The run's code in its run dir — a snapshot of the tree as it is now, or the recorded one
    (unpacked, hash-checked, by :func:`prepare`) — and where it is unpacked for the run."""
    code, archive = r.input.code, r.dir / layout.CODE_ARCHIVE
    if code is None:
        info = snapshot.take(r.prepared.root, r.dir)
        r.got.code = manifest.Code(
            commit=info.commit,
            dirty=info.dirty,
            snapshot=info.archive,
            snapshot_sha256=info.sha256,
            files=info.files,
        )
        return snapshot.extract(r.dir / info.archive, info.sha256, hashed=True)
    if code.archive.resolve() != archive:
        shutil.copyfile(code.archive, archive)
    r.got.code = manifest.Code(
        commit=code.commit,
        dirty=code.dirty,
        files=code.files,
        snapshot=layout.CODE_ARCHIVE,
        snapshot_sha256=code.sha256,
    )
    return r.prepared.root


def _data(r: _Run, echo: Echo) -> Path:
    """The data set (as prepared before, or now), recorded; returns its root."""
    r.got.data = r.prepared.data or prepare_data(r.plan, echo, r.cache)
    return Path(r.got.data.root)


def _executor(r: _Run) -> Executor:
    """Where the worker runs (:func:`runner.host.backends.choose`). A run across nodes meets on the
    interface :func:`runner.host.nodes.rendezvous` picks, recorded with the cluster (with every port
    found taken when the nodes met, and the one they met on); its node agents
    use the engine a new run's config names, and the default one for a replay or resume."""
    plan = r.plan
    if plan.nodes == 1:
        return backends.choose(plan, r.prepared.engine)
    from runner.flows.cli_common import engine_spec
    from runner.flows.node import agent_command
    from runner.host import nodes

    def recorded(meet: cluster.Rendezvous) -> None:  # where the nodes meet (again, on a port taken)
        r.got.cluster = {**(r.got.cluster or {}), "rendezvous": meet.record()}

    meet = nodes.rendezvous(plan.nodes, plan.launch.network_interface)
    recorded(meet)
    engine = r.prepared.engine
    assert engine is not None, "a run across nodes runs containers"
    # the engine a new run's config names; for a replay or resume, the option of the user's
    # engine group this run's engine is (by name, never a recorded _target_)
    agents = plan.launch.engine if r.input.kind == "new" else engine_spec(engine.describe().name)
    return backends.choose(plan, engine, nodes.Agents(meet, agents, agent_command, recorded))


def _engine_record(source: Executor | Engine, req: ContainerRequest, echo: Echo) -> manifest.Engine | None:
    """The engine ``source`` says it runs on, for the record (None: the worker runs in no container);
    a limit or lock of ``req`` it cannot enforce is said in one line (the engine leaves it out) and
    recorded, never dropped silently."""
    info = source.describe()
    if info is None:
        return None
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


def _write_job(r: _Run, paths: tuple[str, str, str]) -> None:
    """``job.json`` for the worker (naming the checkpoint a resume continues from)."""
    plan = r.plan
    job = plan.job_document(*paths, dataset_files=plan.config.dataset["files"])
    resume = r.input.resume
    if resume and resume.checkpoint:
        job = dataclasses.replace(job, resume=f"{paths[0]}/{layout.CHECKPOINT_DIR}/{resume.checkpoint}")
    worker_io.write(r.dir / layout.WORKER_REQUEST, job)


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
    rundir.unreserve(r.dir)  # the space kept for this record since the start
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
    note = attest.write_provenance(r.dir, m, r.prepared.signer)
    if note:
        console.echo(note)
    return m


def _engine_lost(r: _Run, lost: EngineLost) -> RunnerError:
    """The engine went away mid-run: record the run failed, saying how far training got and where a
    resume starts (its checkpoints stay), give the run dir back; returns the one line to exit with."""
    kept = records.resume_point(r.dir)  # the one +resume will start from
    newest = layout.latest_checkpoint(r.dir / layout.CHECKPOINT_DIR)
    step = max(fingerprints.last_step(records.read_fingerprints(r.dir)), newest[0] if newest else 0)
    then = f"from {layout.CHECKPOINT_DIR}/{kept[1].name}" if kept else "from the start (no checkpoint yet)"
    line = (
        f"{ENGINE_LOST}: the container engine ({lost.engine}) went away at step {step}: {lost.why}; "
        f"once it is back, +resume={r.dir} continues it {then}"
    )
    tail = _tail(r.dir / layout.LOGS_DIR / layout.TRAIN_LOG)
    _record_early_end(r, record.Ending("failed", EXIT_ENGINE_LOST, line), tail)
    return RunnerError(f"run failed: {line}", EXIT_ENGINE_LOST)


def _no_space_said(r: _Run, ran: Exit) -> list[str]:
    """The lines that say where a full disk stopped the run: the runner's own, or the training
    process's (in its log, maybe well before the last lines: the other ranks' ends follow it)."""
    if ran.no_space:
        return [ran.no_space]
    if ran.exit_code == EXIT_NO_SPACE:
        return _tail(r.dir / layout.LOGS_DIR / layout.TRAIN_LOG, 2000)
    return ran.log_tail


def _free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


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
