"""One timed ``python -m runner …`` as a user types it, and the timings its manifest records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runner.core import layout
from runner.core.errors import EXIT_FAILED, RunnerError

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class TimedRun:
    wall_seconds: float  # the whole command, interpreter start to exit
    train_seconds: float  # the worker's own train() call, from result.json via the manifest
    total_seconds: float  # the launcher's own record: plan → manifest
    image_seconds: float | None
    steps: int
    samples_per_step: int  # global: batch size × world size
    steady_samples_per_second: float | None  # the experiment's own metric: fit loop after warm-up steps

    @property
    def samples_per_second(self) -> float:
        """Steady-state training speed when the experiment reports it, else over the whole train()."""
        if self.steady_samples_per_second:
            return self.steady_samples_per_second
        return self.steps * self.samples_per_step / self.train_seconds

    @property
    def speed_source(self) -> str:
        return "metrics.samples_per_s (steady state)" if self.steady_samples_per_second else "train_seconds"


def run(
    overrides: list[str],
    run_dir: Path,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    prefix: tuple[str, ...] = (),
) -> TimedRun:
    """Run the runner once in a fresh interpreter (``prefix``: e.g. ``setpriv …`` to run it as
    another user); raise RunnerError naming the log if it fails."""
    cmd = [*prefix, sys.executable, "-m", "runner", *overrides, f"hydra.run.dir={run_dir}"]
    started = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=ROOT,
        env=env if env is not None else dict(os.environ),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise RunnerError(f"benchmark run failed ({' '.join(overrides)}): {tail}", EXIT_FAILED)
    m = json.loads((run_dir / layout.MANIFEST).read_text())
    t, cfg = m["timings"], m["config"]
    return TimedRun(
        wall_seconds=wall,
        train_seconds=float(t["train_seconds"]),
        total_seconds=float(t["total_seconds"]),
        image_seconds=t.get("image_seconds"),
        steps=int(m["metrics"].get("global_step") or cfg["trainer"]["max_steps"]),
        samples_per_step=int(cfg["model"]["batch_size"]) * int(m["launch"]["world_size"]),
        steady_samples_per_second=m["metrics"].get("samples_per_s"),
    )
