"""Images travel: a first run on a machine without the image, by building it or by pulling it from the
registry by its recorded digest; and the time to write the image as each file format (and to load one).

``python -m bench.image_transport [--out bench/results/image_transport.json]``, once (each step is
minutes on a small machine: not in ``make bench``). It needs ``make registry``.

1. A base of the bench's own (the shared base made again: a new id, as on another machine) means no
   layer of the image is in the engine's build cache: ``python -m runner`` builds it from the lock's
   wheels (the host's wheelhouse: on a really new machine, downloading them comes on top), pushes it
   (``image.registry``) and trains. Its wall time, and the build and push times it reports.
2. The image is removed: pulling it by the recorded digest (``Engine.pull``) is timed alone, then the
   image is removed again and ``python -m runner.replay RUN`` (which pulls it) is timed whole.
3. ``runner export`` in each format: time, size, sha256 (twice for docker-archive: the same bytes);
   ``runner import`` of the docker-archive with the image removed.

Everything it makes (the base, the image, the files) is removed at the end; the registry keeps its blobs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.machine import describe
from bench.results import load_average
from runner.host.docker_engine import DockerEngine

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "127.0.0.1:5000/runner-bench"
RUN = ["trainer.max_steps=12", "model.train_samples=4096", "fingerprints.every_k_steps=4"]


def _timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(argv)}\n{done.stderr[-2000:]}")
    return seconds, done


def _base(engine: DockerEngine, ref: str, tmp: Path) -> str:
    dockerfile = tmp / "Dockerfile.base"
    dockerfile.write_text("FROM runner-base:bookworm\n")
    labels = {"org.runner.bench-base": uuid.uuid4().hex}
    return engine.build(ref, dockerfile, {}, {}, labels, on_line=lambda line: None)


def first_run(engine: DockerEngine, tmp: Path, base: str) -> dict[str, Any]:
    """A run that builds its image from nothing cached, then a replay that pulls it."""
    run_dir = tmp / "run"
    cmd = [sys.executable, "-m", "runner", f"hydra.run.dir={run_dir}", *RUN]
    cmd += [f"image.variants.cpu.base.ref={base}", f"image.registry={REGISTRY}"]
    cmd += ["+image.variants.cpu.build_args.TEST_VARIANT=bench-transport"]
    built_wall, done = _timed(cmd)
    m = json.loads((run_dir / "manifest.json").read_text())
    image = m["image"]
    push = next((line for line in done.stderr.splitlines() if line.startswith("pushed ")), "")
    engine.remove_image(image["id"])
    started = time.perf_counter()
    assert engine.pull(image["registry_ref"]) == image["id"]
    pull_seconds = time.perf_counter() - started
    engine.remove_image(image["id"])
    replay_wall, _ = _timed([sys.executable, "-m", "runner.replay", str(run_dir), "--json"])
    return {
        "run_dir": str(run_dir),
        "image": {k: image[k] for k in ("id", "tag", "registry_ref", "build_seconds")},
        "build_run": {
            "wall_seconds": built_wall,
            "image_seconds": m["timings"]["image_seconds"],
            "build_seconds": image["build_seconds"],
            "push_line": push,
            "train_seconds": m["timings"]["train_seconds"],
            "command": " ".join(cmd),
        },
        "pull_seconds": pull_seconds,
        "pull_replay": {"wall_seconds": replay_wall, "command": f"python -m runner.replay {run_dir} --json"},
    }


def exports(engine: DockerEngine, run_dir: str, image_id: str, tmp: Path) -> dict[str, Any]:
    """``runner export`` in each format, and ``runner import`` of the docker-archive."""
    out: dict[str, Any] = {}
    for fmt, name in (
        ("docker-archive", "a.tar"),
        ("docker-archive", "b.tar"),
        ("oci", "c.oci"),
        ("squashfs", "d.sqsh"),
    ):
        path = tmp / name
        seconds, done = _timed(
            [sys.executable, "-m", "runner.cli", "export", run_dir, "-o", str(path), "--format", fmt]
        )
        out[name] = {
            "format": fmt,
            "seconds": seconds,
            "bytes": path.stat().st_size,
            "sha256": done.stdout.split()[0],
            "command": f"runner export RUN -o {name} --format {fmt}",
        }
    engine.remove_image(image_id)
    seconds, _ = _timed([sys.executable, "-m", "runner.cli", "import", str(tmp / "a.tar")])
    out["import"] = {"seconds": seconds, "command": "runner import a.tar (the image removed first)"}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "image_transport.json"))
    args = p.parse_args(argv)
    engine = DockerEngine()
    engine.connect()
    base = f"runner-bench-base:{uuid.uuid4().hex[:12]}"
    result: dict[str, Any] = {"machine": describe(engine), "load_average_start": load_average()}
    with tempfile.TemporaryDirectory(prefix="runner-bench-transport-") as tmp:
        image_id = None
        try:
            _base(engine, base, Path(tmp))
            result["first_run"] = first = first_run(engine, Path(tmp), base)
            image_id = first["image"]["id"]
            result["exports"] = exports(engine, first["run_dir"], image_id, Path(tmp))
        finally:
            if image_id:
                engine.remove_image(image_id)
            engine.remove_image(base)
    result["load_average_end"] = load_average()
    result["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
