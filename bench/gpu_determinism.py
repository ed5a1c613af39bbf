"""GPU evidence for issue 5: repeat mnist_ddp on 1 and 2 GPUs under the strict and fast profiles.

Runs ``python -m runner launch.backend=host launch.gpus=N determinism=P`` twice per (N, P) at the
same global batch, and writes one JSON: per run the output and fingerprint hashes and the
steady-state samples/s; per (N, P) whether the two repeats were bit-identical; the 2-GPU/1-GPU
speed-up per profile. Meant for the lent GPU machines, which have no Docker engine (hence the
host backend: the same worker, environment and manifest, marked not containerised).

    python bench/gpu_determinism.py --out bench/results/gpu.json --data-root .data/fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from runner.core import layout


def run_once(gpus: int, profile: str, args, run_dir: Path) -> dict:
    overrides = [
        "launch.backend=host", f"launch.gpus={gpus}", f"determinism={profile}", f"seed={args.seed}",
        f"dataset.root={args.data_root}", f"trainer.max_steps={args.steps}", "trainer.max_epochs=-1",
        f"model.batch_size={args.global_batch // gpus}", f"model.channels={args.channels}",
        f"model.hidden={args.hidden}", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "runner", *overrides], capture_output=True, text=True)
    out = {"gpus": gpus, "profile": profile, "overrides": overrides, "exit_code": proc.returncode,
           "wall_seconds": time.time() - started}  # fmt: skip
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr.strip().splitlines()[-15:]
        return out
    m = json.loads((run_dir / layout.MANIFEST).read_text())
    out.update(
        outputs={k: v["sha256"] for k, v in m["outputs"].items()},
        fingerprints_sha256=m["fingerprints"]["sha256"] if m.get("fingerprints") else None,
        samples_per_s=m["metrics"].get("samples_per_s"),
        metrics=m["metrics"],
        flags=m["determinism"]["flags"],
        gpus_seen=(m.get("process") or {}).get("gpus"),
        versions={k: (m.get("process") or {}).get(k) for k in ("torch", "cuda_runtime", "cudnn", "nccl", "driver")},
    )
    return out


def _identical(rs: list[dict]) -> bool | None:
    """Did the repeats give the same outputs and fingerprints? None: fewer than two to compare."""
    if len(rs) < 2:
        return None
    return all(r["outputs"] == rs[0]["outputs"] and r["fingerprints_sha256"] == rs[0]["fingerprints_sha256"] for r in rs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--profiles", nargs="+", default=["strict", "fast"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--global-batch", type=int, default=8192)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    runs = []
    for gpus in args.gpus:
        for profile in args.profiles:
            for rep in range(args.repeats):
                r = run_once(gpus, profile, args, tmp / f"g{gpus}-{profile}-{rep}")
                r["repeat"] = rep
                runs.append(r)
                print(json.dumps({k: r.get(k) for k in ("gpus", "profile", "repeat", "exit_code", "samples_per_s",
                                                          "outputs", "wall_seconds")}), flush=True)  # fmt: skip
    groups = {}
    for gpus in args.gpus:
        for profile in args.profiles:
            rs = [r for r in runs if r["gpus"] == gpus and r["profile"] == profile and r["exit_code"] == 0]
            key = f"{gpus}gpu_{profile}"
            groups[key] = {
                "runs_ok": len(rs),
                "bit_identical": _identical(rs),
                "samples_per_s_median": statistics.median(r["samples_per_s"] for r in rs) if rs else None,
            }
    speedup = {}
    for profile in args.profiles:
        one, two = groups.get(f"1gpu_{profile}"), groups.get(f"2gpu_{profile}")
        if one and two and one["samples_per_s_median"] and two["samples_per_s_median"]:
            speedup[profile] = two["samples_per_s_median"] / one["samples_per_s_median"]
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,uuid,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip().splitlines()  # fmt: skip
    result = {
        "command": " ".join([sys.executable, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"host": platform.node(), "gpus": smi},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "groups": groups,
        "speedup_2gpu_over_1gpu": speedup,
        "goal_speedup": 1.7,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True))
    print(json.dumps({"groups": groups, "speedup": speedup}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
