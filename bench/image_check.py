"""Figure 2: deciding that the image is up to date, and what a cache-hitting build would cost.

The decision is what a launch does before it starts a container: connect to the engine and
call :func:`runner.host.image_builder.resolve_image` (content hash of Dockerfile + lock + base → look the
tag up). It is measured with the real wheelhouse and with one ``padding_bytes`` larger (the
real wheels hard-linked plus a sparse filler file, under its own ``RUNNER_CACHE``), to show
the time does not depend on the wheelhouse. :class:`CountingEngine` is the real engine
counting its ``build`` calls: ``DockerEngine.build`` is the only code that sends a build context.

For contrast, a docker-py build of the same Dockerfile, lock and wheels that hits every
cache (checked: it yields the existing image id) is timed under a throwaway tag, removed after.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

from bench.results import Figure, Goal, load_average, median
from runner.core import images, spec
from runner.host import image_builder, snapshot, wheelhouse
from runner.host.docker_engine import DockerEngine

CONTRAST_TAG = "runner:bench-cachehit"


class CountingEngine(DockerEngine):
    """The real Docker engine; counts ``build`` calls (each one would upload a context)."""

    builds = 0

    def build(self, *args, **kwargs) -> str:
        CountingEngine.builds += 1
        return super().build(*args, **kwargs)


@contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _padded_wheelhouse(real: Path, cache_root: Path, padding_bytes: int) -> Path:
    """A wheelhouse dir at the path ``wheelhouse()`` uses under ``cache_root``: the real wheels
    (hard links) plus a sparse filler of ``padding_bytes`` (no disk used, same apparent size)."""
    dest = cache_root / "wheels" / real.name
    dest.mkdir(parents=True)
    for p in real.iterdir():
        if p.is_file():
            try:
                os.link(p, dest / p.name)
            except OSError:
                shutil.copy2(p, dest / p.name)
    with open(dest / "zz-padding.whl.bin", "wb") as f:
        f.truncate(padding_bytes)
    return dest


def _decide(plan: spec.RunPlan, root: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    engine = CountingEngine()
    engine.connect()
    resolved = image_builder.resolve_image(engine, plan, root, echo=lambda line: None)
    return time.perf_counter() - started, resolved.record


def measure(cfg: dict, padding_bytes: int, reps: int, work: Path, log) -> list[Figure]:
    load = load_average()
    root = snapshot.project_root()
    plan = spec.plan_run(cfg, work / "image-check", root, spec.Host(os.environ, os.getuid(), os.getgid()))
    _, warm = _decide(plan, root)  # builds the image once, untimed, on a machine that lacks it
    built_in_warmup = bool(warm["built_now"])
    CountingEngine.builds = 0

    variant = cfg["image"]["variants"][plan.image_kind]
    engine = DockerEngine()
    iplan = images.plan(variant, plan.image_kind, root, engine.image_id(variant["base"]["ref"]))
    real_wh = wheelhouse.wheelhouse(root / iplan.lock, iplan.lock_sha256, iplan.python_version, log=log)
    padded_cache = work / "padded-cache"
    padded_wh = _padded_wheelhouse(real_wh, padded_cache, padding_bytes)
    padded_bytes = _tree_bytes(padded_wh)
    with _env("RUNNER_CACHE", str(padded_cache)):
        padded_in_use = (
            wheelhouse.wheelhouse(root / iplan.lock, iplan.lock_sha256, iplan.python_version) == padded_wh
        )

    real_s, padded_s, contrast_s, records, contrast_ids = [], [], [], [], set()
    context_files = {"image.lock": root / iplan.lock, "wheels": real_wh}
    try:
        for i in range(reps):
            seconds, rec = _decide(plan, root)
            real_s.append(seconds)
            records.append(rec)
            with _env("RUNNER_CACHE", str(padded_cache)):
                seconds, rec = _decide(plan, root)
            padded_s.append(seconds)
            records.append(rec)
            started = time.perf_counter()
            contrast_ids.add(
                engine.build(
                    CONTRAST_TAG,
                    root / iplan.dockerfile,
                    context_files,
                    buildargs={"BASE": iplan.base, **iplan.build_args},
                    labels=iplan.labels(),
                    on_line=lambda line: None,
                )
            )
            contrast_s.append(time.perf_counter() - started)
            log(
                f"  rep {i + 1}/{reps}: up-to-date check {real_s[-1] * 1e3:.0f} ms (padded wheelhouse "
                f"{padded_s[-1] * 1e3:.0f} ms); cache-hitting build {contrast_s[-1]:.2f} s"
            )
    finally:
        engine.remove_image(CONTRAST_TAG)  # only the throwaway tag; the image keeps its own tag
        shutil.rmtree(padded_cache, ignore_errors=True)

    real_bytes = _tree_bytes(real_wh)
    image_id = records[0]["id"]
    samples = [max(a, b) for a, b in zip(real_s, padded_s, strict=True)]
    return [
        Figure(
            id="image_up_to_date_s",
            title="Deciding the image is up to date (tag present)",
            unit="s",
            samples=samples,
            goal=Goal("<=", 0.1),
            checks={
                "no_build_context_sent": CountingEngine.builds == 0,
                "no_build_reported": not any(r["built_now"] for r in records),
                "padded_wheelhouse_in_use": padded_in_use,
            },
            details={
                "measured": (
                    "DockerEngine.connect() + runner.host.image_builder.resolve_image(); "
                    "sample = slower of the two wheelhouses"
                ),
                "real_wheelhouse_bytes": real_bytes,
                "padded_wheelhouse_bytes": padded_bytes,
                "padded_wheelhouse": "real wheels hard-linked + a sparse filler, own RUNNER_CACHE",
                "real_wheelhouse_seconds": real_s,
                "padded_wheelhouse_seconds": padded_s,
                "real_median": median(real_s),
                "padded_median": median(padded_s),
                "engine_build_calls": CountingEngine.builds,
                "image_tag": records[0]["tag"],
                "built_in_warmup": built_in_warmup,
            },
            load_average=load,
        ),
        Figure(
            id="cache_hit_build_s",
            title="For contrast: a docker-py build hitting every cache (sends the context)",
            unit="s",
            samples=contrast_s,
            checks={"hit_every_cache": contrast_ids == {image_id}},
            details={
                "context_bytes": real_bytes
                + (root / iplan.lock).stat().st_size
                + (root / iplan.dockerfile).stat().st_size,
                "wheelhouse_bytes": real_bytes,
                "tag": f"{CONTRAST_TAG} (removed afterwards)",
                "same_image_id_as_cached": contrast_ids == {image_id},
            },
            load_average=load,
        ),
    ]
