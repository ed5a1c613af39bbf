"""The composed config, read once into typed, frozen parts. Pure: no files, no engine.

:func:`parse` turns the config Hydra composed (or a manifest recorded) into a :class:`RunConfig`:
its :class:`Launch` (how and where the worker starts), its :class:`Experiment` (what it runs: a
target, a script or a module; the very object ``job.json`` tells the worker) and its
:class:`Image` (the variants a run's image is made from). A bad value is refused here, in one
line. The raw dict is kept only to be recorded (the manifest's ``config``) and handed to the
worker; nothing else reads ``launch`` or ``experiment`` by key. What depends on the host (the
world size under ``launch.gpus=all``, whether an experiment's file exists, the container user)
is :func:`runner.core.spec.plan_run`'s.

The writers of a config (a sweep placing a job in its slot, a multi-node run folded onto one
machine) change it through :func:`with_launch`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from runner.core import worker_io
from runner.core.determinism import Profile
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.images import check_registry, gpu_count_requested
from runner.core.json_types import Json, JsonObject
from runner.core.worker_io import LAUNCHERS, Launcher

_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Gpus = int | tuple[int, ...] | Literal["all"] | None  # None: no GPU; a count; driver indices; every GPU


class Backend(enum.StrEnum):
    """Where the worker runs (``launch.backend``)."""

    DOCKER = "docker"  # in a locked-down container of the run's image, on ``launch.engine``
    HOST = "host"  # as a process of this Python, with the same worker and environment

    @property
    def containerized(self) -> bool:
        return self is Backend.DOCKER


def section(cfg: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    """A config section ({} when missing or null)."""
    value = cfg.get(key) or {}
    if not isinstance(value, Mapping):
        raise RunnerError(f"{key} must be a mapping, not {value!r}", EXIT_USAGE)
    return dict(value)


def with_launch(cfg: Mapping[str, Any], drop: tuple[str, ...] = (), **changes: Any) -> dict[str, Json]:
    """A copy of ``cfg`` whose ``launch`` has ``changes`` and lacks the keys in ``drop``; a change
    to None drops nothing (it is recorded as null, as Hydra would)."""
    launch = {k: v for k, v in {**section(cfg, "launch"), **changes}.items() if k not in drop}
    return {**cfg, "launch": launch}


def launch_of(cfg: Mapping[str, Any]) -> Launch:
    """``cfg``'s launch section, parsed."""
    return Launch.parse(section(cfg, "launch"))


def launch_or_none(cfg: Mapping[str, Any] | None) -> Launch | None:
    """``cfg``'s launch section parsed, or None when it does not parse: a sweep plans around such a
    job, which then fails alone, with its own one-line error, when it runs."""
    if cfg is None:
        return None
    try:
        return launch_of(cfg)
    except RunnerError:
        return None


def _positive(key: str, value: Any, default: int) -> int:
    if value is None:
        return default
    if type(value) is not int or value < 1:
        raise RunnerError(f"{key}={value!r} must be a positive integer", EXIT_USAGE)
    return value


def _gpus(value: Any) -> Gpus:
    """``launch.gpus`` as asked for: None (0 or unset), a count, GPU indices, or ``all``.
    The indices are checked against the host's (:func:`runner.core.devices.gpu_refusal`)."""
    n = gpu_count_requested(value)
    if n == 0:
        return None
    if n < 0:
        return "all"
    return tuple(value) if isinstance(value, (list, tuple)) else int(value)


def _names(value: Any) -> tuple[str, ...]:
    names = tuple(str(n) for n in value or [])
    for name in names:
        if not _VARIABLE.fullmatch(name):
            raise RunnerError(f"launch.env_passthrough: {name!r} is not a variable name", EXIT_USAGE)
    return names


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Placement:
    """``launch.slot``: the slot a sweep's launcher placed a job in (its index, cores and GPUs), and
    the launch values the job asked for before (``requested``, as its config spelt them: what a
    replay or a skip-completed check puts back, :func:`unplaced`)."""

    index: int
    cpus: str | None
    gpus: tuple[int, ...]
    requested: Mapping[str, Json]

    def to_json(self) -> JsonObject:
        return {
            "index": self.index,
            "cpus": self.cpus,
            "gpus": list(self.gpus),
            "requested": dict(self.requested),
        }

    @classmethod
    def parse(cls, slot: object) -> Placement | None:
        """The slot record; None when there is none, or it is not one a launcher wrote."""
        if not isinstance(slot, Mapping):
            return None
        requested = slot.get("requested") or {}
        gpus, index = slot.get("gpus") or [], slot.get("index")
        return cls(
            index=index if isinstance(index, int) else 0,
            cpus=_optional_str(slot.get("cpus")),
            gpus=tuple(g for g in gpus if type(g) is int) if isinstance(gpus, list) else (),
            requested=dict(requested) if isinstance(requested, Mapping) else {},
        )


