"""Slots: disjoint shares of the machine (CPU cores, GPUs) that concurrent sweep jobs run in.

A sweep launcher hands each job one slot; a slot's cores are pinned with ``cpuset_cpus`` and its
GPUs named in ``launch.gpus``, so two jobs never share a device. Planning is pure (a pool of
cores and GPUs in, a list of slots out); reading what this machine has is
:func:`runner.host.facts.detect_cpus` and :func:`~runner.host.facts.detect_gpus`.

Why results do not depend on slots: under the strict determinism profile each training process
runs one thread with a pinned instruction set, so a job computes the same bits on one core or
on eight, alone or beside others. Slots only decide *where* and *how many at once*.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from runner.core.config import Launch, Placement, launch_or_none, section, with_launch
from runner.core.determinism import Profile
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.json_types import Json, JsonObject


@dataclass(frozen=True)
class Slot:
    """One share of the machine: these cores, these GPUs (empty tuple: none)."""

    index: int
    cpus: tuple[int, ...]
    gpus: tuple[int, ...] = ()
    mem_mb: int | None = None  # the memory the slot may use (a Slurm allocation's); None: no limit
    image: str | None = None  # the image id the sweep resolved: the job runs that very image, not a tag
    image_ref: str | None = None  # where a registry holds it by digest (REPOSITORY@sha256:…), if pushed

    @property
    def cpuset(self) -> str | None:
        return format_cpu_list(self.cpus) if self.cpus else None

    def describe(self) -> str:
        parts = [f"cpus {self.cpuset}"] if self.cpus else []
        if self.gpus:
            parts.append(f"gpus {','.join(map(str, self.gpus))}")
        if self.mem_mb:
            parts.append(f"{self.mem_mb} MB")
        return f"slot {self.index} ({', '.join(parts) or 'unpinned'})"


@dataclass(frozen=True)
class JobNeeds:
    """What one job asks of the machine, read from its composed config."""

    cores: int  # training processes × threads per process (a lower bound when threads are free)
    gpus: int  # 0: CPU job; -1: every GPU; N: N GPUs
    nodes: int = 1  # the nodes it spans (``launch.nodes``)


def parse_cpu_list(text: str) -> list[int]:
    """``"0-3,6"`` → ``[0, 1, 2, 3, 6]`` (the cpuset / taskset list format)."""
    out: set[int] = set()
    for part in str(text).replace(" ", "").split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise RunnerError(f"bad CPU list {text!r}: expected e.g. 0-3,6", EXIT_USAGE) from None
        if a < 0 or b < a:
            raise RunnerError(f"bad CPU list {text!r}: range {part!r} is empty or negative", EXIT_USAGE)
        out.update(range(a, b + 1))
    if not out:
        raise RunnerError(f"bad CPU list {text!r}: no cores", EXIT_USAGE)
    return sorted(out)


def format_cpu_list(cpus: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 6]`` → ``"0-3,6"``."""
    cpus = sorted(set(cpus))
    runs: list[str] = []
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        runs.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(runs)


def job_needs(cfg: Mapping[str, Any]) -> JobNeeds | None:
    """Cores and GPUs one job uses: ``launch.processes`` × ``determinism.threads`` on CPU. None for
    a job whose launch does not parse: it is planned around, and fails alone when it runs."""
    launch = launch_or_none(cfg)
    if launch is None:
        return None
    gpus = launch.gpu_count
    processes = launch.processes if not gpus else max(gpus, 1)
    try:
        threads = Profile.parse(section(cfg, "determinism")).threads or 1
    except RunnerError:
        threads = 1  # the job itself reports the bad value
    return JobNeeds(cores=processes * threads, gpus=gpus, nodes=launch.nodes)


def plan_slots(
    cpus: Sequence[int],
    gpus: Sequence[int],
    needs: Sequence[JobNeeds],
    slots: int | None = None,
    cpus_per_slot: int | None = None,
) -> list[Slot]:
    """Cut the pool into disjoint slots sized for the most demanding job of the sweep.

    GPU jobs: one slot per ``gpus``-per-job GPUs, and the cores shared out evenly among those
    slots. CPU jobs: one slot per ``cpus_per_slot`` cores (default: what a job needs, i.e.
    processes × threads, capped at the pool). ``slots`` asks for a number of slots explicitly;
    asking for more than the pool holds is an error, never a silent overlap.
    """
    cpus = sorted(set(cpus))
    gpus = sorted(set(gpus))
    if slots is not None and slots < 1:
        raise RunnerError(f"hydra.launcher.slots={slots} must be at least 1", EXIT_USAGE)
    if cpus_per_slot is not None and cpus_per_slot < 1:
        raise RunnerError(f"hydra.launcher.cpus_per_slot={cpus_per_slot} must be at least 1", EXIT_USAGE)
    gpu_need = max((n.gpus for n in needs), key=lambda g: (g < 0, g), default=0)
    if gpu_need:
        return _gpu_slots(cpus, gpus, gpu_need, slots, cpus_per_slot)
    return _cpu_slots(cpus, needs, slots, cpus_per_slot)


