"""What one run is fed with: a new run, a replay and a resume are the same pipeline with different inputs.

A :class:`RunInput` says what to run (the config, the command line and overrides to record),
from which source (a snapshot of the project taken now, or a recorded archive), in which image
(resolved from the plan, or one already resolved), with which environment (the plan's, or
recorded variables), and whether it continues an earlier attempt in place. Pure data: the
pipeline that carries it out is :mod:`runner.flows.run`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from runner.core.manifest import Manifest, ReplayOf, ResumeRecord

Kind = Literal["new", "replay", "resume"]


@dataclass(frozen=True)
class ResolvedImage:
    """An image a run can start: ``tag`` is what the engine is given, ``record`` the manifest's
    ``image`` section (:class:`runner.core.manifest.Image` fields)."""

    record: Mapping[str, Any]
    tag: str


@dataclass(frozen=True)
class RecordedCode:
    """A code snapshot a manifest recorded: the archive, its sha256, and what the original said of it."""

    archive: Path
    sha256: str
    commit: str | None = None
    dirty: bool = False
    files: int = 0


@dataclass(frozen=True)
class Resume:
    """Continuing the interrupted or failed run in its own run dir: from ``checkpoint`` (a file
    name under ``checkpoints/``, or None to start over) at ``from_step``; ``command`` is the
    resume's own command line."""

    run_id: str
    checkpoint: str | None
    from_step: int
    command: list[str]
    started: float

    def entry(self) -> ResumeRecord:
        """This resume as the manifest's ``resumes`` lists it (before the container and the attempt
        it ends)."""
        return {
            "started": self.started,
            "from_step": self.from_step,
            "checkpoint": self.checkpoint,
            "run_id": self.run_id,
            "command": list(self.command),
        }


@dataclass(frozen=True)
class RunInput:
    """Everything that tells one run from another before it is planned. Build it with
    :meth:`new`, :meth:`replay` or :meth:`resumed`."""

    config: Mapping[str, Any]
    command: list[str]
    overrides: list[str]
    code: RecordedCode | None = None  # None: take a snapshot of the project as it is now
    image: ResolvedImage | None = None  # None: resolve (or build) the image the plan names
    environment: Mapping[str, str] | None = None  # None: the variables the plan gives
    replay_of: ReplayOf | None = None
    resume: Resume | None = None

    @property
    def kind(self) -> Kind:
        if self.resume is not None:
            return "resume"
        return "replay" if self.code is not None else "new"

    @classmethod
    def new(cls, config: Mapping[str, Any], command: list[str], overrides: list[str]) -> RunInput:
        """A run of the project as it is now."""
        return cls(config, list(command), list(overrides))

    @classmethod
    def replay(
        cls,
        config: Mapping[str, Any],
        command: list[str],
        overrides: list[str],
        *,
        code: RecordedCode,
        replay_of: ReplayOf,
    ) -> RunInput:
        """A recorded run again, into a run dir of its own, from its recorded code; the recorded
        image and variables join it once the replay has had them
        (:meth:`runner.flows.run.Prepared.recorded`)."""
        return cls(config, list(command), list(overrides), code, replay_of=replay_of)

    @classmethod
    def resumed(
        cls, prior: Manifest, *, code: RecordedCode, image: ResolvedImage | None, resume: Resume
    ) -> RunInput:
        """The run ``prior`` records, continued in place: its config, command, code and image as
        recorded."""
        return cls(
            prior.config,
            list(prior.command),
            list(prior.overrides),
            code,
            image,
            None,
            prior.replay_of,
            resume,
        )
