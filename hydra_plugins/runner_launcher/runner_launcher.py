"""The ``runner_slots`` Hydra launcher: a sweep's jobs side by side, each in its own slot.

Any Hydra sweeper (the basic one, Optuna, Ax, …) hands this launcher batches of jobs — *sweep
jobs*: one set of overrides each, not to be confused with the worker's ``job.json`` — and each
is still a normal run of the task function in its own run dir. The sweep itself (slots of pinned
cores and GPUs, one image per sweep, ``hydra.launcher.skip_completed=true``, each job's status,
``summary.json`` and ``summary.png``, the exit status) is :mod:`runner.flows.sweep`.

With more than one slot the jobs' terminal output goes to ``console.log`` in each run dir
(the training log is in ``logs/train.log`` as always); the launcher prints one line per job.
"""

from hydra_plugins.runner_launcher.sweep_launcher import SweepLauncher
from runner.flows.sweep import SlotSettings, run_local


class RunnerSlotsLauncher(SweepLauncher):
    settings_type = SlotSettings
    flow = staticmethod(run_local)
