"""noisy: a tiny regression model with one layer that adds *unseeded* noise at one operation.

It exists to show how the runner names a cause: two runs of it diverge at the first step, ``diff``
names that step, and ``replay --locate`` names the noise layer's operation. With ``model.put=true``
its first layer also calls ``Tensor.put_``, which has no deterministic implementation on the CPU,
for the determinism audit to find; ``model.probe=…`` adds one operation whose determinism depends on
the device (see :class:`Probe`). Synthetic data from the seed: no data set is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from runner import RunContext


class Noise(nn.Module):
    """Adds noise from a generator seeded by the OS, not by the run's seed: no two runs agree."""

    def __init__(self, scale: float):
        super().__init__()
        self.scale = scale
        self.gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.scale:
            return x
        return x + self.scale * torch.randn(x.shape, generator=self.gen).to(x.device)


class Put(nn.Module):
    """Writes a tensor's first elements back in place with ``put_`` (a no-op in value)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idx = torch.arange(4, device=x.device)
        return x.clone().put_(idx, x.take(idx))


class Probe(nn.Module):
    """One operation whose determinism differs by device, applied so that it is a no-op in value:
    ``index_add``/``scatter_add`` add zeros, ``upsample`` is bilinear up- then down-sampling by an
    exact factor, ``adaptive_pool`` pools to the same width. For the audit to name (or not)."""

    OPS = ("index_add", "scatter_add", "upsample", "adaptive_pool")

    def __init__(self, op: str):
        super().__init__()
        if op not in self.OPS:
            raise ValueError(f"model.probe={op!r} is not one of {', '.join(self.OPS)}")
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "index_add":
            return x.index_add(
                0, torch.zeros(x.shape[0], dtype=torch.long, device=x.device), torch.zeros_like(x)
            )
        if self.op == "scatter_add":
            return x.scatter_add(1, torch.zeros_like(x, dtype=torch.long), torch.zeros_like(x))
        if self.op == "upsample":
            up = nn.functional.interpolate(x[:, None, None, :], scale_factor=2, mode="bilinear")
            return nn.functional.avg_pool2d(up, 2)[:, 0, 0, :]
        return nn.functional.adaptive_avg_pool1d(x[:, None, :], x.shape[1])[:, 0, :]


class Noisy(pl.LightningModule):
    def __init__(self, width: int, noise: float, put: bool, lr: float, probe: str | None = None):
        super().__init__()
        self.lr = lr
        probes = [Probe(probe)] if probe else []
        self.net = nn.Sequential(
            nn.Linear(8, width),
            *([Put()] if put else []),
            *probes,
            Noise(noise),
            nn.ReLU(),
            nn.Linear(width, 1),
        )

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def train(cfg, run_dir: Path) -> dict:
    ctx = RunContext.current()
    g = torch.Generator().manual_seed(ctx.seed)
    x = torch.randn(512, 8, generator=g)
    y = x.sum(1, keepdim=True).sin()
    model = Noisy(
        int(cfg.model.width),
        float(cfg.model.noise),
        bool(cfg.model.put),
        float(cfg.model.lr),
        cfg.model.get("probe"),
    )
    loader = DataLoader(TensorDataset(x, y), batch_size=int(cfg.model.batch_size), shuffle=False)
    trainer = pl.Trainer(**ctx.trainer_kwargs(dict(cfg.trainer)))
    trainer.fit(model, train_dataloaders=loader, ckpt_path=ctx.resume_checkpoint)
    ctx.save_weights(model.net)
    return {
        "train_loss": float(trainer.callback_metrics.get("train_loss", float("nan"))),
        "global_step": trainer.global_step,
    }
