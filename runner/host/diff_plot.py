"""``runner diff A B --plot FILE.png``: where two runs part, as a picture.

Both runs' loss per step (A solid, B dashed), the first diverging step :func:`runner.core.compare.
first_divergence` finds as a red vertical line, and a mark under every step at which the two runs'
parameter fingerprints differ. Drawing only (matplotlib's Agg backend, no display); the numbers
come from the comparison. The PNG is exactly the size asked for, and records in its text chunks
the step it marks and where its x axis lies in pixels (``runner:first_divergence_step``,
``runner:x_axis``), so that a reader (a test, a script) can find the mark without guessing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.core.compare import Divergence
from runner.host import atomic

DPI = 100
FORMATS = ("png", "svg", "pdf")  # by the file's suffix; the PNG alone carries the text chunks below
DIVERGENCE_COLOUR = "#d62728"
PARAMS_COLOUR = "#9467bd"


@dataclass(frozen=True)
class DiffPicture:
    """What the picture shows: each run's (step, loss) pairs, the first divergence, the steps
    whose parameter hashes differ, and the two runs' labels."""

    losses_a: Sequence[tuple[int, float]]
    losses_b: Sequence[tuple[int, float]]
    divergence: Divergence | None
    params_differ: Sequence[int]
    label_a: str
    label_b: str


def plot(picture: DiffPicture, path: Path, size: tuple[int, int]) -> Path:
    """Draw ``picture`` into ``path`` (PNG, SVG or PDF by its suffix; ``size`` = width × height in
    pixels at :data:`DPI`), whole or not at all."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI)
    try:
        _draw(ax, picture)
        fig.tight_layout()
        fig.canvas.draw()  # lay out, so the axes' pixel extent below is the one saved
        x0, x1 = ax.get_xlim()
        box = ax.get_window_extent()
        metadata = {"runner:x_axis": " ".join(repr(float(v)) for v in (x0, x1, box.x0, box.x1))}
        if picture.divergence is not None:
            metadata["runner:first_divergence_step"] = str(picture.divergence.step)
        kind = Path(path).suffix.lower().lstrip(".")
        with atomic.replacing(Path(path)) as f:
            fig.savefig(f, format=kind, dpi=DPI, metadata=metadata if kind == "png" else None)
    finally:
        plt.close(fig)
    return Path(path)


def _draw(ax, p: DiffPicture) -> None:
    for pts, label, style in ((p.losses_a, p.label_a, "-"), (p.losses_b, p.label_b, "--")):
        if pts:
            ax.plot([s for s, _ in pts], [v for _, v in pts], style, lw=1.4, label=f"loss {label}")
    if p.params_differ:
        ax.plot(
            list(p.params_differ),
            [0.02] * len(p.params_differ),
            "^",
            color=PARAMS_COLOUR,
            transform=ax.get_xaxis_transform(),  # x in steps, y in axes fractions: along the bottom
            clip_on=False,
            label=f"parameter fingerprints differ ({len(p.params_differ)} step(s))",
        )
    if p.divergence is not None:
        d = p.divergence
        ax.axvline(d.step, color=DIVERGENCE_COLOUR, lw=2, label=f"first diverging step {d.step} ({d.field})")
    else:
        ax.set_title("no diverging step: the fingerprints agree at every step both recorded", fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