@dataclass(frozen=True)
class Launch:
    """How the worker is started (``launch``; ``conf/config.yaml`` documents each key)."""

    backend: Backend = Backend.DOCKER
    engine: Mapping[str, Any] | None = None  # a ``_target_`` node: only a user's own config chooses one
    gpus: Gpus = None
    processes: int = 1  # DDP processes without GPUs (checked only then)
    user: str | None = None
    shm_size: str | int | None = None
    cpuset_cpus: str | None = None
    mem_limit: str | int | None = None
    env_passthrough: tuple[str, ...] = ()
    checkpoint_every_n_steps: int = 0
    keep_checkpoints: int = 2  # the newest checkpoints kept
    nodes: int = 1
    network_interface: str | None = None
    image_id: str | None = None  # a Slurm sweep's job: the image the sweep resolved, run by its id
    image_ref: str | None = None  # … and the REPOSITORY@sha256:… a node lacking it pulls
    slot: Placement | None = None  # where a sweep's launcher placed the job; None: not placed
    # the section as the config spelt it: only recorded (what a placed job had asked for)
    section: Mapping[str, Json] = field(default_factory=dict, compare=False, repr=False)

    @property
    def containerized(self) -> bool:
        return self.backend.containerized

    @property
    def gpu_count(self) -> int:
        """GPUs asked for: 0, a count, or -1 for every GPU the host has."""
        return gpu_count_requested(self.gpus)

    def asked(self, *keys: str) -> JsonObject:
        """The values of ``keys`` as the config spelt them (an absent key left out): the record of
        what a job asked for before a launcher placed it."""
        return {k: self.section[k] for k in keys if k in self.section}

    @classmethod
    def parse(cls, launch: Mapping[str, Any]) -> Launch:
        """The launch section, checked; unknown keys are left to the raw config."""
        backend = str(launch.get("backend", "docker"))
        if backend not in set(Backend):
            raise RunnerError(f"launch.backend={backend!r} must be docker or host", EXIT_USAGE)
        gpus = _gpus(launch.get("gpus"))
        processes = launch.get("processes", 1)
        if gpus is None and (not isinstance(processes, int) or processes < 1):
            raise RunnerError(f"launch.processes={processes!r} must be a positive integer", EXIT_USAGE)
        engine = launch.get("engine")
        every = launch.get("checkpoint_every_n_steps") or 0
        if type(every) is not int or every < 0:
            raise RunnerError(f"launch.checkpoint_every_n_steps={every!r} must be 0 or more", EXIT_USAGE)
        return cls(
            backend=Backend(backend),
            engine=dict(engine) if isinstance(engine, Mapping) else None,
            gpus=gpus,
            processes=processes if isinstance(processes, int) else 1,
            user=_optional_str(launch.get("user") or None),
            shm_size=launch.get("shm_size"),
            cpuset_cpus=_optional_str(launch.get("cpuset_cpus")),
            mem_limit=launch.get("mem_limit"),
            env_passthrough=_names(launch.get("env_passthrough")),
            checkpoint_every_n_steps=every,
            keep_checkpoints=_positive("launch.keep_checkpoints", launch.get("keep_checkpoints"), 2),
            nodes=_positive("launch.nodes", launch.get("nodes"), 1),
            network_interface=_optional_str(launch.get("network_interface")),
            image_id=_optional_str(launch.get("image_id")),
            image_ref=_optional_str(launch.get("image_ref")),
            slot=Placement.parse(launch.get("slot")),
            section=dict(launch),
        )


# -- the experiment: a target, a script or a module ------------------------------------------------------
# One class: what a config names is what job.json tells the worker (``section``: as recorded)
Experiment = worker_io.Experiment


def parse_experiment(exp: Mapping[str, Any]) -> Experiment:
    """The experiment section, checked: exactly one of ``target`` (``module:function``, called
    in-process), ``script`` (``python script.py args``) or ``module`` (``python -m module args``);
    a program (script or module) may start under ``launcher: torchrun``. Its ``section`` is what
    the run records: a program's ``args`` as strings, ``launcher`` filled in when it was given."""
    raw = dict(exp)
    named = [k for k in worker_io.KINDS if raw.get(k)]
    if len(named) != 1:
        raise RunnerError(
            "experiment must name exactly one of `target` (module:function), `script` "
            "(a file) or `module` (python -m)",
            EXIT_USAGE,
        )
    kind = named[0]
    args: tuple[str, ...] = ()
    if kind != "target":
        raw["args"] = [str(a) for a in raw.get("args") or []]
        args = tuple(raw["args"])
    launcher, nproc = _launcher(raw, program=kind != "target")
    if "launcher" in raw or "nproc_per_node" in raw:
        raw["launcher"] = launcher
    name = raw.get("name")
    return Experiment(
        kind, str(raw[kind]), args, launcher, nproc, None if name is None else str(name), section=raw
    )


