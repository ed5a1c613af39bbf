"""Periodic checkpoints, and everything a resume needs besides the weights to be bit-identical.

Lightning's ``ModelCheckpoint`` saves the module, optimizer and loop state every
``launch.checkpoint_every_n_steps`` steps into ``<run dir>/checkpoints/step-NNNNNNNN.ckpt``, each
written whole or not at all (:class:`AtomicCheckpointIO`: a kill or a full disk mid-write leaves
the checkpoints before it), the newest ``launch.keep_checkpoints`` kept (2 by default: a long run
does not fill its disk; a resumed run also keeps the one it started from, as Lightning does).
:class:`ResumeState` adds the rest:

* the RNG states of python, numpy, torch (and CUDA) of *every* rank, gathered to rank 0 which
  writes the file, and put back on each rank at the point of the step sequence where they were
  taken (see :meth:`ResumeState.on_load_checkpoint`);
* the position in the epoch, handed to the registered samplers (``resume_at(epoch,
  batches_done)``) before the data loader is first iterated, so a resumed epoch continues with
  the batch after the last one trained instead of starting the epoch over.

DataLoader workers need nothing of their own: their seeds derive from one draw of the main
process's torch RNG when an epoch's iterator is created, and that draw lands in the same place
of the restored sequence. Imported inside the image only (Lightning at module level); the host
finds checkpoints with :func:`runner.core.layout.latest_checkpoint`.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning import Callback

from runner.core import layout

STATE_KEY = "runner_resume"


def _portable(states: dict[str, Any]) -> dict[str, Any]:
    """RNG states as types ``torch.load(weights_only=True)`` accepts (numpy's array → list)."""
    out = dict(states)
    if "numpy" in out:
        kind, keys, pos, has_gauss, cached = out["numpy"]
        out["numpy"] = (kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached))
    if "python" in out:
        version, state, gauss = out["python"]
        out["python"] = (version, list(state), gauss)
    return out


def _native(states: dict[str, Any]) -> dict[str, Any]:
    out = dict(states)
    if "numpy" in out:
        import numpy as np

        kind, keys, pos, has_gauss, cached = out["numpy"]
        out["numpy"] = (kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
    return out


class ResumeState(Callback):
    """Save and restore what a checkpoint of weights and loops alone would lose (see module doc).

    Put it first among the callbacks: its RNG restore must precede anything else a step does.
    """

    def __init__(self, samplers: list | tuple = ()):
        self.samplers = list(samplers)
        self._position = (0, 0)  # (epoch, batches of it trained) after the last finished step
        self._epoch_done = False  # that step was its epoch's last
        self._rng_to_restore: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "ResumeState"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._position = (trainer.current_epoch, batch_idx + 1)
        self._epoch_done = batch_idx + 1 >= trainer.num_training_batches

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        # every rank runs this (Trainer.save_checkpoint builds the dict everywhere, rank 0 writes it)
        import torch.distributed as dist
        from lightning_fabric.utilities.seed import _collect_rng_states

        mine = _portable(_collect_rng_states(include_cuda=True))
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            every: list = [None] * dist.get_world_size()
            dist.all_gather_object(every, mine)
        else:
            every = [mine]
        epoch, done = self._position
        checkpoint[STATE_KEY] = {
            "rng": every,
            "epoch": epoch,
            "batches_done": done,
            "epoch_done": self._epoch_done,
            "global_step": trainer.global_step,
            "world_size": len(every),
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        """Position the samplers, and put the RNG states back where the uninterrupted run had them.

        Creating an epoch's data loader iterator draws once from torch's RNG. Mid-epoch, the
        uninterrupted run drew before the checkpoint, so the resumed run's fresh iterator must
        draw *before* the restore (it happens at the first step). After an epoch's last batch
        the next epoch's draw comes after the checkpoint, so the restore happens now, before
        the resumed run creates that iterator.
        """
        state = checkpoint.get(STATE_KEY)
        if state is None:
            raise RuntimeError(
                "checkpoint has no runner resume state (RNG, sampler position): it was not "
                "written by the runner, so a resume from it would not be bit-identical"
            )
        if state["world_size"] != trainer.world_size:
            raise RuntimeError(
                f"checkpoint was written by {state['world_size']} processes, this run has "
                f"{trainer.world_size}: a resume needs the same world size"
            )
        self._rng_to_restore = _native(state["rng"][trainer.global_rank])
        if state.get("epoch_done"):
            self._restore_rng()
        self._position = (state["epoch"], state["batches_done"])
        for sampler in self.samplers:
            sampler.resume_at(state["epoch"], state["batches_done"])

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._restore_rng()

    def _restore_rng(self) -> None:
        if self._rng_to_restore is not None:
            from lightning_fabric.utilities.seed import _set_rng_states

            _set_rng_states(self._rng_to_restore)
            self._rng_to_restore = None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written under a temporary name in their own directory, synced, then renamed into
    place: a name :func:`runner.core.layout.latest_checkpoint` finds is always a whole file. (Lightning's
    own save stages the file elsewhere and copies it over, which a kill or ENOSPC can tear.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        import torch

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # a full disk names the checkpoint it could not write
            tmp.unlink(missing_ok=True)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def callbacks(checkpoint_dir: Path, every_n_steps: int, samplers: list | tuple = (), keep: int = 2) -> list:
    """[ResumeState, ModelCheckpoint] for checkpointing every N optimizer steps (N > 0), keeping
    the newest ``keep`` (``launch.keep_checkpoints``; a resumed run keeps counting those before it)."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    ckpt = ModelCheckpoint(
        dirpath=str(checkpoint_dir),
        filename=layout.CHECKPOINT_TEMPLATE,
        auto_insert_metric_name=False,
        every_n_train_steps=int(every_n_steps),
        monitor="step",  # the newest are the "best": the last `keep` steps
        mode="max",
        save_top_k=max(1, int(keep)),
        save_last=False,
        enable_version_counter=False,
    )
    return [ResumeState(samplers), ckpt]
