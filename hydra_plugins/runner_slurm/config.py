"""``hydra/launcher=slurm``: the launcher's settings (:class:`runner.flows.sweep_slurm.SlurmSettings`),
registered in Hydra's ConfigStore.

Left at null, what a job asks Slurm for is derived from the jobs themselves: cores from
``launch.processes`` × ``determinism.threads``, GPUs from ``launch.gpus``.
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from runner.flows.sweep_slurm import SlurmSettings


@dataclass
class RunnerSlurmLauncherConf(SlurmSettings):
    _target_: str = "hydra_plugins.runner_slurm.slurm_launcher.RunnerSlurmLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="slurm", node=RunnerSlurmLauncherConf, provider="runner_slurm"
)
