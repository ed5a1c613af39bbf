"""A DDP experiment one of whose training processes dies mid-training (``os._exit``, as a segfault
or the OOM killer would end it: no exception, no cleanup), for the runner's tests of what a run
does when it loses one rank. ``model.die_rank`` dies after step ``model.die_step`` with status
``model.die_code``; the other ranks are left waiting in a collective for it."""

from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from runner import current


class Dies(pl.Callback):
    def __init__(self, rank: int, step: int, code: int):
        self.rank, self.step, self.code = rank, step, code

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank == self.rank and trainer.global_step >= self.step:
            print(f"rank {self.rank} dies at step {trainer.global_step}", flush=True)
            os._exit(self.code)


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
    kwargs["callbacks"].append(
        Dies(int(cfg.model.die_rank), int(cfg.model.die_step), int(cfg.model.die_code))
    )
    trainer = pl.Trainer(**kwargs)
    model = Regression()
    trainer.fit(model, train_dataloaders=data)
    ctx.save_weights(model.net)
    return {"global_step": trainer.global_step}
