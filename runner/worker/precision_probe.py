"""The precision Lightning trains under, read back as training starts: a Trainer callback that
:meth:`runner.worker.context.RunContext.trainer_kwargs` adds to every target experiment."""

from __future__ import annotations

from pytorch_lightning import Callback

from runner.worker.determinism import record_in_training


class PrecisionProbe(Callback):
    """Records Lightning's precision setting, and whether autocast is on (and to which type)
    inside the precision plugin's training-step context: what a training step really runs under."""

    def on_train_start(self, trainer, pl_module) -> None:
        import torch

        device = pl_module.device.type
        with trainer.precision_plugin.train_step_context():
            on = torch.is_autocast_enabled(device)
            dtype = torch.get_autocast_dtype(device) if on else None
        record_in_training(
            lightning_precision=str(trainer.precision), autocast_dtype=str(dtype) if dtype else None
        )
