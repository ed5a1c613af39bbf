"""Hydra launcher plugin ``hydra/launcher=slurm``: each sweep job a Slurm job, each run a pinned container."""
