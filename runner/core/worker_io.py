"""What the host and the training process tell each other, as typed documents. Standard library only.

::

    RUN_DIR/job.json          WorkerRequest   host → worker: paths, experiment, config, seed, world, …
    RUN_DIR/result.json       WorkerResult    worker → host: metrics, switches in force, facts, packages
    RUN_DIR/audit/audit.json  AuditFindings   the audit's training step → the worker: what one step did
                              AuditVerdict    worker → host: those findings judged against the profile

Each is a frozen dataclass with ``to_json()`` (a JSON-ready object) and ``from_json(data)`` (a parsed
document, checked: a document of another shape raises :class:`ContractError`, whose message names the
document and the field). :func:`read` and :func:`write` do the same for files. The worker imports this
module inside the image, where pydantic is not installed: nothing here may import beyond the standard
library.

The shapes on disk stay what they were. The code snapshot carries the runner package, so a replay
runs the *recorded* worker against the ``job.json`` today's host writes, and today's host reads the
``result.json`` and ``audit.json`` that recorded worker writes: ``to_json`` writes the keys older
workers read, and ``from_json`` gives keys added later their defaults and ignores keys it does not know.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, cast

from runner.core.json_types import ContractError, Fields, Json, JsonObject, read, write

__all__ = [
    "AuditFindings",
    "AuditVerdict",
    "ContractError",
    "Experiment",
    "Json",
    "JsonObject",
    "NondeterministicOp",
    "SwitchedFlag",
    "TwinDifference",
    "WorkerPaths",
    "WorkerRequest",
    "WorkerResult",
    "read",
    "write",
]

ExperimentKind = Literal["target", "script", "module"]
Launcher = Literal["python", "torchrun"]
Accelerator = Literal["cpu", "gpu"]
AuditScope = Literal["step", "script"]
KINDS: tuple[ExperimentKind, ...] = ("target", "script", "module")
LAUNCHERS: tuple[Launcher, ...] = ("python", "torchrun")
ACCELERATORS: tuple[Accelerator, ...] = ("cpu", "gpu")


# -- job.json ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerPaths:
    """The run dir, the code snapshot and the data set's root, as the worker sees them (in the
    container, or on the host)."""

    run_dir: str
    code_dir: str
    data_dir: str

    def to_json(self) -> JsonObject:
        return {"run_dir": self.run_dir, "code_dir": self.code_dir, "data_dir": self.data_dir}

    @classmethod
    def from_json(cls, data: object, where: str = "paths") -> WorkerPaths:
        f = Fields.of(data, where)
        return cls(f.str_("run_dir"), f.str_("code_dir"), f.str_("data_dir"))


@dataclass(frozen=True)
class Experiment:
    """What trains: a ``target`` (``module:function``, called in the worker's process), a ``script``
    (a file under the code dir) or a ``module`` (``python -m``); a program (script or module) gets
    ``args`` and may start under ``launcher: torchrun``."""

    kind: ExperimentKind
    entry: str  # the target, the script's path relative to the code dir, or the module
    args: tuple[str, ...] = ()
    launcher: Launcher = "python"
    nproc_per_node: int | None = None  # torchrun's processes per node; None: the world size
    name: str | None = None
    # the section it was read from: a config's is recorded as the run's ``experiment`` (its ``args``
    # as strings, ``launcher`` filled in when it was given); what job.json says is :meth:`to_json`
    section: Mapping[str, Json] = field(default_factory=dict, compare=False, repr=False)

    @property
    def schemas(self) -> Json:
        """Parameter classes the config's sections are checked against on the host (a target's:
        section → ``module:Class``), as the config gives them (:func:`runner.host.params.check`)."""
        return self.section.get("schemas")

    @property
    def program(self) -> bool:
        """A script or module: a process of its own, not a function the worker calls."""
        return self.kind != "target"

    def describe(self) -> str:
        """How a person would start it: ``pkg.mod:train``, ``train.py``, ``-m pkg.mod``, under torchrun."""
        what = f"-m {self.entry}" if self.kind == "module" else self.entry
        return f"torchrun {what}" if self.launcher == "torchrun" else what

    def to_json(self) -> JsonObject:
        out: JsonObject = {k: (self.entry if k == self.kind else None) for k in KINDS}
        out.update(args=list(self.args), launcher=self.launcher)
        if self.nproc_per_node is not None:
            out["nproc_per_node"] = self.nproc_per_node
        if self.name is not None:
            out["name"] = self.name
        return out

    @classmethod
    def from_json(cls, data: object, where: str = "experiment") -> Experiment:
        """The experiment section (of ``job.json`` or of a config; keys of neither are ignored).
        Arguments are strings, as a command line sees them."""
        f = Fields.of(data, where)
        named = [k for k in KINDS if f.data.get(k)]
        if len(named) != 1:
            raise ContractError(
                f"{where}: must name exactly one of {', '.join(KINDS)}, not {named or 'none'}"
            )
        kind = named[0]
        args = f.opt_list("args")
        launcher = f.data.get("launcher") or "python"
        if launcher not in LAUNCHERS:
            raise ContractError(f"{where}: launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
        nproc = f.opt_int("nproc_per_node", low=1)
        return cls(
            kind=kind,
            entry=f.str_(kind),
            args=tuple(str(a) for a in cast("list[object]", args or [])),
            launcher=launcher,
            nproc_per_node=nproc,
            name=f.opt_str("name"),
            section=cast("dict[str, Json]", dict(f.data)),
        )


@dataclass(frozen=True)
class WorkerRequest:
    """``job.json``: everything the worker is told, written by the host before training starts."""

    run_id: str
    paths: WorkerPaths
    experiment: Experiment
    config: Mapping[str, Json]  # the composed config, resolved (the experiment gets it as a DictConfig)
    seed: int
    world_size: int
    accelerator: Accelerator
    determinism: Mapping[str, Json]  # the determinism profile
    precision: Mapping[str, Json] | None = None  # None: a record from before the precision group
    dataset_files: Mapping[str, str] = field(default_factory=dict)  # name → path under the data dir
    nodes: int = 1
    fingerprint_every: int = 10  # optimizer steps between parameter hashes
    checkpoint_every: int = 0  # steps between checkpoints; 0: none
    resume: str | None = None  # the checkpoint a resumed run continues from, as the worker sees it
    keep_checkpoints: int = 2  # the newest checkpoints kept (launch.keep_checkpoints)

    def to_json(self) -> JsonObject:
        return {
            "run_id": self.run_id,
            "paths": self.paths.to_json(),
            "experiment": self.experiment.to_json(),
            "config": dict(self.config),
            "seed": self.seed,
            "world_size": self.world_size,
            "nodes": self.nodes,
            "accelerator": self.accelerator,
            "determinism": dict(self.determinism),
            "precision": None if self.precision is None else dict(self.precision),
            "dataset_files": dict(self.dataset_files),
            "fingerprint_every": self.fingerprint_every,
            "checkpoint_every": self.checkpoint_every,
            "resume": self.resume,
            "keep_checkpoints": self.keep_checkpoints,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "job.json") -> WorkerRequest:
        f = Fields.of(data, where)
        accelerator = f.str_("accelerator")
        if accelerator not in ACCELERATORS:
            raise ContractError(f"{where}: accelerator must be cpu or gpu, got {accelerator!r}")
        files = f.obj("dataset_files", {})
        if not all(isinstance(v, str) for v in files.values()):
            raise ContractError(f"{where}: dataset_files must map names to paths (strings)")
        return cls(
            run_id=f.str_("run_id"),
            paths=WorkerPaths.from_json(f.obj("paths"), f"{where}: paths"),
            experiment=Experiment.from_json(f.obj("experiment"), f"{where}: experiment"),
            config=f.obj("config"),
            seed=f.int_("seed"),
            world_size=f.int_("world_size", low=1),
            accelerator=accelerator,
            determinism=f.obj("determinism"),
            precision=f.opt_obj("precision"),
            dataset_files=cast("dict[str, str]", files),
            nodes=f.int_("nodes", 1, low=1),
            fingerprint_every=f.int_("fingerprint_every", 10, low=1),
            checkpoint_every=f.int_("checkpoint_every", 0),
            resume=f.opt_str("resume"),
            keep_checkpoints=f.int_("keep_checkpoints", 2, low=1),
        )


# -- result.json ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerResult:
    """``result.json``: what the process that trained reports once it is done (rank 0, or the worker
    that ran a program). The host reads it after that process has ended; a run without one is still
    recorded, with no metrics."""

    metrics: Mapping[str, Json] = field(default_factory=dict)
    train_seconds: float | None = None
    flags: Mapping[str, Json] | None = None  # determinism and precision switches in force, read back
    process: Mapping[str, Json] | None = None  # libraries and devices as the training code saw them
    packages: tuple[str, ...] = ()  # installed distributions, ``name==version``

    def to_json(self) -> JsonObject:
        return {
            "metrics": dict(self.metrics),
            "train_seconds": self.train_seconds,
            "flags": None if self.flags is None else dict(self.flags),
            "process": None if self.process is None else dict(self.process),
            "packages": list(self.packages),
        }

    @classmethod
    def from_json(cls, data: object, where: str = "result.json") -> WorkerResult:
        f = Fields.of(data, where)
        return cls(
            metrics=f.obj("metrics", {}),
            train_seconds=f.opt_number("train_seconds"),
            flags=f.opt_obj("flags"),
            process=f.opt_obj("process"),
            packages=f.strs("packages"),
        )


# -- audit/audit.json -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NondeterministicOp:
    """An operation that has no deterministic implementation, as the audit step met it."""

    op: str  # aten::index_add_
    where: str | None  # the user-code frame that called it (path:line), None when none was the user's
    in_backward: bool = False
    calls: int = 1

    def to_json(self) -> JsonObject:
        return {"op": self.op, "where": self.where, "in_backward": self.in_backward, "calls": self.calls}

    @classmethod
    def from_json(cls, data: object, where: str = "operation") -> NondeterministicOp:
        f = Fields.of(data, where)
        return cls(f.str_("op"), f.opt_str("where"), f.bool_("in_backward", False), f.int_("calls", 1))


@dataclass(frozen=True)
class SwitchedFlag:
    """A determinism switch whose value in force after the step is not the one the profile set."""

    switch: str  # the flag as read back (matmul_allow_tf32, cudnn_benchmark, …)
    profile: bool  # what the profile set
    in_force: Json  # what was in force after the step

    def to_json(self) -> JsonObject:
        return {"switch": self.switch, "profile": self.profile, "in_force": self.in_force}

    @classmethod
    def from_json(cls, data: object, where: str = "switched") -> SwitchedFlag:
        f = Fields.of(data, where)
        return cls(f.str_("switch"), f.bool_("profile"), cast(Json, f.data.get("in_force")))


@dataclass(frozen=True)
class TwinDifference:
    """Where the audited step, run twice from the same state, first came out otherwise: the
    operation (``op`` is ``dataloader`` when the first batch drawn twice differed), the module it
    ran in, and the user-code frame that called it."""

    op: str
    where: str | None
    module: str | None = None
    in_backward: bool = False
    index: int = 0  # the operation's number in the step (0 for the data check)

    def to_json(self) -> JsonObject:
        return {
            "op": self.op,
            "where": self.where,
            "module": self.module,
            "in_backward": self.in_backward,
            "index": self.index,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "twin") -> TwinDifference:
        f = Fields.of(data, where)
        return cls(
            f.str_("op"),
            f.opt_str("where"),
            f.opt_str("module"),
            f.bool_("in_backward", False),
            f.int_("index", 0),
        )


@dataclass(frozen=True)
class AuditFindings:
    """What the audit's watched training step (``scope`` "script": a program's watched processes)
    saw: every operation without a deterministic implementation, and the switches user code left
    unlike the profile's."""

    ops_seen: int
    nondeterministic_ops: tuple[NondeterministicOp, ...] = ()
    switched: tuple[SwitchedFlag, ...] = ()
    flags_after_step: Mapping[str, Json] = field(default_factory=dict)
    device: str = "?"
    # the twin: the step run twice from the same state, and the first batch drawn twice
    twin: TwinDifference | None = None  # the first operation whose output differed; None: none did
    data: TwinDifference | None = (
        None  # op "dataloader": the first batch differed; None: same (or not checked)
    )
    data_checked: bool = False
    rank: int = 0  # the rank whose findings these are (DDP: each rank checks its own twin)
    # "step": a target experiment's first step, run twice; "script": a program's processes, watched
    # while they ran (deterministic algorithms in warn-only mode: its alerts, no twin, no op count)
    scope: AuditScope = "step"

    def to_json(self) -> JsonObject:
        return {
            "scope": self.scope,
            "ops_seen": self.ops_seen,
            "nondeterministic_ops": [o.to_json() for o in self.nondeterministic_ops],
            "switched": [s.to_json() for s in self.switched],
            "flags_after_step": dict(self.flags_after_step),
            "device": self.device,
            "twin": None if self.twin is None else self.twin.to_json(),
            "data": None if self.data is None else self.data.to_json(),
            "data_checked": self.data_checked,
            "rank": self.rank,
        }

    @classmethod
    def from_json(cls, data: object, where: str = "audit.json") -> AuditFindings:
        f = Fields.of(data, where)
        return cls(
            ops_seen=f.int_("ops_seen"),
            nondeterministic_ops=tuple(
                NondeterministicOp.from_json(o.data, o.where) for o in f.items("nondeterministic_ops")
            ),
            switched=tuple(SwitchedFlag.from_json(s.data, s.where) for s in f.items("switched")),
            flags_after_step=f.obj("flags_after_step", {}),
            device=f.str_("device", "?"),
            twin=_opt_twin(f.data.get("twin"), f"{where}: twin"),
            data=_opt_twin(f.data.get("data"), f"{where}: data"),
            data_checked=f.bool_("data_checked", False),
            rank=f.int_("rank", 0),
            scope="script" if f.str_("scope", "step") == "script" else "step",
        )


