"""Where a profiled rank's device time goes, from the timelines ``bench/profile_target.py`` writes.

For each ``trace-rank<R>.json`` (``+profile.trace=true``) it prints, per training step over the
profiled window: the window's wall time; time some compute kernel or copy ran; time an NCCL kernel
ran, and how much of that no compute overlapped (NCCL kernels start when their stream reaches them
and then wait for every rank, so their time includes waiting for the slowest rank); and time the
device did nothing (the host had not yet issued the work, or waited for it).

    python bench/trace_gaps.py RUN_DIR/outputs --steps 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEVICE_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}


def union(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def length(spans: list[tuple[float, float]]) -> float:
    return sum(b - a for a, b in spans)


def minus(spans: list[tuple[float, float]], cover: list[tuple[float, float]]) -> float:
    """Length of ``spans`` (disjoint, sorted) not covered by ``cover`` (disjoint, sorted)."""
    total, j = 0.0, 0
    for a, b in spans:
        cur = a
        while j < len(cover) and cover[j][1] <= cur:
            j += 1
        k = j
        while k < len(cover) and cover[k][0] < b:
            if cover[k][0] > cur:
                total += cover[k][0] - cur
            cur = max(cur, cover[k][1])
            k += 1
        if cur < b:
            total += b - cur
    return total


def analyse(path: Path, steps: int) -> dict:
    events = json.loads(path.read_text())["traceEvents"]
    device = [e for e in events if e.get("cat") in DEVICE_CATS and "dur" in e]
    spans = [(e["ts"], e["ts"] + e["dur"], "nccl" in e.get("name", "").lower()) for e in device]
    nccl = union([(a, b) for a, b, is_nccl in spans if is_nccl])
    compute = union([(a, b) for a, b, is_nccl in spans if not is_nccl])
    busy = union(nccl + compute)
    timed = [e for e in events if "dur" in e and "ts" in e]  # the profiled window, host and device
    wall = max(e["ts"] + e["dur"] for e in timed) - min(e["ts"] for e in timed)
    per = 1e3 * steps  # µs over the window → ms per step
    return {
        "rank": path.stem.removeprefix("trace-rank"),
        "wall_ms": round(wall / per, 2),
        "compute_ms": round(length(compute) / per, 2),
        "nccl_ms": round(length(nccl) / per, 2),
        "nccl_alone_ms": round(minus(nccl, compute) / per, 2),
        "idle_ms": round((wall - length(busy)) / per, 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outputs", type=Path, help="a run's outputs/ holding trace-rank*.json")
    ap.add_argument("--steps", type=int, required=True, help="steps in the profiled window")
    args = ap.parse_args()
    for path in sorted(args.outputs.glob("trace-rank*.json")):
        print(json.dumps(analyse(path, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
