"""No host-device synchronisation per training step from Lightning's SIGTERM relay.

Lightning 2.6's DDP training loop broadcasts a "received SIGTERM" flag from rank 0 before every
batch and reads it back with ``.item()``: a blocking sync each step. The host then waits for the
GPU to drain before it can queue the next step, and the GPU idles while the host does the step's
Python work. On mnist_ddp with 2 H100s (bf16, 16k samples per GPU) that was about a quarter of
the step. The relay exists for launchers that signal rank 0 only; the runner's worker signals
every rank itself, so each rank checks its own flag instead, with no collective.
"""

from __future__ import annotations

from pytorch_lightning import Callback
from pytorch_lightning.utilities.exceptions import SIGTERMException

from runner.worker.determinism import record_in_training


class LocalSigterm(Callback):
    """Replaces the per-step broadcast of the SIGTERM flag with a check of this rank's own flag."""

    def on_train_start(self, trainer, pl_module) -> None:
        loop = trainer.fit_loop.epoch_loop
        if not hasattr(loop, "_broadcast_sigterm_tensor"):  # another Lightning: leave it be, and say so
            record_in_training(sigterm_broadcast_per_step=None)
            return

        def check_own_flag() -> None:
            if getattr(trainer, "received_sigterm", False):
                raise SIGTERMException()

        loop._broadcast_sigterm_tensor = check_own_flag
        record_in_training(sigterm_broadcast_per_step=False)
