"""A DDP experiment one of whose training processes dies mid-training (``os._exit``, as a segfault
or the OOM killer would end it: no exception, no cleanup), for the runner's tests of what a run
does when it loses one rank. ``model.die_rank`` dies after step ``model.die_step`` with status
``model.die_code``; the other ranks linger there for ``model.linger`` seconds first (0: they go on
to their next collective at once, and fail there, their peer gone), then would wait in a
collective for it."""

from __future__ import annotations

import os
import time

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from runner import current


class Dies(pl.Callback):
    def __init__(self, rank: int, step: int, code: int, linger: float):
        self.rank, self.step, self.code, self.linger = rank, step, code, linger

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step < self.step:
            return
        if trainer.global_rank == self.rank:
            print(f"rank {self.rank} dies at step {trainer.global_step}", flush=True)
            os._exit(self.code)
        print(f"rank {trainer.global_rank} lingers at step {trainer.global_step}", flush=True)
        time.sleep(self.linger)
        print(f"rank {trainer.global_rank} lingered", flush=True)


class Regression(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)

    def training_step(self, batch, _):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def train(cfg, run_dir) -> dict:
    ctx = current()
    x = torch.randn(512, 4, generator=torch.Generator().manual_seed(ctx.seed))
    data = DataLoader(TensorDataset(x, x.sum(dim=1, keepdim=True)), batch_size=8)
    kwargs = ctx.trainer_kwargs(dict(cfg.trainer))
    m = cfg.model
    kwargs["callbacks"].append(Dies(int(m.die_rank), int(m.die_step), int(m.die_code), float(m.linger)))
    trainer = pl.Trainer(**kwargs)
    model = Regression()
    trainer.fit(model, train_dataloaders=data)
    ctx.save_weights(model.net)
    return {"global_step": trainer.global_step}
