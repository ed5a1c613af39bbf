"""Talking to Slurm: is a cluster reachable, what does this job hold, what state is a job in.

Everything here shells out to Slurm's own commands (``sinfo``, ``squeue``, ``scontrol``), the
interface every Slurm installation has; what their answers mean is :mod:`runner.core.cluster`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, TypedDict

from runner.core import cluster, slots
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.core.manifest import ClusterRecord

TIMEOUT_S = 60


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=TIMEOUT_S)


def _first_line(text: str) -> str:
    lines = [" ".join(line.split()) for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def check(partition: str | None) -> list[str]:
    """The cluster's partitions; raises RunnerError (one line) when no controller answers or the
    partition asked for is not among them."""
    if shutil.which("sinfo") is None:
        raise RunnerError(
            "hydra/launcher=slurm: Slurm's commands (sinfo, sbatch) are not installed here; "
            "run on a cluster's login node (or `make slurm` for a local one)",
            EXIT_ENVIRONMENT,
        )
    try:
        out = _run("sinfo", "-h", "-o", "%R")
    except subprocess.TimeoutExpired:
        raise RunnerError(
            f"hydra/launcher=slurm: the Slurm controller did not answer in {TIMEOUT_S}s", EXIT_ENVIRONMENT
        ) from None
    if out.returncode != 0:
        raise RunnerError(
            f"hydra/launcher=slurm: no Slurm cluster reachable ({_first_line(out.stderr)})", EXIT_ENVIRONMENT
        )
    names = sorted({p.strip() for p in out.stdout.split() if p.strip()})
    if partition is not None and partition not in names:
        raise RunnerError(
            f"hydra.launcher.partition={partition}: no such partition on this cluster "
            f"(it has: {', '.join(names) or 'none'})",
            EXIT_USAGE,
        )
    return names


def states(job_ids: list[str]) -> dict[str, str]:
    """Each job's Slurm state (``RUNNING``, ``COMPLETED``, …); a job squeue no longer lists is absent."""
    if not job_ids:
        return {}
    try:
        out = _run("squeue", "-h", "-r", "-t", "all", "-o", "%i %T", "-j", ",".join(job_ids))
    except subprocess.TimeoutExpired:
        return {j: "UNKNOWN" for j in job_ids}
    if out.returncode != 0:  # an id squeue has forgotten makes it fail: ask one by one
        if len(job_ids) == 1:
            return {}
        return {k: v for j in job_ids for k, v in states([j]).items()}
    found = {}
    for line in out.stdout.splitlines():
        jid, _, state = line.strip().partition(" ")
        if jid:
            found[jid] = state.strip()
    return found


def is_active(state: str | None) -> bool:
    """Still on its way (queued, running, requeued): a job squeue does not list is not."""
    return state is not None and (state in cluster.ACTIVE_STATES or state == "UNKNOWN")


def cancel(job_ids: list[str]) -> None:
    """``scancel``: Slurm sends the jobs SIGTERM (each records its run as interrupted), then
    SIGKILL after KillWait."""
    if job_ids:
        _run("scancel", *job_ids)


class SbatchParameters(TypedDict, total=False):
    """What the runner sets of submitit's ``SlurmExecutor`` (``update_parameters``)."""

    time: int  # minutes
    nodes: int
    ntasks_per_node: int
    stderr_to_stdout: bool
    job_name: str
    setup: list[str]  # shell lines before the job's command
    additional_parameters: dict[str, object]  # any other sbatch option, as the user wrote it
    cpus_per_task: int
    gpus_per_node: int
    srun_args: list[str]
    partition: str
    mem: str
    array_parallelism: int


def submit_array(calls: list[Any], folder: Path, params: SbatchParameters, asks: str) -> list[Any]:
    """One ``sbatch`` of a job array (submitit): each call runs on a node as one array task; returns
    submitit's job of each. Raises RunnerError (one line, ``asks`` in it) when sbatch refuses them."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=0)
    executor.update_parameters(**params)
    try:
        with executor.batch():
            return [executor.submit(call) for call in calls]
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError, OSError) as exc:
        detail = getattr(exc, "output", None) or getattr(exc, "stderr", None) or str(exc)
        if isinstance(detail, bytes):
            detail = detail.decode(errors="replace")
        line = [x for x in str(detail).splitlines() if x.strip()][-1:] or [type(exc).__name__]
        raise RunnerError(
            f"sbatch refused the sweep's jobs ({asks}): {line[0].strip()}", EXIT_USAGE
        ) from None


def requeue_self() -> None:
    """``scontrol requeue`` this very job: it goes back to the queue and starts again."""
    subprocess.run(["scontrol", "requeue", os.environ.get("SLURM_JOB_ID", "")], check=False)


def _cpu_ids(env: dict[str, str]) -> list[int] | None:
    """The cores of this job's allocation on this node, as ``scontrol show job -d`` lists them."""
    node = env.get("SLURMD_NODENAME")
    try:
        out = _run("scontrol", "show", "job", "-d", str(env["SLURM_JOB_ID"]))
    except (OSError, subprocess.TimeoutExpired):
        return None
    from runner.core.slots import parse_cpu_list

    for m in re.finditer(r"Nodes=(\S+)\s+CPU_IDs=(\S+)", out.stdout):
        names = _expand(m.group(1))
        if node in names or len(names) == 1 and len(re.findall("CPU_IDs=", out.stdout)) == 1:
            try:
                return parse_cpu_list(m.group(2))
            except RunnerError:
                return None
    return None


def _expand(nodelist: str) -> list[str]:
    out = _run("scontrol", "show", "hostnames", nodelist) if shutil.which("scontrol") else None
    return out.stdout.split() if out is not None and out.returncode == 0 else [nodelist]


def check_span(nodes: int) -> None:
    """Refuse, in one line, a run over ``nodes`` nodes that cannot start here: outside an allocation
    that large, or not on its first node (where the nodes meet, and where srun's first task runs)."""
    env = dict(os.environ)
    cluster.check_allocation(nodes, env)
    first = _expand(env.get("SLURM_JOB_NODELIST", ""))[0]
    here = env.get("SLURMD_NODENAME")
    if first and here != first:
        raise RunnerError(
            f"launch.nodes={nodes}: the runner is on {here}, not on the allocation's first node {first}",
            EXIT_USAGE,
        )


def current() -> tuple[ClusterRecord | None, slots.Slot | None]:
    """This process's Slurm job: its manifest record and its slot (None, None outside a job)."""
    env = dict(os.environ)
    if not cluster.in_job(env):
        return None, None
    ids = _cpu_ids(env)
    return cluster.record(env, ids), cluster.slot(env, sorted(os.sched_getaffinity(0)), ids)


def record() -> ClusterRecord | None:
    """The manifest's ``cluster`` record for this process (None outside a Slurm job)."""
    return current()[0]
