"""Figure 5: what strict determinism costs on CPU, in training samples per second, at equal
precision (``precision=fp32`` on both sides: only the determinism profile differs).

``determinism=strict`` pins one thread per process, the AVX2 kernel set and PyTorch's
deterministic algorithms; ``determinism=fast`` leaves threads and kernels to PyTorch. Same
overrides otherwise, same backend, interleaved with alternating order. Recorded so users know
the price, not judged against a goal.
"""

from __future__ import annotations

from pathlib import Path

from bench import runs
from bench.results import Figure, load_average, median


def measure(overrides: list[str], reps: int, work: Path, log) -> list[Figure]:
    load = load_average()
    pairs: list[dict[str, runs.TimedRun]] = []
    for i in range(reps):
        order = ("strict", "fast") if i % 2 == 0 else ("fast", "strict")
        pair = {}
        for profile in order:
            pair[profile] = runs.run(
                [*overrides, f"determinism={profile}", "precision=fp32"], work / f"det-{i}-{profile}"
            )  # equal precision: only determinism differs
            log(f"  rep {i + 1}/{reps} {profile}: {pair[profile].samples_per_second:.0f} samples/s")
        pairs.append(pair)
    strict = [p["strict"].samples_per_second for p in pairs]
    fast = [p["fast"].samples_per_second for p in pairs]
    return [
        Figure(
            id="strict_vs_fast_throughput",
            title="Strict ÷ fast determinism at equal precision (fp32), CPU training samples/s",
            unit="×",
            samples=[s / f for s, f in zip(strict, fast, strict=True)],
            details={
                "overrides": overrides,
                "steps": pairs[0]["strict"].steps,
                "samples_per_step": pairs[0]["strict"].samples_per_step,
                "strict_samples_per_second": strict,
                "fast_samples_per_second": fast,
                "strict_median": median(strict),
                "fast_median": median(fast),
                "measured_by": pairs[0]["strict"].speed_source,
                "strict_train_seconds": [p["strict"].train_seconds for p in pairs],
                "fast_train_seconds": [p["fast"].train_seconds for p in pairs],
            },
            load_average=load,
        )
    ]
