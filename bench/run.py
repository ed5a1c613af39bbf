"""``python -m bench.run [--quick] [--out DIR]``: measure the runner's own cost, write the results.

Writes ``latest.json`` (every sample, the machine, the load) and ``latest.md`` (the README
table) to ``--out`` (default ``bench/results``). ``--quick`` runs every measurement once on
tiny sizes: it checks that the suite works, its figures are not for quoting.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    audit_cost,
    container_vs_host,
    determinism_cost,
    hash_speed,
    image_check,
    machine,
    results,
    script_overhead,
)
from runner.core.errors import EXIT_INTERRUPTED, EXIT_USAGE, RunnerError
from runner.flows.cli_common import fail

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Sizes:
    reps: int
    steps: int  # optimizer steps per training run
    train_samples: int | None  # None: the whole training set
    hash_bytes: int
    wheelhouse_padding_bytes: int  # added to a copy of the real wheelhouse

    def overrides(self) -> list[str]:
        out = ["experiment=mnist_ddp", f"trainer.max_steps={self.steps}"]
        if self.train_samples:
            out.append(f"model.train_samples={self.train_samples}")
        return out


FULL = Sizes(
    reps=5, steps=100, train_samples=None, hash_bytes=1 << 30, wheelhouse_padding_bytes=1_300_000_000
)
QUICK = Sizes(reps=1, steps=8, train_samples=4096, hash_bytes=32 << 20, wheelhouse_padding_bytes=64 << 20)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run_suite(sizes: Sizes, out_dir: Path, quick: bool) -> dict:
    from omegaconf import OmegaConf

    from runner.flows.cli_common import compose
    from runner.host import engine as engines

    started = time.time()
    info = machine.describe(engines.connect())
    info["load_average_start"] = results.load_average()
    _log(f"bench: {results.machine_line(info)}; load average {info['load_average_start']}")
    cfg = OmegaConf.to_container(compose(sizes.overrides()), resolve=True)
    work = Path(tempfile.mkdtemp(prefix="runner-bench-"))
    figures: list[results.Figure] = []
    try:
        _log("bench: 2. deciding the image is up to date")
        figures += image_check.measure(cfg, sizes.wheelhouse_padding_bytes, sizes.reps, work, _log)
        _log(f"bench: 3. hashing a {sizes.hash_bytes / 1e9:.2g} GB file")
        figures += hash_speed.measure(sizes.hash_bytes, sizes.reps, work, _log)
        _log("bench: 1 + 4. the same run in the container and on the host")
        figures += container_vs_host.measure(sizes.overrides(), sizes.reps, work, _log)
        _log("bench: 1b. a plain script: the whole `python -m runner` against `python script.py`")
        figures += script_overhead.measure(str(cfg["dataset"]["root"]), sizes.reps, work, _log)
        _log("bench: 5. strict against fast determinism")
        figures += determinism_cost.measure(sizes.overrides(), sizes.reps, work, _log)
        _log("bench: 6. what the determinism audit costs: the default run, strict against fast")
        figures += audit_cost.measure(sizes.overrides(), sizes.reps, work, _log)
    except BaseException:
        _log(f"bench: stopped; run dirs kept in {work} for inspection")
        raise
    shutil.rmtree(work, ignore_errors=True)
    order = [
        "script_overhead",
        "script_runner_own_seconds",
        "launch_overhead",
        "image_up_to_date_s",
        "cache_hit_build_s",
        "hash_first_gbps",
        "hash_cold_gbps",
        "hash_cache_hit_ms",
        "train_throughput_ratio",
        "strict_vs_fast_throughput",
        "audit_wall_ratio",
        "audit_seconds",
    ]
    figures.sort(key=lambda f: order.index(f.id) if f.id in order else len(order))
    info["load_average_end"] = results.load_average()
    finished = time.time()
    meta = {
        "suite": "runner bench",
        "quick": quick,
        "command": [sys.executable, "-m", "bench.run", *sys.argv[1:]],
        "started_utc": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
        "finished_utc": datetime.fromtimestamp(finished, UTC).isoformat(timespec="seconds"),
        "duration_s": round(finished - started, 1),
        "sizes": asdict(sizes),
        "git": machine.git_state(Path(__file__).resolve().parent.parent),
    }
    doc = results.document(figures, info, meta)
    json_path, md_path = results.write(doc, out_dir)
    _log(f"bench: wrote {json_path} and {md_path}")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one repetition on tiny sizes (checks the suite)"
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="directory for latest.json and latest.md"
    )
    parser.add_argument(
        "--reps", type=int, default=None, help="repetitions per measurement (default 5; quick 1)"
    )
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    try:
        if args.reps is not None:
            if args.reps < 1:
                raise RunnerError(f"--reps={args.reps} must be at least 1", EXIT_USAGE)
            sizes = Sizes(**{**asdict(sizes), "reps": args.reps})
        doc = run_suite(sizes, args.out, args.quick)
    except RunnerError as exc:
        fail(exc)
    except KeyboardInterrupt:
        fail(RunnerError("interrupted; no results written", EXIT_INTERRUPTED))
    print(results.markdown(doc), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
