"""Figures 1 and 4: the same training run in the runner's container and directly on the host.

Both sides run ``python -m runner`` with the same overrides and the same environment
variables; only ``launch.backend`` differs. Repetitions are interleaved, and the order within
each pair alternates (docker first, then host first, …) so slow drift in the machine's load
cancels out of the paired differences. One set of runs gives two figures:

1. launch overhead: wall time of the docker run minus the host run (seconds, per pair);
4. training throughput: container samples/s as a fraction of host samples/s, both from the
   experiment's steady-state ``samples_per_s`` metric (the fit loop after its warm-up steps);
   the worker's whole ``train_seconds`` ratio is recorded beside it.
"""

from __future__ import annotations

from pathlib import Path

from bench import runs
from bench.results import Figure, Goal, load_average, median


def measure(overrides: list[str], reps: int, work: Path, log) -> list[Figure]:
    load = load_average()
    pairs: list[dict[str, runs.TimedRun]] = []
    for i in range(reps):
        order = ("docker", "host") if i % 2 == 0 else ("host", "docker")
        pair = {}
        for backend in order:
            pair[backend] = runs.run([*overrides, f"launch.backend={backend}"], work / f"cvh-{i}-{backend}")
            log(
                f"  rep {i + 1}/{reps} {backend}: wall {pair[backend].wall_seconds:.2f} s, "
                f"train {pair[backend].train_seconds:.2f} s"
            )
        pairs.append(pair)
    d = [p["docker"] for p in pairs]
    h = [p["host"] for p in pairs]
    common = {
        "overrides": overrides,
        "steps": d[0].steps,
        "samples_per_step": d[0].samples_per_step,
        "order": "alternating: docker,host then host,docker",
    }
    overhead = Figure(
        id="launch_overhead",
        title="Launch overhead, cached image (docker − host wall time)",
        unit="s",
        samples=[p["docker"].wall_seconds - p["host"].wall_seconds for p in pairs],
        goal=Goal("<=", 1.5),
        details={
            **common,
            "docker_wall_seconds": [r.wall_seconds for r in d],
            "host_wall_seconds": [r.wall_seconds for r in h],
            "docker_wall_median": median([r.wall_seconds for r in d]),
            "host_wall_median": median([r.wall_seconds for r in h]),
            "docker_image_seconds": [r.image_seconds for r in d],
        },
        load_average=load,
    )
    throughput = Figure(
        id="train_throughput_ratio",
        title="Training throughput, container ÷ host (same steps)",
        unit="×",
        samples=[p["docker"].samples_per_second / p["host"].samples_per_second for p in pairs],
        goal=Goal(">=", 0.97),
        details={
            **common,
            "measured_by": d[0].speed_source,
            "docker_samples_per_second": [r.samples_per_second for r in d],
            "host_samples_per_second": [r.samples_per_second for r in h],
            "docker_train_seconds": [r.train_seconds for r in d],
            "host_train_seconds": [r.train_seconds for r in h],
            "train_seconds_ratio_host_over_docker": median(
                [p["host"].train_seconds / p["docker"].train_seconds for p in pairs]
            ),
            "train_seconds_covers": "the worker's whole train(): data load, Trainer and DDP setup, fit, "
            "test evaluation, weights save",
        },
        load_average=load,
    )
    return [overhead, throughput]
