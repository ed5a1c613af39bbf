"""``hydra/launcher=slurm``: the launcher's settings, registered in Hydra's ConfigStore.

Left at null, what a job asks Slurm for is derived from the jobs themselves: cores from
``launch.processes`` × ``determinism.threads``, GPUs from ``launch.gpus``.
"""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class RunnerSlurmLauncherConf:
    _target_: str = "hydra_plugins.runner_slurm.slurm_launcher.RunnerSlurmLauncher"
    # the partition to submit to; null: the cluster's default partition
    partition: str | None = None
    # each job's time limit in minutes (Slurm's --time)
    timeout_min: int = 60
    # cores per job; null: the most demanding job's processes × threads
    cpus_per_task: int | None = None
    # GPUs per job; null: the most demanding job's launch.gpus
    gpus_per_node: int | None = None
    # memory per job in GB; null: the partition's default
    mem_gb: int | None = None
    # at most this many of the sweep's jobs run at once (the array's %N); null: as Slurm schedules them
    array_parallelism: int | None = None
    # where Slurm's and submitit's own logs of each job go; null: <sweep dir>/.slurm
    folder: str | None = None
    # any other sbatch option, e.g. {account: lab, qos: high, constraint: a100}
    additional_parameters: dict[str, Any] = field(default_factory=dict)
    # lines run in the job before the runner starts (module load …, a rootless engine's socket …)
    setup: list[str] = field(default_factory=list)
    # seconds between checks of the jobs' states
    poll_s: float = 2.0
    # write summary.json and summary.png at the sweep root when the jobs have ended
    summary: bool = True
    # re-running a sweep (same hydra.sweep.dir): skip completed jobs, resume interrupted ones in place
    skip_completed: bool = False


ConfigStore.instance().store(
    group="hydra/launcher", name="slurm", node=RunnerSlurmLauncherConf, provider="runner_slurm"
)
