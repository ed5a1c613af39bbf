"""``hydra/launcher=runner_slots``: the launcher's settings, registered in Hydra's ConfigStore.

Every setting may be left at null: the launcher then derives it from the machine and the jobs
(cores: this process's CPU affinity; GPUs: ``CUDA_VISIBLE_DEVICES`` or the driver; per-job
needs: ``launch.gpus``, or ``launch.processes`` × ``determinism.threads``).
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore


@dataclass
class RunnerSlotsLauncherConf:
    _target_: str = "hydra_plugins.runner_launcher.runner_launcher.RunnerSlotsLauncher"
    # how many jobs run at once; null: as many as fit (GPUs / GPUs per job, or cores / cores per job)
    slots: int | None = None
    # CPU cores pinned to each slot (cpuset_cpus); null: what one job needs, or an even share of `cpus`
    cpus_per_slot: int | None = None
    # the cores to hand out, e.g. "0-7"; null: every core this process may run on
    cpus: str | None = None
    # the GPUs to hand out, e.g. [0, 1, 2, 3]; null: every GPU this machine shows
    gpus: list[int] | None = None
    # write summary.json and summary.png at the sweep root after each batch of jobs
    summary: bool = True
    # re-running a sweep (same hydra.sweep.dir): skip the jobs whose run dir holds a completed
    # manifest for identical inputs; run the others again (a leftover run dir goes to .superseded/)
    skip_completed: bool = False


ConfigStore.instance().store(
    group="hydra/launcher", name="runner_slots", node=RunnerSlotsLauncherConf, provider="runner_launcher"
)
