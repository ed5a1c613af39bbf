"""Charliecloud's figures, one measurement each: how long an image file takes to unpack for it, and
training throughput under it ÷ on the host (``launch.backend=host``), same steps.

Run it as the unprivileged user Charliecloud is for (``make charliecloud`` makes ``runner-ci``)::

    docker save runner:cpu-… -o /tmp/cpu.tar && chmod 644 /tmp/cpu.tar
    setpriv --reuid=runner-ci --regid=runner-ci --init-groups env -i HOME=/home/runner-ci \\
      USER=runner-ci PATH=/usr/bin:/bin GIT_CONFIG_COUNT=1 GIT_CONFIG_KEY_0=safe.directory \\
      GIT_CONFIG_VALUE_0='*' .venv/bin/python -m bench.charliecloud /tmp/cpu.tar --out /tmp/runner-ci.json

The image is unpacked into a fresh cache (so nothing is found there already), and the runs use it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench import runs
from bench.results import load_average
from runner.host.charliecloud_engine import CharliecloudEngine

STEPS = ["trainer.max_steps=100"]


def measure(image_file: Path, overrides: list[str], work: Path) -> dict:
    cache = work / "cache"
    engine = CharliecloudEngine(cache_dir=str(cache))
    load = load_average()
    started = time.perf_counter()
    (image_id,) = engine.load(image_file)
    unpack = time.perf_counter() - started
    ch = runs.run([*overrides, "engine=charliecloud", f"launch.engine.cache_dir={cache}"], work / "ch")
    host = runs.run([*overrides, "launch.backend=host"], work / "host")
    return {
        "load_average_at_start": load,
        "image_file": str(image_file),
        "image_file_bytes": image_file.stat().st_size,
        "image_id": image_id,
        "unpack_seconds": round(unpack, 1),
        "overrides": overrides,
        "order": "charliecloud, then host",
        "charliecloud_samples_per_second": ch.samples_per_second,
        "host_samples_per_second": host.samples_per_second,
        "throughput_ratio": ch.samples_per_second / host.samples_per_second,
        "measured_by": ch.speed_source,
        "charliecloud_wall_seconds": ch.wall_seconds,
        "host_wall_seconds": host.wall_seconds,
        "load_average_at_end": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.charliecloud", description=__doc__.splitlines()[0])
    parser.add_argument("image_file", type=Path, help="a docker-archive (docker save) or OCI archive")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON figures go")
    parser.add_argument("--set", nargs="*", default=STEPS, metavar="OVERRIDE", help="the runs' overrides")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-ch-"))
    try:
        figures = measure(args.image_file.resolve(), list(args.set), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
