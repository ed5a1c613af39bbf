"""A plain training script for the determinism audit of programs (tests/e2e/test_script_audit.py).

It seeds nothing itself. ``--put`` scatters into its batch with ``Tensor.put_``, which torch flags as
having no deterministic implementation on the CPU. ``--twin`` names its step with
``runner.audited``, so the audit runs the first step twice; ``--clock`` adds noise to that step
from a generator seeded from the clock. Under torchrun (``LOCAL_RANK`` set) it trains with
DistributedDataParallel over gloo. ``metrics.json`` says what the process started with: the first
draws of torch's and Python's generators, and torch's deterministic switches.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import torch
import torch.distributed as dist

from runner import audited

first = {"torch_draw": torch.rand(()).item(), "random_draw": random.random()}
p = argparse.ArgumentParser()
p.add_argument("--put", action="store_true")
p.add_argument("--twin", action="store_true")
p.add_argument("--clock", action="store_true")
p.add_argument("--steps", type=int, default=3)
args = p.parse_args()

ddp = "LOCAL_RANK" in os.environ
if ddp:
    dist.init_process_group("gloo")
model = torch.nn.Linear(4, 1)
net = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
noise = torch.Generator().manual_seed(time.time_ns())


def step(x: torch.Tensor) -> torch.Tensor:
    if args.clock:
        x = x + 1e-3 * torch.randn(x.shape, generator=noise)
    loss = net(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


if args.twin:
    step = audited(net, opt)(step)
for _ in range(args.steps):
    x = torch.randn(8, 4)
    if args.put:
        x = x.flatten().put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0])).view(8, 4)
    step(x)
if not ddp or dist.get_rank() == 0:
    torch.save(model.state_dict(), "model.pt")
    flags = {
        "deterministic": float(torch.are_deterministic_algorithms_enabled()),
        "warn_only": float(torch.is_deterministic_algorithms_warn_only_enabled()),
    }
    with open("metrics.json", "w") as f:
        json.dump({**first, **flags}, f)
if ddp:
    dist.destroy_process_group()
