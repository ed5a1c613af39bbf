"""``summary.png``: a sweep at a glance. Left, every job's training loss per step; right, one
panel per final metric with each seed's value and the group's mean and 95% interval.

Drawing only: the numbers come from :func:`runner.flows.summary.summarize`. Uses matplotlib's Agg
backend, so it runs without a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from runner.host import atomic
from runner.host.sweep_records import SweepSummary

MAX_METRIC_PANELS = 4


def metrics_to_plot(summary: SweepSummary) -> list[str]:
    """Metrics worth a panel: those that vary across jobs (a step count that never changes is
    not a result); all of them when none varies."""
    values: dict[str, set[float]] = {}
    for g in summary["groups"]:
        for name, s in g["metrics"].items():
            values.setdefault(name, set()).update(s["values"])
    varying = [n for n, v in values.items() if len(v) > 1]
    return sorted(varying or values)[:MAX_METRIC_PANELS]


def group_labels(summary: SweepSummary) -> list[str]:
    """Short labels: only the overrides that tell the groups apart (a plain seed sweep: "seeds")."""
    groups = [set(g["overrides"]) for g in summary["groups"]]
    common = set.intersection(*groups) if groups else set()
    return [" ".join(o for o in g["overrides"] if o not in common) or "seeds" for g in summary["groups"]]


def plot(summary: SweepSummary, curves: Mapping[str, Sequence[tuple[int, float]]], path: Path) -> Path:
    """Draw the sweep into ``path`` (PNG), written whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = metrics_to_plot(summary)
    cols = 2 if len(names) > 1 else 1
    rows = max(1, (len(names) + cols - 1) // cols)
    fig = plt.figure(figsize=(7 + 3.4 * cols, 1.2 + 3.2 * rows))
    grid = fig.add_gridspec(rows, 2 + cols, width_ratios=[1.6, 1.6] + [1] * cols)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colour_of = {j["name"]: colours[i % len(colours)] for i, j in enumerate(summary["jobs"])}
    _draw_curves(fig.add_subplot(grid[:, :2]), summary["jobs"], curves, colour_of)
    labels = group_labels(summary)
    for k, metric in enumerate(names):
        _draw_metric(
            fig.add_subplot(grid[k // cols, 2 + k % cols]), metric, summary["groups"], labels, colour_of
        )
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic.replacing(path) as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path


def _draw_curves(
    ax,
    jobs: Sequence[Mapping[str, Any]],
    curves: Mapping[str, Sequence[tuple[int, float]]],
    colour_of: Mapping[str, str],
) -> None:
    """Every job's loss per step; a job that did not complete is dotted."""
    for job in jobs:
        pts = curves.get(job["name"]) or []
        if not pts:
            continue
        steps, losses = zip(*pts, strict=True)
        done = job["status"] == "completed"
        label = f"{job['name']}: seed={job['seed']}" + ("" if done else f" ({job['status']})")
        ax.plot(
            steps,
            losses,
            "-" if done else ":",
            color=colour_of[job["name"]],
            alpha=0.85,
            linewidth=1.2,
            label=label,
        )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("learning curves (loss per step)")
    if ax.lines:
        ax.legend(fontsize="x-small", ncol=1 + len(ax.lines) // 12)
    else:
        ax.text(0.5, 0.5, "no fingerprints recorded", ha="center", va="center", transform=ax.transAxes)


def _draw_metric(
    ax, metric: str, groups: Sequence[Mapping[str, Any]], labels: Sequence[str], colour_of: Mapping[str, str]
) -> None:
    """One metric: each seed's value per group, and the group's mean with its 95% interval."""
    for gi, g in enumerate(groups):
        s = g["metrics"].get(metric)
        if not s:
            continue
        n = len(s["values"])
        xs = [gi - 0.1 + (i - (n - 1) / 2) * (0.3 / max(n, 1)) for i in range(n)]
        ax.scatter(xs, s["values"], c=[colour_of.get(name, "grey") for name in s["jobs"]], s=20, zorder=3)
        if s.get("ci95"):
            lo, hi = s["ci95"]
            ax.errorbar(
                [gi + 0.2],
                [s["mean"]],
                yerr=[[s["mean"] - lo], [hi - s["mean"]]],
                fmt="D",
                color="black",
                capsize=4,
                markersize=4,
                zorder=4,
            )
        else:
            ax.plot([gi + 0.2], [s["mean"]], "D", color="black", markersize=4)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(
        labels,
        rotation=15 if len(labels) > 1 else 0,
        ha="right" if len(labels) > 1 else "center",
        fontsize="x-small",
    )
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_title(f"{metric}: seeds, mean ± 95% CI", fontsize="small")
