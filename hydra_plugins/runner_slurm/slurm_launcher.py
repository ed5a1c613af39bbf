"""The ``slurm`` Hydra launcher: a sweep's jobs as Slurm jobs, each a pinned container with a manifest.

It is the ``runner_slots`` launcher with Slurm in place of this machine's slots; the sweep itself
(preflight, one job array, pinning on the node, preemption, requeue and resume, each job's status,
the summary and the exit status) is :mod:`runner.flows.sweep_slurm`.
"""

from hydra_plugins.runner_launcher.sweep_launcher import SweepLauncher
from runner.flows.sweep_slurm import SlurmSettings, run_slurm


class RunnerSlurmLauncher(SweepLauncher):
    settings_type = SlurmSettings
    flow = staticmethod(run_slurm)
    travels = True
