"""Figure 6: what the determinism audit costs. Strict ÷ fast wall time of a whole run (the
command, interpreter start to exit), and the audit's own time (``timings.audit_seconds``: its
data check and twin step, in the training processes, before training).

In ``make bench``: the default CPU run (``python -m runner``: mnist_ddp, 30 steps, 2 processes),
strict and fast alternating, median of the ratios. Alone, printing one JSON document:

    python -m bench.audit_cost [--reps 5] [OVERRIDE …]
    # the GPU figure (one H100, bf16, 100 steps, no Docker on the GPU machine):
    python -m bench.audit_cost --reps 5 launch.backend=host experiment=mnist_ddp 'launch.gpus=[0]' \
        precision=bf16 trainer.max_steps=100 trainer.max_epochs=-1 dataset.root=DATA_ROOT
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from bench import runs
from bench.results import Figure, Goal, load_average, median

GOALS = {"wall_ratio": 1.10, "audit_seconds_cpu": 0.5, "audit_seconds_gpu": 1.0}


def pairs(overrides: list[str], reps: int, work: Path, log) -> list[dict[str, dict]]:
    """``reps`` runs of each profile, alternating which goes first: per run its wall seconds, the
    audit's own seconds and the training seconds."""
    out = []
    for i in range(reps):
        pair = {}
        for profile in ("strict", "fast") if i % 2 == 0 else ("fast", "strict"):
            run_dir = work / f"audit-{i}-{profile}"
            timed = runs.run([*overrides, f"determinism={profile}"], run_dir)
            wall = timed.wall_seconds
            m = json.loads((run_dir / "manifest.json").read_text())
            pair[profile] = {
                "wall_seconds": wall,
                "audit_seconds": m["timings"].get("audit_seconds"),
                "train_seconds": timed.train_seconds,
                "samples_per_s": timed.steady_samples_per_second,
                "weights_sha256": (m["outputs"].get("model.pt") or {}).get("sha256"),
            }
            log(f"  rep {i + 1}/{reps} {profile}: {wall:.2f} s, audit {pair[profile]['audit_seconds']}")
        out.append(pair)
    return out


def summary(got: list[dict[str, dict]], overrides: list[str], load: list[float]) -> dict:
    ratios = [p["strict"]["wall_seconds"] / p["fast"]["wall_seconds"] for p in got]
    audit = [p["strict"]["audit_seconds"] for p in got if p["strict"]["audit_seconds"] is not None]
    speeds = {k: [p[k].get("samples_per_s") for p in got] for k in ("strict", "fast")}
    steady = None  # the experiment's own steady-state speed, when it reports one (after the audit)
    if all(speeds["strict"]) and all(speeds["fast"]):
        r = [s / f for s, f in zip(speeds["strict"], speeds["fast"], strict=True)]
        steady = {"median": median(r), "min": min(r), "max": max(r), "samples_per_s": speeds}
    return {
        "overrides": overrides,
        "wall_ratio_strict_over_fast": {"median": median(ratios), "min": min(ratios), "max": max(ratios)},
        "ratios": ratios,
        "audit_seconds": {"median": median(audit), "min": min(audit), "max": max(audit)} if audit else None,
        "strict_wall_seconds": [p["strict"]["wall_seconds"] for p in got],
        "fast_wall_seconds": [p["fast"]["wall_seconds"] for p in got],
        "steady_speed_ratio_strict_over_fast": steady,
        "repeats_identical": {k: len({p[k]["weights_sha256"] for p in got}) == 1 for k in ("strict", "fast")},
        "load_average": load,
        "goals": GOALS,
    }


def measure(overrides: list[str], reps: int, work: Path, log) -> list[Figure]:
    """The figures of ``make bench``, for the default run (``overrides`` are not used: the goal is
    stated for ``python -m runner`` as it comes)."""
    load = load_average()
    s = summary(pairs([], reps, work, log), [], load)
    audit = s["audit_seconds"] or {"median": float("nan")}
    return [
        Figure(
            id="audit_wall_ratio",
            title="Strict ÷ fast wall time of the default CPU run (the audit included)",
            unit="×",
            samples=s["ratios"],
            goal=Goal("<=", GOALS["wall_ratio"]),
            details={k: v for k, v in s.items() if k != "ratios"},
            load_average=load,
        ),
        Figure(
            id="audit_seconds",
            title="The determinism audit's own time at the default config (CPU)",
            unit="s",
            samples=[audit["median"]],
            goal=Goal("<=", GOALS["audit_seconds_cpu"]),
            details={"audit_seconds": s["audit_seconds"]},
            load_average=load,
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.audit_cost", description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("overrides", nargs="*", metavar="OVERRIDE")
    args = p.parse_args(argv)
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="runner-audit-cost-") as work:
        got = pairs(args.overrides, args.reps, Path(work), lambda line: print(line, file=sys.stderr))
    print(json.dumps(summary(got, args.overrides, load), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
