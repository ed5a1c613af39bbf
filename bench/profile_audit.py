"""Where the twin step's time goes, on a GPU: one watched and traced run of mnist_ddp's first step
(what the audit runs twice), with each way of digesting the outputs: none (the watch, the trace
and autograd's anomaly mode alone), the device fingerprints the audit uses, and sha256 on the host
(what it used before). Synchronised wall seconds of each, the median of ``--reps``, after a warm-up;
and the fingerprint's own speed on one large tensor. Prints one JSON document.

    python -m bench.profile_audit [--batch 32768] [--channels 64] [--hidden 512] [--precision bf16]

Random images stand in for the data set (the step's cost does not depend on the pixels).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from runner.worker.audit_step import OpWatch, TrainingState, _no_log, _step
from runner.worker.op_trace import HostHashes, tracing
from runner.worker.output_digest import DeviceFingerprints, fingerprint, position_keys

ROOT = Path(__file__).resolve().parent.parent


class NoDigests:
    def of(self, out: Any) -> None:
        return None

    def settle(self, digests: list[Any]) -> list[Any]:
        return digests


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def seconds(fn, reps: int) -> dict:
    got = []
    for _ in range(reps):
        sync()
        started = time.perf_counter()
        fn()
        sync()
        got.append(time.perf_counter() - started)
    return {"median": statistics.median(got), "min": min(got), "max": max(got)}


class Probe(pl.Callback):
    def __init__(self, reps: int, host: bool):
        self.reps, self.host = reps, host
        self.result: dict = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if self.result:
            return
        state = TrainingState.take(trainer, module)
        module.log, module.log_dict = _no_log, _no_log

        def twin(digests) -> None:
            with tracing(module, ROOT, digests) as trace, OpWatch(ROOT):
                _step(trainer, module, batch, batch_idx)
            trace.settle()
            state.restore(rewind_own=False)

        def plain() -> None:
            _step(trainer, module, batch, batch_idx)
            state.restore(rewind_own=False)

        ways = {"plain step": plain, "traced, no digest": lambda: twin(NoDigests())}
        ways["device fingerprints"] = lambda: twin(DeviceFingerprints())
        if self.host:
            ways["host sha256"] = lambda: twin(HostHashes())
        for name, fn in ways.items():
            fn()  # warm-up
            self.result[name] = seconds(fn, self.reps)
        self.result["state take + restore"] = seconds(
            lambda: TrainingState.take(trainer, module).restore(rewind_own=True), self.reps
        )
        del module.log, module.log_dict
        state.restore(rewind_own=True)
        trainer.should_stop = True


def fingerprint_speed(mbytes: int, reps: int) -> dict:
    x = torch.randn(mbytes * (1 << 20) // 2, dtype=torch.bfloat16).to(
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    keys = position_keys(1 << 22, x.device)
    s = seconds(lambda: fingerprint(x, keys), reps)
    return {"mbytes": mbytes, **s, "gbytes_per_s": mbytes / 1024 / s["median"]}


def main(argv: list[str] | None = None) -> int:
    from experiments.mnist import EpochBatches, MnistCNN, _Identity

    p = argparse.ArgumentParser(prog="python -m bench.profile_audit", description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32768)
    p.add_argument("--channels", type=int, default=64)
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--precision", choices=["bf16", "tf32"], default="bf16")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--fingerprint-mbytes", type=int, default=822, help="one conv output at batch 32768, bf16")
    p.add_argument("--no-host", action="store_true", help="skip the host sha256 (slow at a large batch)")
    args = p.parse_args(argv)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.precision == "tf32"
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (60000, 28, 28), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (60000,), generator=g)
    model = MnistCNN(images, labels, channels=args.channels, hidden=args.hidden, batch_size=args.batch)
    probe = Probe(args.reps, not args.no_host)
    loader = torch.utils.data.DataLoader(
        _Identity(), sampler=EpochBatches(60000, args.batch, 1), batch_size=None
    )
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    trainer.fit(model, train_dataloaders=loader)
    out = {
        "args": vars(args),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "seconds": probe.result,
        "fingerprint_speed": fingerprint_speed(args.fingerprint_mbytes, args.reps),
    }
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
