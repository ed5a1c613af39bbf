"""Training-step speed of the benchmark workloads' networks by memory format, outside the runner.

One process, one GPU: for each workload (mnist_ddp's CNN, resnet_small), determinism mode (strict:
deterministic algorithms and cuDNN's deterministic heuristics; fast: cuDNN autotuning; tuned, with
``--modes``: cuDNN autotuning among the deterministic algorithms only), precision (fp32, tf32, bf16
autocast) and memory format (NCHW, NHWC = ``torch.channels_last``; ``--layouts``) it times forward +
backward + SGD steps on random data at the benchmark's batch and prints samples/s as JSON lines.
Strict and tuned settings are run twice more from the same start: each line says whether the weights
came out bit-identical within the process and gives their hash (``weights``), to compare between
processes. Run one mode per process when comparing choices: cuDNN's plan cache keeps the first
choice for a shape. ``--batch-scale 0.5`` times one rank's share of the batch on two GPUs.
``--profile`` adds the top CUDA kernels of a few steps for each setting named; ``--label`` tags the
lines (e.g. with the environment the process ran under).

    python bench/conv_layout.py --out results.jsonl [--profile mnist_ddp/strict/fp32/nhwc ...]

It answers which memory format or algorithm choice to train with, quickly; the figures to quote come
from ``bench/gpu_determinism.py``, which runs the whole runner.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before CUDA starts: deterministic cuBLAS
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from experiments import mnist, resnet  # noqa: E402

# workload: (network class, global batch, channels, hidden), as bench/gpu_determinism.py runs them
WORKLOADS = {
    "mnist_ddp": (mnist.MnistCNN, 32768, 64, 512),
    "resnet_small": (resnet.SmallResNet, 8192, 32, 128),
}
PRECISIONS = {"fp32": ("highest", False), "tf32": ("high", True), "bf16": ("high", True)}


def configure(mode: str, precision: str) -> None:
    """The switches the runner's determinism profile and precision group set, in this process."""
    strict = mode in ("strict", "tuned")  # tuned: autotuning among the deterministic algorithms
    torch.use_deterministic_algorithms(strict)
    torch.backends.cudnn.deterministic = strict
    torch.backends.cudnn.benchmark = mode != "strict"
    matmul, conv_tf32 = PRECISIONS[precision]
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = conv_tf32


def network(workload: str, nhwc: bool) -> torch.nn.Module:
    cls, _, channels, hidden = WORKLOADS[workload]
    torch.manual_seed(0)
    net = cls.build_net(None, channels, hidden, 0.0).cuda()  # type: ignore[arg-type]
    return net.to(memory_format=torch.channels_last) if nhwc else net


def steps(net, x, y, precision: str, n: int) -> None:
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for _ in range(n):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def digest(net) -> str:
    h = hashlib.sha256()
    for p in net.parameters():
        h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def measure(workload: str, mode: str, precision: str, layout: str, args) -> dict:
    configure(mode, precision)
    batch = int(WORKLOADS[workload][1] * args.batch_scale)
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(batch, 1, 28, 28, device="cuda", generator=g)
    y = torch.randint(0, 10, (batch,), device="cuda", generator=g)
    nhwc = layout == "nhwc"
    if nhwc:
        x = x.contiguous(memory_format=torch.channels_last)
    net = network(workload, nhwc)
    start = copy.deepcopy(net.state_dict())
    steps(net, x, y, precision, args.warmup)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    steps(net, x, y, precision, args.steps)
    torch.cuda.synchronize()
    rate = args.steps * batch / (time.perf_counter() - t0)
    out = {"workload": workload, "mode": mode, "precision": precision, "layout": layout, "batch": batch}
    out["samples_per_s"] = round(rate)
    if mode != "fast":  # same start, same data, same steps: the same bits?
        hashes = []
        for _ in range(2):
            net.load_state_dict(start)
            steps(net, x, y, precision, args.warmup)
            hashes.append(digest(net))
        out["repeat_identical"] = hashes[0] == hashes[1]
        out["weights"] = hashes[0]
    if f"{workload}/{mode}/{precision}/{layout}" in args.profile:
        out["kernels"] = top_kernels(net, x, y, precision)
    return out


def top_kernels(net, x, y, precision: str, n: int = 10) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        steps(net, x, y, precision, 5)
        torch.cuda.synchronize()
    rows = sorted(prof.key_averages(), key=lambda e: e.device_time_total, reverse=True)[:n]
    return [f"{e.device_time_total / 5e3:8.2f} ms/step  {e.key[:110]}" for e in rows]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    ap.add_argument("--batch-scale", type=float, default=1.0, help="0.5: one rank's batch on 2 GPUs")
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--profile", nargs="*", default=[], help="workload/mode/precision/layout to profile")
    ap.add_argument("--layouts", nargs="+", default=["nchw", "nhwc"], choices=["nchw", "nhwc"])
    ap.add_argument("--label", default="", help="a name for this process's settings, written into each line")
    ap.add_argument("--modes", nargs="+", default=["strict", "fast"], choices=["strict", "tuned", "fast"])
    args = ap.parse_args()
    versions = {"torch": torch.__version__, "cudnn": torch.backends.cudnn.version()}
    print(json.dumps({"gpu": torch.cuda.get_device_name(), **versions}), flush=True)
    with args.out.open("a") as f:
        for w, q, layout, mode in itertools.product(
            args.workloads, args.precisions, args.layouts, args.modes
        ):
            r = measure(w, mode, q, layout, args) | ({"label": args.label} if args.label else {})
            f.write(json.dumps(r) + "\n")
            print(json.dumps({k: v for k, v in r.items() if k != "kernels"}), flush=True)
            for line in r.get("kernels", []):
                print("   ", line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
