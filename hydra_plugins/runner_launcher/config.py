"""``hydra/launcher=runner_slots``: the launcher's settings (:class:`runner.flows.sweep.SlotSettings`),
registered in Hydra's ConfigStore.

Every setting may be left at null: the launcher then derives it from the machine and the jobs
(cores: this process's CPU affinity; GPUs: ``CUDA_VISIBLE_DEVICES`` or the driver; per-job
needs: ``launch.gpus``, or ``launch.processes`` × ``determinism.threads``).
"""

from dataclasses import dataclass

from hydra.core.config_store import ConfigStore

from runner.flows.sweep import SlotSettings


@dataclass
class RunnerSlotsLauncherConf(SlotSettings):
    _target_: str = "hydra_plugins.runner_launcher.runner_launcher.RunnerSlotsLauncher"


ConfigStore.instance().store(
    group="hydra/launcher", name="runner_slots", node=RunnerSlotsLauncherConf, provider="runner_launcher"
)
