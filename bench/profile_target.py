"""Where a training step's time goes: a workload run under torch.profiler, through the runner.

Use it as the experiment target, with the workload's own config and the run dir's outputs as the
place for the tables::

    python -m runner experiment=mnist_ddp experiment.target=bench.profile_target:train \\
        +profile.workload=mnist_ddp +profile.start=20 +profile.steps=10 launch.backend=host launch.gpus=1

Steps ``start`` to ``start + steps`` are profiled on every rank; each rank writes
``outputs/profile-rank<R>.txt``: the operators and kernels by total device time and by total host
time, and the wall time per step with and without the profiler's sync at the end.
``+profile.trace=true`` also writes each rank's timeline, ``outputs/trace-rank<R>.json`` (Chrome
trace format), for ``bench/trace_gaps.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from runner.worker import context


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class TorchProfile(pl.Callback):
    def __init__(self, out: Path, rank: int, start: int, steps: int, trace: bool = False):
        self.out, self.rank, self.start, self.steps, self.trace = out, rank, start, steps, trace
        self.prof, self.t0 = None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        if trainer.global_step == self.start and self.prof is None:
            _sync()
            acts = [torch.profiler.ProfilerActivity.CPU]
            if torch.cuda.is_available():
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self.prof = torch.profiler.profile(activities=acts, record_shapes=False)
            self.prof.start()
            self.t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        if self.prof is not None and trainer.global_step == self.start + self.steps:
            _sync()
            wall = (time.perf_counter() - self.t0) / self.steps
            self.prof.stop()
            ka = self.prof.key_averages()
            self.out.mkdir(parents=True, exist_ok=True)
            on_device = [e for e in ka if e.device_type == torch.autograd.DeviceType.CUDA]
            # device work only, not the annotations the profiler also shows on the device
            kernels = [e for e in on_device if not getattr(e, "is_user_annotation", False)]
            nccl = sum(e.self_device_time_total for e in kernels if "nccl" in e.key.lower())
            busy = sum(e.self_device_time_total for e in kernels) - nccl
            text = [
                f"rank {self.rank}: {self.steps} steps, {wall * 1e3:.2f} ms/step wall (profiled), "
                f"{busy / self.steps / 1e3:.2f} ms/step in compute kernels and copies, "
                f"{nccl / self.steps / 1e3:.2f} ms/step in NCCL kernels",
                "== by device time ==",
                ka.table(sort_by="device_time_total", row_limit=30, max_name_column_width=70),
                "== by host time ==",
                ka.table(sort_by="cpu_time_total", row_limit=30, max_name_column_width=70),
            ]
            (self.out / f"profile-rank{self.rank}.txt").write_text("\n".join(text))
            if self.trace:  # the timeline, for bench/trace_gaps.py
                self.prof.export_chrome_trace(str(self.out / f"trace-rank{self.rank}.json"))
            self.prof = None


def train(cfg, run_dir: Path) -> dict:
    from importlib import import_module

    ctx = context.RunContext.current()
    p = cfg.profile
    original = context.RunContext.trainer_kwargs

    def with_profiler(self, *a, **kw):
        out = original(self, *a, **kw)
        trace = bool(p.get("trace"))
        out["callbacks"].append(TorchProfile(ctx.output_dir, ctx.rank, int(p.start), int(p.steps), trace))
        return out

    context.RunContext.trainer_kwargs = with_profiler
    module = {"mnist_ddp": "experiments.mnist", "resnet_small": "experiments.resnet"}[str(p.workload)]
    return import_module(module).train(cfg, run_dir)
