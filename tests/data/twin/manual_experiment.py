"""A LightningModule with manual optimization, for the twin step under DDP
(tests/e2e/test_audit_manual.py).

Two sub-networks with an optimizer each, stepped by hand as GAN-style modules do:
``manual_backward``, each optimizer's ``step``/``zero_grad``, gradients clipped with
``clip_gradients``, a learning-rate scheduler stepped every step (its rate a function of its step
count); ``training_step`` returns nothing. ``+manual=clock`` adds noise from a generator seeded from
the clock to the first network (the twin step must name it); ``+manual=none`` is repeatable.
Synthetic data from the run's seed; the weights go to outputs/model.pt.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from runner import RunContext


class ClockNoise(nn.Module):
    def __init__(self, on: bool):
        super().__init__()
        self.on = on
        self.gen = torch.Generator().manual_seed(time.time_ns())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1e-3 * torch.randn(x.shape, generator=self.gen) if self.on else x


class TwoNets(pl.LightningModule):
    def __init__(self, noisy: bool):
        super().__init__()
        self.automatic_optimization = False
        self.encoder = nn.Sequential(nn.Linear(8, 16), ClockNoise(noisy), nn.ReLU())
        self.head = nn.Linear(16, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        opt_encoder, opt_head = self.optimizers()
        loss = nn.functional.mse_loss(self.head(self.encoder(x)), y)
        opt_encoder.zero_grad()
        opt_head.zero_grad()
        self.manual_backward(loss)
        self.clip_gradients(opt_encoder, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
        opt_encoder.step()
        opt_head.step()
        self.lr_schedulers().step()
        self.log("train_loss", loss)

    def configure_optimizers(self):
        encoder = torch.optim.SGD(self.encoder.parameters(), lr=0.05, momentum=0.9)
        head = torch.optim.Adam(self.head.parameters(), lr=0.01)
        return [encoder, head], [torch.optim.lr_scheduler.LambdaLR(encoder, lambda step: 1 / (1 + step))]


def train(cfg, run_dir: Path) -> dict:
    ctx = RunContext.current()
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(512, 8, generator=g)
    y = x.sum(1, keepdim=True).sin()
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    model = TwoNets(noisy=str(cfg.get("manual") or "none") == "clock")
    trainer = pl.Trainer(**ctx.trainer_kwargs(dict(cfg.trainer)))
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ctx.resume_checkpoint)
    ctx.save_weights(model)
    return {"train_loss": float(trainer.callback_metrics.get("train_loss", float("nan")))}
