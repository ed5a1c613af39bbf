"""Summary statistics over seeds: mean, sample standard deviation, range, and a Student-t
confidence interval for the mean. Pure; standard library only.

The t quantile is computed, not looked up: for an integer number of degrees of freedom ν the
two-sided probability ``P(|T| ≤ t)`` has a closed form as a finite trigonometric series
(Abramowitz & Stegun 26.7.3–4), which is inverted by bisection to 1e-12. Seed sweeps always
have integer ν = n − 1, so no approximation is involved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypedDict


def t_two_sided_prob(t: float, df: int) -> float:
    """``P(|T| ≤ t)`` for Student's t with ``df`` (integer ≥ 1) degrees of freedom."""
    if df < 1 or int(df) != df:
        raise ValueError(f"degrees of freedom must be a positive integer, got {df!r}")
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/π)(θ + sinθ cosθ (1 + 2/3 cos²θ + 2·4/(3·5) cos⁴θ + …))
        if df == 1:
            return 2 * theta / math.pi
        term, total = 1.0, 1.0
        for k in range(1, (df - 3) // 2 + 1):
            term *= (2 * k) / (2 * k + 1) * c2
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    # even: sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + …)
    term, total = 1.0, 1.0
    for k in range(1, (df - 2) // 2 + 1):
        term *= (2 * k - 1) / (2 * k) * c2
        total += term
    return math.sin(theta) * total


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile (0.5 < p < 1) of Student's t with ``df`` degrees of freedom."""
    if not 0.5 < p < 1:
        raise ValueError(f"p must be in (0.5, 1), got {p!r}")
    target = 2 * p - 1  # P(|T| ≤ t)
    lo, hi = 0.0, 1.0
    while t_two_sided_prob(hi, df) < target:
        hi *= 2
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = (lo + hi) / 2
        if t_two_sided_prob(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


class MetricStats(TypedDict):
    """:class:`Stats` as JSON (a sweep's ``summary.json`` lists one per metric and group)."""

    n: int
    mean: float
    std: float | None
    min: float
    max: float
    ci95: list[float] | None
    ci95_halfwidth: float | None


@dataclass(frozen=True)
class Summary:
    """One metric over n runs. ``std`` is the sample standard deviation (n − 1); with one run
    there is no spread to speak of, so ``std`` and the interval are None."""

    n: int
    mean: float
    std: float | None
    min: float
    max: float
    ci95: tuple[float, float] | None
    ci95_halfwidth: float | None

    def to_dict(self) -> MetricStats:
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "min": self.min,
            "max": self.max,
            "ci95": list(self.ci95) if self.ci95 else None,
            "ci95_halfwidth": self.ci95_halfwidth,
        }


def describe(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean, sample std, min, max and a two-sided Student-t interval for the mean."""
    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("no values to describe")
    if any(math.isnan(x) for x in xs):
        nan = float("nan")
        return Summary(len(xs), nan, None if len(xs) < 2 else nan, min(xs), max(xs), None, None)
    n = len(xs)
    mean = math.fsum(xs) / n
    if n < 2:
        return Summary(n, mean, None, xs[0], xs[0], None, None)
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, min(xs), max(xs), (mean - half, mean + half), half)