def _launcher(exp: Mapping[str, Any], program: bool) -> tuple[Launcher, int | None]:
    """``launcher`` (python | torchrun) and ``nproc_per_node`` (torchrun's processes; null: the
    world size)."""
    launcher = exp.get("launcher") or "python"
    if launcher not in LAUNCHERS:
        raise RunnerError(
            f"experiment.launcher={launcher!r} must be one of {', '.join(LAUNCHERS)}", EXIT_USAGE
        )
    if launcher == "torchrun" and not program:
        raise RunnerError(
            "experiment.launcher=torchrun starts a `script` or `module`, not a `target`", EXIT_USAGE
        )
    nproc = exp.get("nproc_per_node")
    if nproc is not None and (type(nproc) is not int or nproc < 1):
        raise RunnerError(
            f"experiment.nproc_per_node={nproc!r} must be a positive integer or null", EXIT_USAGE
        )
    if nproc is not None and launcher != "torchrun":
        raise RunnerError(
            "experiment.nproc_per_node is torchrun's: set experiment.launcher=torchrun", EXIT_USAGE
        )
    return ("torchrun" if launcher == "torchrun" else "python"), nproc


# -- the image ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Image:
    """The ``image`` section: the kind asked for (cpu | cuda | auto), the variants an image is made
    from (:func:`runner.core.images.plan` reads one) and the registry images are pushed to."""

    kind: str
    variants: Mapping[str, Mapping[str, Any]]
    registry: str | None = (
        None  # where every run's image is pushed (:func:`runner.core.images.check_registry`)
    )

    def variant(self, kind: str) -> Mapping[str, Any]:
        """The variant of ``kind`` ({} when the config has none)."""
        found = self.variants.get(kind) or {}
        return found if isinstance(found, Mapping) else {}

    @classmethod
    def parse(cls, image: Mapping[str, Any]) -> Image:
        kind = str(image.get("kind", "auto"))
        if kind not in ("cpu", "cuda", "auto"):
            raise RunnerError(f"image.kind={kind!r} must be cpu, cuda or auto", EXIT_USAGE)
        variants = image.get("variants") or {}
        if not isinstance(variants, Mapping):
            raise RunnerError(f"image.variants must be a mapping, not {variants!r}", EXIT_USAGE)
        return cls(kind, dict(variants), check_registry(image.get("registry")))

    def kind_for(self, launch: Launch) -> str:
        """``auto`` means cuda exactly when the launch asks for GPUs."""
        if self.kind != "auto":
            return self.kind
        return "cuda" if launch.gpus is not None else "cpu"


# -- the whole config --------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunConfig:
    """A composed config, read once. ``raw`` is what is recorded and what the worker gets."""

    raw: Mapping[str, Any]
    seed: int
    launch: Launch
    experiment: Experiment
    image: Image
    determinism: Profile  # the determinism profile
    fingerprint_every: int  # optimizer steps between parameter hashes

    @property
    def dataset(self) -> Mapping[str, Any]:
        return self.raw["dataset"]

    @property
    def trainer(self) -> Mapping[str, Any] | None:
        return self.raw.get("trainer")


def _seed(seed: Any) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise RunnerError(f"seed={seed!r} must be an integer in [0, 2**32)", EXIT_USAGE)
    return seed


def _fingerprint_every(cfg: Mapping[str, Any]) -> int:
    every = section(cfg, "fingerprints").get("every_k_steps", 10)
    if type(every) is not int or every < 1:
        raise RunnerError(f"fingerprints.every_k_steps={every!r} must be a positive integer", EXIT_USAGE)
    return every


def parse(cfg: Mapping[str, Any] | RunConfig) -> RunConfig:
    """Read a composed (or recorded) config; a bad value raises RunnerError, in one line."""
    if isinstance(cfg, RunConfig):
        return cfg
    launch = launch_of(cfg)
    seed = _seed(cfg.get("seed"))
    return RunConfig(
        raw=dict(cfg),
        seed=seed,
        launch=launch,
        experiment=parse_experiment(section(cfg, "experiment")),
        image=Image.parse(section(cfg, "image")),
        determinism=Profile.parse(section(cfg, "determinism")),
        fingerprint_every=_fingerprint_every(cfg),
    )
