"""One run, start to finish: plan → image → snapshot → data → train → outputs → manifest.

This module only orchestrates; each step lives in its own module. It owns the run dir's
lifecycle: it refuses a run dir that already holds a manifest, and once it has taken the run
dir, every way out — success, a training failure, a build failure, Ctrl-C — ends in a whole
manifest with the matching status.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from runner.core import fingerprints, layout, manifest, spec
from runner.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, RunnerError
from runner.flows import audit, locate
from runner.host import datasets, facts, image_builder, params, records, rundir, slurm, snapshot, trainer_keys
from runner.host.engine import Engine
from runner.host.hashing import HashCache, hash_tree, sha256_file
from runner.host.interrupts import deferred


def execute(
    cfg: Mapping[str, Any],
    run_dir: Path,
    command: list[str],
    overrides: list[str],
    echo: Callable[[str], None] = print,
    *,
    engine: Engine | None = None,
    replay_of: dict | None = None,
    code_archive: tuple[Path, str] | None = None,
    code_record: Mapping[str, Any] | None = None,
    image: image_builder.ResolvedImage | None = None,
    environment: Mapping[str, str] | None = None,
    resume: Mapping[str, Any] | None = None,
) -> manifest.Manifest:
    """Run once and return the manifest written for it (whatever its status).

    ``code_archive`` (path, sha256) replays a recorded snapshot instead of taking a new one: the
    snapshot is then the project (its experiment code, Dockerfile and lock), and ``code_record``
    (the original's commit/dirty/files) describes it. ``image`` is an image the caller already
    resolved (a replay's rebuilt one); ``environment`` replaces the variables the profile and the
    host would give the training process with recorded ones (paths the runner sets stay its own).
    ``resume`` continues the interrupted or failed run that ``run_dir`` holds, in place (see
    :mod:`runner.resume`, which fills it: ``run_id``, ``checkpoint`` — a file name under
    ``checkpoints/`` or None —, ``from_step``, ``command``); the manifest keeps the run's id and
    lists every resume, with the record of the attempt before it, under ``resumes``.
    Raises RunnerError for a failed or interrupted run *after* its manifest is written.
    """
    root = snapshot.project_root()
    if code_archive:  # a replay: the recorded source is the project, not today's tree
        root = snapshot.extract(*code_archive)
    run_dir = run_dir.resolve()
    facts.check_gpus(cfg)  # GPUs asked for but not here: refused before anything is fetched or built
    detected = facts.detected_gpus(cfg)
    plan = spec.plan_run(cfg, run_dir, root, os.environ, os.getuid(), os.getgid(), detected_gpus=detected,
                         run_id=resume["run_id"] if resume else None)  # fmt: skip
    if resume:  # same run, new container: a name of its own, so nothing can collide with the last one
        plan = dataclasses.replace(plan, container_name=f"runner-{plan.run_id}-resume-{uuid.uuid4().hex[:6]}")
    if environment is not None:
        runner_owned = plan.container_env() if plan.backend == "docker" else plan.host_env(os.environ, root)
        own = set(runner_owned) - set(plan.env)
        plan = dataclasses.replace(plan, env={k: v for k, v in sorted(environment.items()) if k not in own})
    if plan.experiment.get("target"):  # a misspelt Trainer argument fails here, not after the launch
        variant = (plan.config.get("image") or {}).get("variants", {}).get(plan.image_kind) or {}
        lock = root / str(variant["lock"]) if plan.backend == "docker" and variant.get("lock") else None
        trainer_keys.check(plan.config.get("trainer"), lock)
    if not code_archive:  # a replay's config passed once; a snapshot's code is not imported on the host
        params.check(plan.config, plan.experiment.get("schemas"), root)
    started = time.time()
    record: dict[str, Any] = {
        "schema_version": manifest.SCHEMA_VERSION,
        "run_id": plan.run_id,
        "command": command,
        "overrides": overrides,
        "config": plan.config,
        "experiment": plan.experiment,
        "containerized": plan.backend == "docker",
        "launch": {"backend": plan.backend, "user": plan.user, "gpus": plan.gpus, "world_size": plan.world_size,
                   "accelerator": plan.accelerator, "container": plan.container_name if plan.backend == "docker" else None,
                   "cpuset_cpus": plan.launch.get("cpuset_cpus"), "mem_limit": plan.launch.get("mem_limit")},  # fmt: skip
        "environment": {},
        "determinism": {"profile": plan.profile, "seed": plan.seed},
        "host": facts.host(),
        "cluster": slurm.record(),
        "replay_of": replay_of,
    }
    lock_fd = rundir.claim_run_dir(run_dir, resumable=resume is not None)
    if resume:
        try:
            earlier, ended = _resumes_so_far(run_dir)
            record["resumes"] = [*earlier, {**resume, "container": plan.container_name, "previous": ended}]
            (run_dir / layout.RESULT).unlink(missing_ok=True)  # the attempt before left none, or a stale one
        except BaseException:
            rundir.release(run_dir, lock_fd)
            raise
    cache = HashCache()
    try:
        # code: a snapshot of the tree as it is now, or the recorded one for a replay
        if code_archive:
            src, digest = code_archive
            if src.resolve() != (run_dir / layout.CODE_ARCHIVE):
                shutil.copyfile(src, run_dir / layout.CODE_ARCHIVE)
            snap_dir = snapshot.extract(run_dir / layout.CODE_ARCHIVE, digest)
            record["code"] = {"commit": None, "dirty": False, "files": 0,
                              **(code_record or (replay_of or {}).get("code") or {}), "snapshot": layout.CODE_ARCHIVE,
                              "snapshot_sha256": digest}  # fmt: skip
        else:
            info = snapshot.take(root, run_dir)
            snap_dir = snapshot.extract(run_dir / info.archive, info.sha256)
            record["code"] = {"commit": info.commit, "dirty": info.dirty, "snapshot": info.archive,
                              "snapshot_sha256": info.sha256, "files": info.files}  # fmt: skip

        data_root, data_files = datasets.prepare(plan.config["dataset"], cache, log=echo)
        record["data"] = {"name": plan.config["dataset"]["name"], "root": str(data_root), "files": data_files}

        t_image = time.time()
        image_tag = None
        if plan.backend == "docker":
            from runner.host import engine as engines
            from runner.host.executors import DockerBackend

            engine = engine or engines.connect()
            resolved = image or image_builder.resolve_image(engine, plan, root, echo, build_log=run_dir / layout.LOGS_DIR / layout.BUILD_LOG)
            record["image"], image_tag = resolved.record, resolved.tag
            backend = DockerBackend(engine)
            record["environment"] = manifest.redact(plan.container_env())
            paths = (spec.JOB, spec.CODE, spec.DATA)
        else:
            from runner.host.executors import HostBackend

            backend = HostBackend()
            record["environment"] = manifest.redact(plan.host_env(os.environ, snap_dir))
            paths = (str(run_dir), str(snap_dir), str(data_root))
        image_seconds = time.time() - t_image

        job = plan.job_document(*paths, dataset_files=plan.config["dataset"]["files"])
        if resume and resume.get("checkpoint"):
            job["resume"] = f"{paths[0]}/{layout.CHECKPOINT_DIR}/{resume['checkpoint']}"
        (run_dir / layout.WORKER_REQUEST).write_text(json.dumps(job, indent=2, sort_keys=True))
        if plan.backend == "docker":
            rundir.make_writable_for(run_dir, plan.user)

        echo(f"run {plan.run_id}: {plan.experiment.get('target') or plan.experiment.get('script')} "
             f"seed={plan.seed} world={plan.world_size}×{plan.accelerator} backend={plan.backend}")  # fmt: skip
        result_exit = backend.run(plan, image_tag, snap_dir, data_root, echo)
        record["timings_partial"] = {"image_seconds": image_seconds, "container_seconds": result_exit.seconds}
    except KeyboardInterrupt:
        with deferred(redeliver=False), rundir.released(run_dir, lock_fd):  # a second Ctrl-C: the record still lands whole
            _finish(record, run_dir, cache, started, "interrupted", EXIT_INTERRUPTED, "interrupted before training")
        raise RunnerError(f"interrupted; partial record in {run_dir / layout.MANIFEST}", EXIT_INTERRUPTED) from None
    except RunnerError as exc:
        if "image" not in record:  # a failed build: its last lines are the record's log tail
            record["log_tail"] = _tail(run_dir / layout.LOGS_DIR / layout.BUILD_LOG)
        with deferred(redeliver=False), rundir.released(run_dir, lock_fd):
            _finish(record, run_dir, cache, started, "failed", exc.exit_code, exc.message)
        raise
    except Exception as exc:  # a bug: keep its traceback, but leave a whole record and a free run dir
        with deferred(redeliver=False), rundir.released(run_dir, lock_fd):
            _finish(record, run_dir, cache, started, "failed", EXIT_FAILED, f"internal error: {type(exc).__name__}: {exc}")
        raise

    # The run is over; what is left is its record. A Ctrl-C from here on waits for the record
    # (and is dropped: there is nothing left to interrupt).
    with deferred(redeliver=False), rundir.released(run_dir, lock_fd):
        if result_exit.interrupted:
            stopped = "container stopped and removed" if plan.backend == "docker" else "training processes stopped"
            status, code, error = "interrupted", EXIT_INTERRUPTED, f"interrupted (Ctrl-C / SIGTERM); {stopped}"
        elif result_exit.exit_code != 0:
            status, code, error = "failed", EXIT_FAILED, _why_failed(result_exit, plan)
        else:
            status, code, error = "completed", 0, None
        record["log_tail"] = result_exit.log_tail if status != "completed" else []
        m = _finish(record, run_dir, cache, started, status, code, error, container_exit=result_exit.exit_code)
    if status != "completed":
        raise RunnerError(f"run {status}: {error} — see {run_dir / 'logs' / 'train.log'}", code)
    return m


def _why_failed(result: Any, plan: spec.RunPlan) -> str:
    """One line on how training ended, for the record and the terminal."""
    found = audit.recorded(plan.run_dir)
    if found and found.get("refused") and found.get("message"):  # the audit stopped it before training
        return str(found["message"])
    if result.oom_killed:
        limit = plan.launch.get("mem_limit")
        return "killed: out of memory" + (f" (launch.mem_limit={limit})" if limit else "")
    if result.exit_code > 128:
        try:
            name = signal.Signals(result.exit_code - 128).name
        except ValueError:
            name = f"signal {result.exit_code - 128}"
        return f"training was killed by {name} (exit status {result.exit_code})"
    return f"training exited with status {result.exit_code}"


def _resumes_so_far(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The held manifest's resumes, and how the attempt it records ended (the one now resumed)."""
    prior = records.read_manifest(run_dir)
    ended = {"status": prior.status, "exit_code": prior.exit_code, "error": prior.error,
             "container": prior.launch.get("container"), "log_tail": prior.log_tail[-10:],
             "steps": prior.fingerprints.steps if prior.fingerprints else 0, "timings": prior.timings.model_dump()}  # fmt: skip
    return list(prior.resumes), ended


def _tail(path: Path, n: int = 40) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def _finish(record, run_dir: Path, cache: HashCache, started: float, status: str, code: int, error: str | None,
            container_exit: int | None = None) -> manifest.Manifest:  # fmt: skip
    """Collect results and write the manifest. Never raises for missing pieces: a failed run's
    record is still whole, with whatever the run left behind."""
    partial = record.pop("timings_partial", {})
    result_path = run_dir / layout.RESULT
    result = {}
    if result_path.is_file():
        try:  # written by the training process: whatever it holds, the record is still written
            result = json.loads(result_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            result = {}
        if not isinstance(result, dict):
            result = {}
    record["status"] = status
    record["exit_code"] = container_exit or code  # the training process's own status, when it has one
    record["error"] = error
    record["metrics"] = result.get("metrics", {})
    record["process"] = result.get("process")
    record["packages"] = result.get("packages", [])
    record["determinism"]["flags"] = result.get("flags")
    record["audit"] = audit.recorded(run_dir)
    record["op_traces"] = locate.traces_written(run_dir)
    record["outputs"] = hash_tree(run_dir / layout.OUTPUTS_DIR, cache)
    record["outputs_partial"] = status != "completed"
    fp = run_dir / layout.FINGERPRINTS
    if fp.is_file():
        rows = records.read_fingerprints(run_dir)
        record["fingerprints"] = {"file": layout.FINGERPRINTS, "sha256": sha256_file(fp),
                                  "every_k_steps": spec.fingerprint_every(record["config"]),
                                  "steps": fingerprints.last_step(rows)}  # fmt: skip
    finished = time.time()
    record["timings"] = {"started": started, "finished": finished, "total_seconds": finished - started,
                         "train_seconds": result.get("train_seconds"), **partial}  # fmt: skip
    m = manifest.Manifest.model_validate(record)
    records.write_manifest(run_dir, m)
    return m
