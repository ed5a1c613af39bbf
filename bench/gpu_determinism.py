"""GPU evidence for determinism and precision: profile × precision × GPU count, two repeats each.

Runs ``python -m runner launch.backend=host experiment=W determinism=P precision=Q launch.gpus=…``
at the same global batch whatever the GPU count, and writes one JSON: per run the output and
fingerprint hashes, the steady-state samples/s and the switches read back in training; per
(workload, GPUs, profile, precision) the median samples/s and whether the repeats were
bit-identical; strict ÷ fast at equal precision; N-GPU ÷ 1-GPU speed-up. ``--table`` writes the
Markdown table between the markers in ``bench/README.md``. Meant for the lent GPU machines, which
have no Docker engine (hence the host backend: the same worker, environment and manifest).

    python bench/gpu_determinism.py --out bench/results/gpu.json --data-root /usr/share/datasets/fashion-mnist

Single-GPU runs may go side by side, one per GPU (``--parallel``): each has a GPU of its own and
the host has cores to spare. Multi-GPU runs always go one at a time. A sweep too long for one
sitting can be split (``--gpus 1 2`` then ``--gpus 4``) and its JSONs joined with ``--merge``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- gpu-table:begin -->", "<!-- gpu-table:end -->"
# (workload, global batch, model overrides): mnist_ddp at issue 11's size, and a small ResNet
WORKLOADS = {
    "mnist_ddp": (32768, ["model.channels=64", "model.hidden=512"]),
    "resnet_small": (8192, ["model.channels=32", "model.hidden=128"]),
}
GOALS = {"strict_over_fast": 0.95, "speedup": {2: 1.8, 4: 3.4}}


def run_once(job: dict, args, run_dir: Path) -> dict:
    """One ``python -m runner`` run; what its manifest says about speed, bits and switches."""
    batch, model = WORKLOADS[job["workload"]]
    gpus = job["gpu_ids"]
    overrides = [
        f"experiment={job['workload']}",
        "launch.backend=host",
        f"launch.gpus=[{','.join(map(str, gpus))}]",
        f"determinism={job['profile']}",
        f"precision={job['precision']}",
        f"seed={args.seed}",
        f"dataset.root={args.data_root}",
        f"trainer.max_steps={args.steps}",
        "trainer.max_epochs=-1",
        f"model.batch_size={batch // len(gpus)}",
        *model,
        *job.get("extra", []),
        *args.set,
        f"hydra.run.dir={run_dir}",
    ]
    started = time.time()
    proc = subprocess.run(
        [sys.executable, "-m", "runner", *overrides], capture_output=True, text=True, cwd=ROOT
    )
    out = {
        **job,
        "gpus": len(gpus),
        "overrides": overrides,
        "exit_code": proc.returncode,
        "wall_seconds": round(time.time() - started, 1),
    }
    if proc.returncode != 0:
        out["stderr_tail"] = proc.stderr.strip().splitlines()[-15:]
        return out
    m = json.loads((run_dir / "manifest.json").read_text())
    out.update(
        outputs={k: v["sha256"] for k, v in m["outputs"].items()},
        fingerprints_sha256=(m.get("fingerprints") or {}).get("sha256"),
        samples_per_s=m["metrics"].get("samples_per_s"),
        metrics=m["metrics"],
        flags={k: v for k, v in (m["determinism"]["flags"] or {}).items() if k != "env"},
        gpus_seen=[g.get("name") for g in (m.get("process") or {}).get("gpus") or []],
        versions={
            k: (m.get("process") or {}).get(k) for k in ("torch", "cuda_runtime", "cudnn", "nccl", "driver")
        },
    )
    return out


def plan(args) -> list[dict]:
    """Every run of the sweep, in the order they run: repeats of one setting apart from each other."""
    jobs = []
    for rep, gpus, workload, profile, prec in itertools.product(
        range(args.repeats), args.gpus, args.workloads, args.profiles, args.precisions
    ):
        if gpus > 1 and workload not in args.multi_gpu_workloads:
            continue
        jobs.append(
            {
                "workload": workload,
                "profile": profile,
                "precision": prec,
                "repeat": rep,
                "gpu_ids": list(range(gpus)),
            }
        )
    return jobs


def execute(jobs: list[dict], args, tmp: Path) -> list[dict]:
    """Multi-GPU runs one at a time; single-GPU runs ``--parallel`` at once, each on its own GPU."""
    done: list[dict] = []

    def one(job: dict) -> dict:
        tag = f"{job['workload']}-g{len(job['gpu_ids'])}-{job['profile']}-{job['precision']}-{job['repeat']}"
        r = run_once(job, args, tmp / tag)
        with args.out.with_suffix(".runs.jsonl").open("a") as f:  # kept when the sweep is cut short
            f.write(json.dumps(r, default=str) + "\n")
        print(
            json.dumps(
                {
                    k: r.get(k)
                    for k in (
                        "workload",
                        "gpus",
                        "profile",
                        "precision",
                        "repeat",
                        "exit_code",
                        "samples_per_s",
                        "wall_seconds",
                    )
                }
            ),
            flush=True,
        )
        return r

    singles = [j for j in jobs if len(j["gpu_ids"]) == 1]
    for i in range(0, len(singles), args.parallel):
        batch = [dict(j, gpu_ids=[k]) for k, j in enumerate(singles[i : i + args.parallel])]
        with ThreadPoolExecutor(len(batch)) as pool:
            done += list(pool.map(one, batch))
    done += [one(j) for j in jobs if len(j["gpu_ids"]) > 1]
    return done


def _identical(rs: list[dict]) -> bool | None:
    """Did the repeats give the same outputs and fingerprints? None: fewer than two to compare."""
    if len(rs) < 2:
        return None
    return all(
        r["outputs"] == rs[0]["outputs"] and r["fingerprints_sha256"] == rs[0]["fingerprints_sha256"]
        for r in rs
    )


def summarise(runs: list[dict]) -> dict:
    """Groups (median samples/s, bit-identical repeats), strict ÷ fast, and N-GPU ÷ 1-GPU."""
    groups: dict[str, dict] = {}
    keys = sorted({(r["workload"], r["gpus"], r["profile"], r["precision"]) for r in runs})
    for w, g, p, q in keys:
        rs = [r for r in runs if (r["workload"], r["gpus"], r["profile"], r["precision"]) == (w, g, p, q)]
        ok = [r for r in rs if r["exit_code"] == 0 and r.get("samples_per_s")]
        groups[f"{w}/{g}gpu/{p}/{q}"] = {
            "workload": w,
            "gpus": g,
            "profile": p,
            "precision": q,
            "runs": len(rs),
            "runs_ok": len(ok),
            "samples_per_s": [round(r["samples_per_s"]) for r in ok],
            "samples_per_s_median": statistics.median(r["samples_per_s"] for r in ok) if ok else None,
            "bit_identical": _identical(ok) if len(ok) == len(rs) else False,
        }
    ratio, speedup = {}, {}
    for key, grp in groups.items():
        w, g, p, q = grp["workload"], grp["gpus"], grp["profile"], grp["precision"]
        fast = groups.get(f"{w}/{g}gpu/fast/{q}")
        if p == "strict" and fast and grp["samples_per_s_median"] and fast["samples_per_s_median"]:
            ratio[f"{w}/{g}gpu/{q}"] = grp["samples_per_s_median"] / fast["samples_per_s_median"]
        one = groups.get(f"{w}/1gpu/{p}/{q}")
        if g > 1 and one and grp["samples_per_s_median"] and one["samples_per_s_median"]:
            speedup[key] = grp["samples_per_s_median"] / one["samples_per_s_median"]
    return {"groups": groups, "strict_over_fast": ratio, "speedup_over_1gpu": speedup}


def table(doc: dict) -> str:
    """The Markdown table bench/README.md shows: one row per workload × profile × precision."""
    s = doc["summary"]
    gpu_counts = sorted({g["gpus"] for g in s["groups"].values()})
    head = [
        "workload",
        "profile",
        "precision",
        *[f"{n} GPU samples/s" for n in gpu_counts],
        "repeats identical",
        "strict ÷ fast (1 GPU)",
        *[f"{n}÷1 GPU" for n in gpu_counts if n > 1],
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = sorted(
        {(g["workload"], g["profile"], g["precision"]) for g in s["groups"].values()},
        key=lambda k: (k[0], k[2], k[1]),
    )
    for w, p, q in rows:
        cells = [w, p, q]
        same = []
        for n in gpu_counts:
            grp = s["groups"].get(f"{w}/{n}gpu/{p}/{q}")
            cells.append(
                "—"
                if not grp or not grp["samples_per_s_median"]
                else "–".join(f"{v / 1e3:,.0f}k" for v in sorted(grp["samples_per_s"]))
            )
            if grp:
                same.append(f"{n}: " + {True: "yes", False: "no", None: "1 run"}[grp["bit_identical"]])
        cells.append(", ".join(same))
        r = s["strict_over_fast"].get(f"{w}/1gpu/{q}")
        cells.append(f"{r:.3f}" if r is not None and p == "strict" else "")
        for n in gpu_counts[1:]:
            x = s["speedup_over_1gpu"].get(f"{w}/{n}gpu/{p}/{q}")
            cells.append(f"{x:.2f}×" if x else "—")
        lines.append("| " + " | ".join(cells) + " |")
    m = doc["machine"]
    lines.append("")
    lines.append(
        f"{', '.join(sorted(set(m.get('gpus') or [])))}; {doc['settings']['steps']} steps, "
        f"{doc['settings']['repeats']} repeats each; samples/s of each repeat; `{Path(doc['out']).name}`."
    )
    return "\n".join(lines) + "\n"


def write_table(doc: dict, readme: Path, table_id: str | None = None) -> None:
    """Put the table between the markers (``<!-- gpu-table:ID:begin -->`` with an id), added at the end
    when the file has none."""
    begin, end = (
        (BEGIN, END)
        if not table_id
        else (f"<!-- gpu-table:{table_id}:begin -->", f"<!-- gpu-table:{table_id}:end -->")
    )
    text = readme.read_text() if readme.is_file() else f"{begin}\n{end}\n"
    if begin not in text or end not in text:
        text += f"\n{begin}\n{end}\n"
    before, rest = text.split(begin, 1)
    after = rest.split(end, 1)[1]
    readme.write_text(f"{before}{begin}\n{table(doc)}{end}{after}")


def machine() -> dict:
    smi = (
        subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        .stdout.strip()
        .splitlines()
    )
    return {"host": platform.node(), "gpus": smi}


def merge(paths: list[Path], out: Path, args) -> dict:
    """Join results files (or the ``.runs.jsonl`` a sweep cut short left) into one document."""
    docs = []
    for p in paths:
        if p.suffix == ".jsonl":
            runs = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
            seen = sorted({f"{n}, {r['versions']['driver']}" for r in runs for n in r.get("gpus_seen") or []})
            docs.append(
                {
                    "command": f"(cut short) {p.name}",
                    "date": None,
                    "machine": {"gpus": seen},
                    "settings": {
                        k: (str(v) if isinstance(v, Path) else v)
                        for k, v in vars(args).items()
                        if k != "merge"
                    },
                    "runs": runs,
                }
            )
        else:
            docs.append(json.loads(p.read_text()))
    runs = [r for d in docs for r in d["runs"]]
    doc = {
        **docs[0],
        "merged_from": [str(p) for p in paths],
        "commands": [d["command"] for d in docs],
        "runs": runs,
        "summary": summarise(runs),
        "out": str(out),
    }
    doc["settings"]["gpus"] = sorted({r["gpus"] for r in runs})
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--data-root", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--multi-gpu-workloads", nargs="+", default=["mnist_ddp"], choices=list(WORKLOADS))
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--profiles", nargs="+", default=["strict", "fast"])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--set", nargs="+", default=[], metavar="OVERRIDE", help="more overrides for every run (recorded)"
    )
    ap.add_argument("--table-id", help="write between this table's own markers (a second table in the file)")
    ap.add_argument("--parallel", type=int, default=1, help="single-GPU runs side by side, one per GPU")
    ap.add_argument(
        "--merge", type=Path, nargs="+", help="join these results files into --out instead of running"
    )
    ap.add_argument(
        "--table", type=Path, nargs="?", const=README, help=f"write the table into this file ({README})"
    )
    args = ap.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)

    if args.merge:
        doc = merge(args.merge, args.out, args)
    else:
        runs = execute(plan(args), args, Path(tempfile.mkdtemp(prefix="gpu-bench-")))
        doc = {
            "command": " ".join([sys.executable, *sys.argv]),
            "out": str(args.out),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(),
            "settings": {
                k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "merge"
            },
            "workloads": {w: {"global_batch": b, "overrides": o} for w, (b, o) in WORKLOADS.items()},
            "goals": GOALS,
            "runs": runs,
            "summary": summarise(runs),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str))
    if args.table:
        write_table(doc, args.table, args.table_id)
    print(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
