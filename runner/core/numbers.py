"""Numbers as a person reads them: rounded to what one compares, rates with thousands separators. Pure.

What is printed for people (``runner diff`` tables, a replay's verdict) goes through here; what is
written for machines (``--json``, ``manifest.json``, ``verdict.json``) keeps every digit. When two
different values print the same, :func:`hidden_difference` says how far down they part, so the
rounding never makes two different numbers look equal without a word.
"""

from __future__ import annotations

import math
from typing import Any

SIGNIFICANT = 5  # figures shown: enough to compare losses and throughputs, few enough to read
RATE_SUFFIXES = ("_per_s", "_per_sec", "_per_second", "_per_min", "_per_hour")


def is_number(v: Any) -> bool:
    """An int or float that is not a bool (True is not 1 to a reader)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_rate(key: str | None) -> bool:
    """A key whose last part names a rate (``samples_per_s``, ``metrics.tokens_per_second``)."""
    last = (key or "").rsplit(".", 1)[-1].lower()
    return last.endswith(RATE_SUFFIXES) or last.startswith("throughput")


def human(v: Any, key: str | None = None, digits: int = SIGNIFICANT) -> str:
    """``v`` rounded to ``digits`` significant figures, with thousands separators when ``key`` is a
    rate. Fixed-point between 1e-4 and 1e15 (whole numbers are never cut: 123456.7 → 123457),
    scientific outside; trailing zeros dropped. Anything that is not a number is ``str(v)``."""
    if not is_number(v):
        return str(v)
    sep = "," if is_rate(key) else ""
    if isinstance(v, int):
        return f"{v:{sep}d}"
    if not math.isfinite(v):
        return repr(v)
    if v == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(v)))
    if not -4 <= magnitude < 15:
        return f"{v:.{digits}g}"
    text = f"{v:{sep}.{max(0, digits - 1 - magnitude)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def first_differing_figure(a: float, b: float) -> int | None:
    """The first significant figure at which ``a`` and ``b`` differ (None when they are equal)."""
    if a == b:
        return None
    for figures in range(1, 18):
        if f"{a:.{figures - 1}e}" != f"{b:.{figures - 1}e}":
            return figures
    return 17  # they differ only in the last bit a float holds


def hidden_difference(a: Any, b: Any, key: str | None = None, digits: int = SIGNIFICANT) -> str | None:
    """When two different numbers print alike, a note saying so ("differs after the 5th significant
    figure (at the 9th)"); None when they print differently, are equal, or are not both numbers."""
    if not (is_number(a) and is_number(b)) or a == b or human(a, key, digits) != human(b, key, digits):
        return None
    if not (math.isfinite(a) and math.isfinite(b)):
        return None
    at = first_differing_figure(float(a), float(b))
    where = f", at the {_ordinal(at)}" if at and at > digits else ""
    return f"differs after the {_ordinal(digits)} significant figure{where}"


def pair(a: Any, b: Any, key: str | None = None) -> str:
    """``a → b`` for one line of a report, with the note when the two print alike but differ."""
    note = hidden_difference(a, b, key)
    return f"{human(a, key)} → {human(b, key)}" + (f" ({note})" if note else "")
