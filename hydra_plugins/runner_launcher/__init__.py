"""Hydra launcher plugin ``hydra/launcher=runner_slots``: sweep jobs side by side, one machine slot each."""
