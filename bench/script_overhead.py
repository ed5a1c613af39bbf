"""What the runner costs a user: the whole ``python -m runner`` of a plain script (cached image)
against the same script started directly with ``python script.py`` on the host.

Both sides run ``experiments/plain_script/train.py`` with the same arguments, the same data and
the same number of processes; the runner side pays everything a user waits for (Hydra, the
snapshot, data hashing, the image check, the container, the manifest). Repetitions are
interleaved and the order alternates within each pair. ``python -m bench.script_overhead
[--reps N]`` runs it alone and prints the figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.results import Figure, Goal, load_average, median
from bench.runs import ROOT

SCRIPT = "experiments/plain_script/train.py"
ARGS = ["--steps", "30", "--samples", "4096", "--batch-size", "32", "--hidden", "32"]
PROCESSES = 2


def _timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])}… failed: {proc.stderr.strip().splitlines()[-3:]}")
    return wall


def commands(data_dir: str, work: Path, i: int) -> dict[str, list[str]]:
    """The two sides of repetition ``i``: the runner (default docker backend) and the bare script."""
    listed = ",".join(ARGS)
    return {
        "runner": [
            sys.executable,
            "-m",
            "runner",
            "experiment=plain_script",
            f"experiment.args=[{listed}]",
            f"launch.processes={PROCESSES}",
            f"hydra.run.dir={work / f'so-{i}-runner'}",
        ],
        "direct": [
            sys.executable,
            SCRIPT,
            *ARGS,
            "--data-dir",
            data_dir,
            "--out",
            str(work / f"so-{i}-direct"),
            "--seed",
            "0",
            "--nprocs",
            str(PROCESSES),
        ],
    }


def _script_seconds(run_dir: Path) -> float:
    """How long the script itself ran in the container (the worker's ``train_seconds``)."""
    return float(json.loads((run_dir / "manifest.json").read_text())["timings"]["train_seconds"])


def measure(data_dir: str, reps: int, work: Path, log) -> list[Figure]:
    load = load_average()
    _timed(commands(data_dir, work, -1)["runner"])  # the image exists (or is built) before timing
    walls: dict[str, list[float]] = {"runner": [], "direct": []}
    around: list[float] = []  # the runner's own time: its wall time less the script's
    for i in range(reps):
        cmds = commands(data_dir, work, i)
        for side in ("runner", "direct") if i % 2 == 0 else ("direct", "runner"):
            walls[side].append(_timed(cmds[side]))
            log(f"  rep {i + 1}/{reps} {side}: wall {walls[side][-1]:.2f} s")
        around.append(walls["runner"][-1] - _script_seconds(work / f"so-{i}-runner"))
    return [
        Figure(
            id="script_overhead",
            title="Whole `python -m runner` of a plain script, cached image − `python script.py` on the host",
            unit="s",
            samples=[r - d for r, d in zip(walls["runner"], walls["direct"], strict=True)],
            goal=Goal("<=", 1.5),
            details={
                "baseline": f"python {SCRIPT} on the host, same arguments and processes",
                "runner_wall_seconds": walls["runner"],
                "direct_wall_seconds": walls["direct"],
                "runner_wall_median": median(walls["runner"]),
                "direct_wall_median": median(walls["direct"]),
                "script_args": ARGS,
                "processes": PROCESSES,
                "order": "alternating",
            },
            load_average=load,
        ),
        Figure(
            id="script_runner_own_seconds",
            title=(
                "The runner's own time around a plain script "
                "(its wall time − the script's time in the container)"
            ),
            unit="s",
            samples=around,
            details={
                "baseline": "the same run's script time, from the manifest (timings.train_seconds)",
                "why": "independent of how fast the script itself runs in the container under load",
            },
            load_average=load,
        ),
    ]


def main() -> None:
    import tempfile

    from omegaconf import OmegaConf

    from runner.flows.cli_common import compose

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    reps = p.parse_args().reps
    cfg = OmegaConf.to_container(compose(["experiment=plain_script"]), resolve=True)
    work = Path(tempfile.mkdtemp(prefix="runner-bench-script-"))
    fig, own = measure(str(cfg["dataset"]["root"]), reps, work, lambda line: print(line, file=sys.stderr))
    d = fig.details
    print(
        f"{fig.title}: median {fig.value:.2f} s over {reps} reps (runner {d['runner_wall_median']:.2f} s, "
        f"direct {d['direct_wall_median']:.2f} s); load average {fig.load_average}"
    )
    print(f"{own.title}: median {own.value:.2f} s, samples {[round(s, 2) for s in own.samples]}")


if __name__ == "__main__":
    main()
