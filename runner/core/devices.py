"""Whether the GPUs a run asks for exist here, decided before anything is fetched, built or started. Pure.

A GPU run on a host without GPUs would otherwise pick the CUDA image, fetch gigabytes of wheels,
build it, and only then find out. The facts come from :func:`runner.host.facts.visible_gpus`
(``nvidia-smi -L``, the same driver view the manifest records); the decision is made here.

GPU indices are the driver's: ``launch.gpus=[0, 3]`` is what Docker's device request and the host
backend's ``CUDA_VISIBLE_DEVICES`` receive, so they are checked against the indices the driver lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runner.core.images import gpu_count_requested


@dataclass(frozen=True)
class VisibleGpus:
    """The GPU indices the driver lists, and why there are none when there are none."""

    ids: tuple[int, ...] = ()
    why_none: str = ""  # e.g. "nvidia-smi not found"


def asks_for_gpus(asked: Any) -> bool:
    """True when ``launch.gpus`` asks for any GPU (a malformed value is the planner's to refuse)."""
    try:
        return gpu_count_requested(asked) != 0
    except Exception:  # noqa: BLE001 - spec.plan_run refuses it with its own message
        return False


def _ids(ids: Sequence[int]) -> str:
    return ", ".join(str(i) for i in ids)


def gpu_refusal(asked: Any, visible: VisibleGpus) -> str | None:
    """None when ``launch.gpus=asked`` can be had on a host with ``visible``; else one line saying
    what was asked, what is there, and what to ask for instead."""
    if not asks_for_gpus(asked):
        return None
    shown = f"[{','.join(str(g) for g in asked)}]" if isinstance(asked, (list, tuple)) else str(asked)
    head = f"launch.gpus={shown}"
    if not visible.ids:
        why = visible.why_none or "the driver lists none"
        return f"{head} asks for GPUs, but no NVIDIA GPU is visible: {why}; run on the CPU with launch.gpus=0"
    here = f"this host has {len(visible.ids)} GPU{'s' if len(visible.ids) != 1 else ''} ({_ids(visible.ids)})"
    if isinstance(asked, (list, tuple)):
        bad = [g for g in asked if not (isinstance(g, int) and not isinstance(g, bool) and g >= 0)]
        if bad:
            return f"{head}: {bad[0]!r} is not a GPU index; {here}"
        twice = sorted({g for g in asked if list(asked).count(g) > 1})
        if twice:
            return f"{head} names GPU {_ids(twice)} more than once (one process per GPU); {here}"
        missing = [g for g in asked if g not in visible.ids]
        if missing:
            names = f"GPU{'s' if len(missing) > 1 else ''} {_ids(missing)}"
            return (
                f"{head} names {names}, but {here}; "
                f"name those, e.g. launch.gpus=[{visible.ids[0]}], or use launch.gpus=0"
            )
        return None
    if asked == "all":
        return None
    if int(asked) > len(visible.ids):
        return (
            f"{head} asks for {asked} GPUs, but {here}; ask for at most launch.gpus={len(visible.ids)} "
            "(or launch.gpus=all), or use launch.gpus=0 for the CPU"
        )
    return None
