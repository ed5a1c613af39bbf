"""resnet_small: a small ResNet (residual blocks with batch norm) on the mnist_ddp pipeline.

The second workload of the determinism and precision benchmark: deeper than mnist_ddp's CNN,
with batch norm and skip connections, on the same whole-data-on-device batching. Pooling is a
mean over the spatial dimensions and downsampling is by stride-2 convolutions: both have
deterministic backward passes on every device.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from experiments import mnist


class Block(nn.Module):
    """Two 3×3 convolutions with batch norm and a skip connection (a projection when the shape changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class SpatialMean(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class SmallResNet(mnist.MnistCNN):
    def build_net(self, channels: int, hidden: int, dropout: float) -> nn.Module:
        c = channels
        return nn.Sequential(
            nn.Conv2d(1, c, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(),  # 14×14
            Block(c, c),
            Block(c, 2 * c, stride=2),
            Block(2 * c, 2 * c),  # 7×7
            SpatialMean(),
            nn.Linear(2 * c, hidden),
            nn.ReLU(),
            *([nn.Dropout(dropout)] if dropout else []),
            nn.Linear(hidden, 10),
        )


def train(cfg, run_dir: Path) -> dict:
    return mnist.train(cfg, run_dir, model_cls=SmallResNet)
