"""A run on a Slurm cluster: what its allocation is, and what a job asks for. Pure.

Slurm tells a job where it runs through environment variables (``SLURM_JOB_ID``,
``SLURM_JOB_NODELIST``, …) and, for the cores on each node, through ``scontrol show job -d``.
This module turns those into

* the manifest's ``cluster`` record (:func:`record`): job id, array index, node list,
  partition, the cores and GPUs the job was given — a replay elsewhere does not need it,
  it says where the bits were made;
* the job's :class:`~runner.core.slots.Slot` (:func:`slot`): the container is pinned to the
  allocation's cores and handed the allocation's GPUs, exactly as a local sweep slot is, so
  :func:`runner.core.slots.unplaced` undoes it for a replay or a skip-completed check;
* what an ``sbatch`` for a job must ask for (:func:`request`).

Reading the environment and calling ``scontrol`` is :mod:`runner.host.slurm`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from runner.core import slots

# states of a job that is still, or again, on its way (a requeued job passes through several)
ACTIVE_STATES = frozenset(
    {
        "PENDING",
        "CONFIGURING",
        "RUNNING",
        "COMPLETING",
        "REQUEUED",
        "REQUEUE_HOLD",
        "REQUEUE_FED",
        "RESIZING",
        "SIGNALING",
        "STAGE_OUT",
        "SUSPENDED",
        "RESV_DEL_HOLD",
    }
)


def in_job(env: Mapping[str, str]) -> bool:
    return bool(env.get("SLURM_JOB_ID"))


def _int(value: str | None) -> int | None:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        return None


def gpu_ids(env: Mapping[str, str]) -> list[int]:
    """The GPUs Slurm gave this job on this node (``SLURM_JOB_GPUS`` / ``SLURM_STEP_GPUS``: the
    node's own indices, which Docker's device requests name), or none."""
    raw = env.get("SLURM_STEP_GPUS") or env.get("SLURM_JOB_GPUS") or ""
    return [int(g) for g in raw.split(",") if g.strip().isdigit()]


def record(env: Mapping[str, str], cpu_ids: Sequence[int] | None) -> dict[str, Any] | None:
    """The manifest's ``cluster`` record for a run inside a Slurm job; None outside one."""
    if not in_job(env):
        return None
    return {
        "scheduler": "slurm",
        "cluster": env.get("SLURM_CLUSTER_NAME"),
        "job_id": env.get("SLURM_JOB_ID"),
        "array_job_id": env.get("SLURM_ARRAY_JOB_ID"),
        "array_task_id": _int(env.get("SLURM_ARRAY_TASK_ID")),
        "restart_count": _int(env.get("SLURM_RESTART_COUNT")) or 0,
        "partition": env.get("SLURM_JOB_PARTITION"),
        "nodelist": env.get("SLURM_JOB_NODELIST"),
        "node": env.get("SLURMD_NODENAME"),
        "num_nodes": _int(env.get("SLURM_JOB_NUM_NODES")),
        "allocation": {
            "cpus_on_node": _int(env.get("SLURM_CPUS_ON_NODE")),
            "cpu_ids": list(cpu_ids) if cpu_ids is not None else None,
            "gpus": gpu_ids(env),
            "mem_per_cpu_mb": _int(env.get("SLURM_MEM_PER_CPU")),
            "mem_per_node_mb": _int(env.get("SLURM_MEM_PER_NODE")),
        },
    }


def slot(env: Mapping[str, str], affinity: Sequence[int], cpu_ids: Sequence[int] | None) -> slots.Slot:
    """The cores and GPUs of this job's allocation on this node, as a slot.

    A cluster whose task plugin binds jobs (task/affinity, task/cgroup) already narrows this
    process's CPU affinity to the allocation: that is used as it is. Where Slurm does not bind
    (task/none) the affinity is the whole node; the allocation's cores are then the ``CPU_IDs``
    ``scontrol`` reports, and failing those, the first ``SLURM_CPUS_ON_NODE`` cores.
    """
    affinity = sorted(set(affinity))
    count = _int(env.get("SLURM_CPUS_ON_NODE")) or len(affinity)
    if len(affinity) <= count:
        cpus = affinity
    elif cpu_ids:
        cpus = sorted(set(cpu_ids))
    else:
        cpus = affinity[:count]
    return slots.Slot(index=_int(env.get("SLURM_NODEID")) or 0, cpus=tuple(cpus), gpus=tuple(gpu_ids(env)))


def request(
    task_cfgs: Sequence[Mapping[str, Any]], cpus_per_task: int | None, gpus_per_node: int | None
) -> dict[str, int]:
    """What each job of a sweep asks Slurm for: the most demanding job's cores (processes ×
    threads) and GPUs, unless the launcher's settings name them."""
    needs = [slots.job_needs(c) for c in task_cfgs]
    cores = cpus_per_task or max((n.cores for n in needs), default=1)
    gpus = gpus_per_node if gpus_per_node is not None else max((max(n.gpus, 0) for n in needs), default=0)
    out = {"cpus_per_task": int(cores)}
    if gpus:
        out["gpus_per_node"] = int(gpus)
    return out
