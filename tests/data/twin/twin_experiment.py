"""Randomness a user brings, for the determinism audit's twin step to catch (``+twin=MODE``):

* ``clock``: a layer adds noise from a generator of its own seeded from the clock;
* ``random``: the training step scales its loss by Python's ``random``, reseeded from the OS;
* ``workers``: the DataLoader's workers seed numpy from the clock, and the data set jitters with it;
* ``none``: nothing of the kind (the run is repeatable).

A tiny regression model on synthetic data from the run's seed; the weights go to outputs/model.pt.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from runner import RunContext


class ClockNoise(nn.Module):
    def __init__(self, on: bool):
        super().__init__()
        self.on = on
        self.gen = torch.Generator().manual_seed(time.time_ns())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.on:
            return x
        return x + 1e-3 * torch.randn(x.shape, generator=self.gen)


class Jittered(Dataset):
    """Synthetic samples; with ``jitter`` each gets noise from numpy's global state (in a worker,
    whatever its worker_init_fn seeded it with)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, jitter: bool):
        self.x, self.y, self.jitter = x, y, jitter

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i]
        if self.jitter:
            x = x + torch.from_numpy(np.random.standard_normal(x.shape).astype("float32")) * 1e-3
        return x, self.y[i]


def seed_from_clock(worker_id: int) -> None:
    np.random.seed(time.time_ns() % 2**32)


class Twin(pl.LightningModule):
    def __init__(self, mode: str):
        super().__init__()
        self.mode = mode
        self.net = nn.Sequential(nn.Linear(8, 16), ClockNoise(mode == "clock"), nn.ReLU(), nn.Linear(16, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        if self.mode == "random":
            loss = loss * (1 + 1e-3 * random.Random().random())  # a fresh Random: seeded from the OS
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def train(cfg, run_dir: Path) -> dict:
    ctx = RunContext.current()
    mode = str(cfg.get("twin") or "none")
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(256, 8, generator=g)
    y = x.sum(1, keepdim=True).sin()
    workers = mode == "workers"
    loader = DataLoader(
        Jittered(x, y, jitter=workers),
        batch_size=32,
        shuffle=True,
        num_workers=1 if workers else 0,
        worker_init_fn=seed_from_clock if workers else None,
    )
    model = Twin(mode)
    trainer = pl.Trainer(**ctx.trainer_kwargs(dict(cfg.trainer)))
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ctx.resume_checkpoint)
    ctx.save_weights(model.net)
    return {"train_loss": float(trainer.callback_metrics.get("train_loss", float("nan")))}