def _gpu_slots(
    cpus: list[int], gpus: list[int], gpu_need: int, slots: int | None, cpus_per_slot: int | None
) -> list[Slot]:
    """Slots of ``gpu_need`` GPUs each (-1: every GPU), the cores shared out evenly among them."""
    if not gpus:
        raise RunnerError("the sweep's jobs ask for GPUs but this machine shows none", EXIT_USAGE)
    per = len(gpus) if gpu_need < 0 else gpu_need
    if per > len(gpus):
        raise RunnerError(f"a job asks for {per} GPUs; this machine has {len(gpus)}", EXIT_USAGE)
    fit = len(gpus) // per
    n = fit if slots is None else slots
    if n > fit:
        raise RunnerError(
            f"hydra.launcher.slots={n}: {len(gpus)} GPUs hold only {fit} slot(s) of {per} GPU(s)",
            EXIT_USAGE,
        )
    cores = cpus_per_slot or len(cpus) // n
    if cores * n > len(cpus):
        raise RunnerError(
            f"{n} slots × {cores} cores need more than the {len(cpus)} cores available", EXIT_USAGE
        )
    return [
        Slot(i, tuple(cpus[i * cores : (i + 1) * cores]), tuple(gpus[i * per : (i + 1) * per]))
        for i in range(n)
    ]


def _cpu_slots(
    cpus: list[int], needs: Sequence[JobNeeds], slots: int | None, cpus_per_slot: int | None
) -> list[Slot]:
    """Slots of cores only: ``cpus_per_slot`` each, or the pool cut in ``slots``, or what the
    most demanding job needs (capped at the pool)."""
    if not cpus:
        raise RunnerError("no CPU cores to hand out", EXIT_USAGE)
    if cpus_per_slot is None:
        cores = (
            len(cpus) // slots
            if slots is not None
            else min(max((n.cores for n in needs), default=1), len(cpus))
        )
    else:
        cores = cpus_per_slot
    if cores < 1 or cores > len(cpus):
        raise RunnerError(
            f"hydra.launcher.slots={slots}: the {len(cpus)} cores available cannot give each slot a core",
            EXIT_USAGE,
        )
    fit = len(cpus) // cores
    n = fit if slots is None else slots
    if n > fit:
        raise RunnerError(
            f"hydra.launcher.slots={n} × {cores} cores need more than the {len(cpus)} cores available",
            EXIT_USAGE,
        )
    return [Slot(i, tuple(cpus[i * cores : (i + 1) * cores])) for i in range(n)]


def placement(slot: Slot, launch: Launch) -> JsonObject:
    """The ``launch`` keys a job gets from its slot (and what it asked for, kept for the record)."""
    out: JsonObject = {"cpuset_cpus": slot.cpuset}
    if slot.gpus:
        out["gpus"] = list(slot.gpus)
    requested: JsonObject = {"cpuset_cpus": None, "gpus": None, **launch.asked("cpuset_cpus", "gpus")}
    if slot.mem_mb and not launch.mem_limit:
        out["mem_limit"] = f"{slot.mem_mb}m"
        requested["mem_limit"] = launch.mem_limit
    for key, value in (("image_id", slot.image), ("image_ref", slot.image_ref)):
        if value:
            out[key] = value
            requested.update(launch.asked(key))
    out["slot"] = Placement(slot.index, slot.cpuset, slot.gpus, requested).to_json()
    return out


def unplaced(config: Mapping[str, Any], *, as_asked: bool = False) -> dict[str, Json]:
    """A sweep job's config with its slot undone: what it ran with, not where on that machine.

    A replay (months later, maybe on a smaller machine) must not ask for the cores and GPU ids
    of the slot the job happened to get: those need not exist there. It keeps the number of GPUs
    (the world size is part of the result) and the ``cpuset_cpus`` the user asked for, if any.
    ``as_asked`` gives back ``launch.gpus`` exactly as the job asked for it (``all``, say), the
    form a config has before a launcher places it. A config no launcher placed comes back as it is.
    """
    launch = launch_or_none(config)
    if launch is None or launch.slot is None:
        return dict(config)
    slot, requested = launch.slot, launch.slot.requested
    changes: JsonObject = {"cpuset_cpus": requested.get("cpuset_cpus")}
    if "mem_limit" in requested:
        changes["mem_limit"] = requested["mem_limit"]
    changes["gpus"] = len(slot.gpus) if slot.gpus and not as_asked else requested.get("gpus")
    images = ("image_id", "image_ref")
    changes.update({k: requested[k] for k in images if k in requested})
    return with_launch(config, drop=("slot", *(k for k in images if k not in requested)), **changes)
