"""``python -m runner +resume=RUN_DIR``: continue an interrupted or failed run from its last checkpoint.

The run continues *as recorded*, not as the project is today: the config, the code snapshot
(``code.tar``, checked against its hash), the image (by id) and the data (by hash) all come
from the run dir's manifest, and any that can no longer be had stops the resume with a message
rather than producing a different run. It runs in a new container, in the same run dir; the
manifest then keeps the run's id, reads the new outcome and lists the resume under ``resumes``.

Training continues from the newest ``checkpoints/step-*.ckpt`` (weights, optimizer, loops,
every rank's RNG states, the epoch position — see :mod:`runner.worker.checkpointing`), so the final
weights are bit-identical to a run that was never interrupted. Without a checkpoint (none was
due yet, or ``launch.checkpoint_every_n_steps`` is 0) it starts over, which is identical too.

``+resume`` takes a run dir only; re-running a sweep while skipping its completed jobs is
``hydra.launcher.skip_completed=true`` (:mod:`runner.flows.sweep`).
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core import layout, manifest
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.core.run_input import RecordedCode, ResolvedImage, Resume, RunInput
from runner.host import records, rundir
from runner.host.sweep_records import SKIP_COMPLETED

if TYPE_CHECKING:
    from runner.flows.run import Prepared
    from runner.host.engine import Engine

_KEYS = ("resume", "+resume", "++resume")
_ENGINE = "engine"
_SWEEP_FLAG = {"true", "false"}
_NOT_A_PATH = {"null", "none", ""}


def requested(argv: list[str]) -> Path | None:
    """The run dir named by ``+resume=RUN_DIR`` among the arguments, or None when none is.

    ``+resume`` takes a run dir and nothing else: a boolean (a sweep asking to skip its completed
    jobs, which is ``hydra.launcher.skip_completed=true``) or an empty value is refused in one line.
    """
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key in _KEYS:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            if value.lower() in _SWEEP_FLAG:
                raise RunnerError(
                    f"{arg}: +resume takes a run dir (+resume=RUN_DIR continues one run); to skip "
                    f"a sweep's completed jobs, use {SKIP_COMPLETED}=true",
                    EXIT_USAGE,
                )
            if value.lower() in _NOT_A_PATH:
                raise RunnerError(
                    f"{arg}: +resume needs the run dir to continue (+resume=RUN_DIR)", EXIT_USAGE
                )
            return Path(value)
    return None


def resume(run_dir: Path, argv: list[str], echo: Callable[[str], None] = print) -> manifest.Manifest:
    """Resume the run in ``run_dir``; returns its manifest. ``argv`` is the resume's own command
    line: ``+resume=RUN_DIR``, and ``engine=NAME`` to run on another engine than the recorded one."""
    others = [a for a in argv if a.partition("=")[0] not in (*_KEYS, _ENGINE)]
    if others:
        raise RunnerError(
            f"+resume=RUN_DIR continues a run with its recorded config; drop {' '.join(others)} "
            "(to change something, start a new run)",
            EXIT_USAGE,
        )
    engine_name = next((a.partition("=")[2] for a in argv if a.partition("=")[0] == _ENGINE), None)
    run_dir = run_dir.expanduser().resolve()
    if not run_dir.is_dir():
        raise RunnerError(f"+resume={run_dir}: no such run dir", EXIT_USAGE)
    prior = _resumable(run_dir)
    engine, image = _recorded_image(prior, run_dir, engine_name, echo)
    inp = _input(prior, run_dir, image, command=[sys.executable, "-m", "runner", *argv])
    from runner.flows import run  # here: every `python -m runner` imports this module, for `requested`

    # the snapshot first (hash, then every entry confined), then whether the recorded config still
    # plans: a record is data, and one that no runner would have written stops here, in one line
    ready = _same_data(run.prepare(inp, run_dir, engine), prior, echo)
    assert inp.resume is not None
    step, checkpoint = inp.resume.from_step, inp.resume.checkpoint
    echo(
        f"resuming {prior.run_id} ({rundir.run_status(run_dir, prior.status)}) from "
        + (
            f"step {step} ({layout.CHECKPOINT_DIR}/{checkpoint})"
            if checkpoint
            else "the start: no checkpoint was written"
        )
    )
    return run.execute(ready, echo)


def _input(
    prior: manifest.Manifest, run_dir: Path, image: ResolvedImage | None, command: list[str]
) -> RunInput:
    """The run ``prior`` records, to be continued from its newest checkpoint (from the start
    when it has none)."""
    assert prior.code is not None
    found = records.resume_point(run_dir)
    step, checkpoint = (found[0], found[1].name) if found else (0, None)
    code = RecordedCode(
        run_dir / layout.CODE_ARCHIVE,
        prior.code.snapshot_sha256,
        commit=prior.code.commit,
        dirty=prior.code.dirty,
        files=prior.code.files,
    )
    entry = Resume(
        run_id=prior.run_id, checkpoint=checkpoint, from_step=step, started=time.time(), command=command
    )
    return RunInput.resumed(prior, code=code, image=image, resume=entry)


def _resumable(run_dir: Path) -> manifest.Manifest:
    """The run dir's record, when it can be continued *as recorded*: not completed, its snapshot
    the run dir's own."""
    prior = records.read_manifest(run_dir)
    if prior.status == "completed":
        raise RunnerError(f"{run_dir} reads completed: there is nothing to resume", EXIT_USAGE)
    if prior.code is None:
        raise RunnerError(rundir.nothing_ran(run_dir), EXIT_USAGE)
    if prior.code.snapshot != layout.CODE_ARCHIVE:  # the manifest is data: it names no other file
        raise RunnerError(
            f"{run_dir}: manifest names code snapshot {prior.code.snapshot!r}, expected "
            f"{layout.CODE_ARCHIVE!r}",
            EXIT_USAGE,
        )
    return prior


