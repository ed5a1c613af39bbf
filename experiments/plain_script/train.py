"""A user's existing training script, not written for the runner: it parses its own arguments,
starts its own processes with ``torch.multiprocessing.spawn`` and trains a small MLP with
DistributedDataParallel over gloo on the CPU.

The only concession to the runner is where its defaults come from: the runner's worker sets
``RUNNER_DATA_DIR`` (the data, read-only), ``RUNNER_OUTPUT_DIR`` (where results go; the manifest
hashes every file there), ``RUNNER_SEED`` and ``RUNNER_WORLD_SIZE``. Outside the runner the same
script runs with ``--data-dir … --out …``. It writes ``model.pt`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import struct
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def read_idx(path: Path) -> torch.Tensor:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    return torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8).reshape(shape)


def train(rank: int, world: int, args: argparse.Namespace) -> None:
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(args.seed)
    data = Path(args.data_dir)
    x = read_idx(data / args.images)[: args.samples].flatten(1).float().div(255.0)
    y = read_idx(data / args.labels)[: args.samples].long()
    model = nn.Sequential(nn.Linear(x.shape[1], args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10))
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    order = torch.Generator().manual_seed(args.seed)  # the same draw on every rank; each takes its slice
    loss = torch.zeros(())
    for _ in range(args.steps):
        idx = torch.randint(0, len(x), (args.batch_size * world,), generator=order)[rank::world]
        loss = F.cross_entropy(ddp(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = loss.detach().clone()
    dist.all_reduce(final)
    if rank == 0:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), out / "model.pt")
        metrics = {"train_loss": float(final) / world, "steps": args.steps}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        print(f"rank 0: {args.steps} steps, loss {metrics['train_loss']:.4f}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    # torch 2.13's gloo can abort a process at interpreter exit ("terminate called without an
    # active exception") after its work is done: leave without finalisation once all is written.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def main() -> None:
    env = os.environ
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=env.get("RUNNER_DATA_DIR", "data"))
    p.add_argument("--out", default=env.get("RUNNER_OUTPUT_DIR", "out"))
    p.add_argument("--seed", type=int, default=int(env.get("RUNNER_SEED", 0)))
    p.add_argument("--nprocs", type=int, default=int(env.get("RUNNER_WORLD_SIZE", 2)))
    p.add_argument("--images", default="train-images-idx3-ubyte.gz")
    p.add_argument("--labels", default="train-labels-idx1-ubyte.gz")
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    args = p.parse_args()
    with socket.socket() as s:  # a free port on loopback for the rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    mp.spawn(train, args=(args.nprocs, args), nprocs=args.nprocs, join=True)


if __name__ == "__main__":
    main()