def _opt_twin(data: object, where: str) -> TwinDifference | None:
    return None if data is None else TwinDifference.from_json(data, where)


@dataclass(frozen=True)
class AuditVerdict:
    """The audit's findings judged against the profile's allow-list (:func:`runner.core.audit_rules.judge`):
    whether the run may train, and the one line that says why not. ``findings`` is None when the
    audit step did not complete (then the run is refused, and ``message`` says so)."""

    findings: AuditFindings | None
    refused: bool
    message: str | None = None
    allowed_ops: tuple[str, ...] = ()  # the profile's allow_nondeterministic_ops
    refused_ops: tuple[str, ...] = ()
    seconds: float | None = None  # the audit's wall time (the twin step and the data check)

    def to_json(self) -> JsonObject:
        """One object, the findings' keys beside the verdict's (the shape manifests record)."""
        out: JsonObject = self.findings.to_json() if self.findings else {}
        out.update(
            refused=self.refused,
            message=self.message,
            allowed_ops=list(self.allowed_ops),
            refused_ops=list(self.refused_ops),
            seconds=self.seconds,
        )
        return out

    @classmethod
    def from_json(cls, data: object, where: str = "audit.json") -> AuditVerdict:
        f = Fields.of(data, where)
        return cls(
            findings=AuditFindings.from_json(data, where) if "ops_seen" in f.data else None,
            refused=f.bool_("refused"),
            message=f.opt_str("message"),
            allowed_ops=f.strs("allowed_ops"),
            refused_ops=f.strs("refused_ops"),
            seconds=f.opt_number("seconds"),
        )
