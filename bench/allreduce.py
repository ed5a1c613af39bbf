"""How long one all-reduce of a model's gradients takes on this machine's GPUs, outside any training.

One process per GPU, NCCL, the runner's NCCL settings for the profile named (``strict`` pins
``NCCL_ALGO``/``NCCL_PROTO``; ``fast`` leaves NCCL's own choice). Prints one JSON line per size:
milliseconds per all-reduce (median of the timed calls, all ranks started together by a barrier)
and NCCL's bus bandwidth for it.

    python bench/allreduce.py --gpus 4 --profile strict --mb 12.9 0.3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402

NCCL = {"strict": {"NCCL_ALGO": "Ring", "NCCL_PROTO": "Simple"}, "fast": {}}  # conf/determinism/*.yaml


def rank_main(rank: int, world: int, sizes_mb: list[float], repeats: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.cuda.set_device(rank)
    dist.init_process_group("nccl", rank=rank, world_size=world, device_id=torch.device("cuda", rank))
    for mb in sizes_mb:
        x = torch.ones(int(mb * 1e6 / 4), device="cuda")
        for _ in range(5):
            dist.all_reduce(x)
        times = []
        for _ in range(repeats):
            dist.barrier()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            dist.all_reduce(x)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        ms = statistics.median(times) * 1e3
        if rank == 0:
            busbw = mb * 1e6 * 2 * (world - 1) / world / (ms / 1e3) / 1e9
            print(json.dumps({"gpus": world, "mb": mb, "ms": round(ms, 3), "busbw_GBps": round(busbw, 1)}))
    dist.destroy_process_group()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=torch.cuda.device_count())
    ap.add_argument("--profile", choices=list(NCCL), default="strict")
    ap.add_argument("--mb", type=float, nargs="+", default=[12.9, 0.3])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--port", type=int, default=29555)
    args = ap.parse_args()
    os.environ.update(NCCL[args.profile])
    print(json.dumps({"profile": args.profile, **NCCL[args.profile]}), flush=True)
    mp.spawn(rank_main, args=(args.gpus, args.mb, args.repeats, args.port), nprocs=args.gpus)
    return 0


if __name__ == "__main__":
    sys.exit(main())