def _same_data(ready: Prepared, prior: manifest.Manifest, echo: Callable[[str], None]) -> Prepared:
    """``ready`` with its data set, when it holds the very files the run trained on."""
    from runner.flows import run

    with run.recorded_config():
        data = run.prepare_data(ready.plan, echo)
    if prior.data and data.files != prior.data.files:
        raise RunnerError(
            f"the data set {prior.data.name} is not the one {ready.plan.run_dir} trained on (file hashes "
            "differ): a resume would not continue the same run",
            EXIT_USAGE,
        )
    return dataclasses.replace(ready, data=data)


def _recorded_image(
    prior: manifest.Manifest, run_dir: Path, engine_name: str | None, echo: Callable[[str], None]
) -> tuple[Engine | None, ResolvedImage | None]:
    """The engine (``engine_name``, else the one the record names) and the very image the run ran
    in, pulled by its recorded digest when it is gone (None, None on the host backend; no image
    where the run was stopped before it chose one)."""
    if not prior.containerized:
        return None, None
    from runner.flows.cli_common import engine_for
    from runner.host import engine as engines
    from runner.host import image_builder

    recorded = prior.engine.name if prior.engine else None  # by name: a record does not choose code to run
    engine = engines.connect(engine_for(recorded, engine_name, "engine=NAME"))
    if prior.image is None:  # stopped before its image was chosen (nothing trained): the resume
        return engine, None  # chooses it from the recorded code, by content hash, as the run would have
    exact = image_builder.exact(engine, prior.image, None, echo)  # here, or pulled by its digest
    if exact.image is None:
        raise RunnerError(
            f"image {prior.image.tag} ({prior.image.id[:19]}) that {run_dir} ran in is gone; "
            f"a resume needs the very same image ({exact.how})",
            EXIT_ENVIRONMENT,
        )
    return engine, exact.image


def main(argv: list[str]) -> None:
    """The ``+resume=RUN_DIR`` edge: one line of summary, or one line of error and its exit status."""
    from runner.flows.cli_common import fail
    from runner.host import console

    try:
        run_dir = requested(argv)
        if run_dir is None:
            raise RunnerError("+resume=RUN_DIR: no run dir given", EXIT_USAGE)
        m = resume(run_dir, argv, echo=console.echo)
    except RunnerError as exc:
        fail(exc)
    console.stderr.print(
        f"[bold green]{m.status}[/] {run_dir} (resumed from step {m.resumes[-1]['from_step']})"
    )
