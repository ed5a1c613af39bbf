"""The training image, found by content hash or built hermetically: the one build path for runs,
replays and sweeps.

A build's wheels are fetched on the host from the hash-pinned lock (:mod:`runner.host.wheelhouse`)
and installed with no network; concurrent runners needing one tag take turns, so the
first builds and the others find it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.core import images, manifest, spec
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.core.run_input import ResolvedImage
from runner.host import wheelhouse
from runner.host.engine import Engine
from runner.host.logs import Tee
from runner.host.progress import BuildProgress

__all__ = [
    "ResolvedImage",
    "Exact",
    "build_mutex",
    "exact",
    "find_or_build",
    "image_record",
    "pinned_image",
    "publish",
    "resolve_image",
    "reuse",
]


def resolve_image(
    engine: Engine, plan: spec.RunPlan, root: Path, echo: Callable[[str], None], build_log: Path | None = None
) -> ResolvedImage:
    """Find the image the plan names by content hash, or build it (hermetically) when the tag is absent.

    A build's output goes to ``build_log`` when given (a failed build's run dir then keeps the
    whole log, not only the tail in the error); the terminal shows its step and elapsed time.
    """
    variant = plan.config.image.variant(plan.image_kind)
    if not variant:
        raise RunnerError(f"image.variants.{plan.image_kind}: the config names no such image", EXIT_USAGE)
    registry = images.check_registry(plan.config.image.registry)  # before any build
    base = variant["base"]
    base_id = engine.image_id(base["ref"]) or engine.pull(base["ref"])
    if not base_id:
        raise RunnerError(
            f"base image {base['ref']} is not present and no registry answered — run `make setup` "
            "(it builds the base locally with debootstrap)",
            EXIT_ENVIRONMENT,
        )
    iplan = images.plan(variant, plan.image_kind, root, base_id)
    pinned = plan.launch.image_id
    if pinned:
        image = pinned_image(engine, iplan, str(pinned), plan.launch.image_ref, echo)
    else:
        image = find_or_build(engine, iplan, root, echo, build_log=build_log)
    return publish(engine, image, registry, echo) if registry else image


def publish(
    engine: Engine, image: ResolvedImage, registry: str, echo: Callable[[str], None]
) -> ResolvedImage:
    """Push the image to ``registry`` (``HOST[:PORT]/REPOSITORY``) under its content-hash tag, and
    record where it is by digest: a replay, a resume or another node pulls exactly that. A push of
    what the registry already holds sends no layer and takes about a second."""
    target = images.registry_target(registry, image.record["tag"])  # image.tag: an id, when pinned
    started = time.time()
    ref = images.by_digest(target, engine.push(image.tag, target))
    echo(f"pushed {target} as {ref} ({time.time() - started:.1f} s)")
    return ResolvedImage(record={**image.record, "registry_ref": ref}, tag=image.tag)


def pinned_image(
    engine: Engine, iplan: images.ImagePlan, image_id: str, ref: str | None, echo: Callable[[str], None]
) -> ResolvedImage:
    """The image a sweep resolved for its jobs (``launch.image_id``, a Slurm node's slot), run by
    its id: never a tag, which this node's engine could hold for another image, and never built
    here. A node without it pulls it by the digest the sweep recorded (``ref``: ``launch.image_ref``)
    and refuses any other id; without either, one line."""
    if engine.image_id(image_id) != image_id and ref:
        echo(f"pulling {ref} (the sweep's image {image_id}, by digest)")
        got = engine.pull(ref)
        if got is not None and got != image_id:
            raise RunnerError(f"{ref} is image {got}, not the sweep's {image_id}: refused", EXIT_ENVIRONMENT)
    if engine.image_id(image_id) != image_id:
        tried = f", and {ref} could not be pulled" if ref else ""
        raise RunnerError(
            f"image {image_id} (the one this sweep resolved for {iplan.tag}) is not on this node's engine"
            f"{tried}: every node needs it under that id (image.registry, which the nodes pull it from by "
            "digest, or an image cache on the shared file system, e.g. engine=charliecloud's cache_dir)",
            EXIT_ENVIRONMENT,
        )
    return ResolvedImage(record=image_record(iplan, image_id, False, None, engine), tag=image_id)


def find_or_build(
    engine: Engine,
    iplan: images.ImagePlan,
    root: Path,
    echo: Callable[[str], None],
    *,
    wheels: Path | None = None,
    build_log: Path | None = None,
) -> ResolvedImage:
    """The one build path, for runs, sweeps and replays: the image ``iplan`` describes, found by its
    tag or built from ``root``'s Dockerfile and lock with the lock's wheels (``wheels``, or fetched
    now). Runners needing one tag at once take turns (:func:`build_mutex`): the first builds, the
    others find it.
    """
    started = time.time()
    announce = f"building image {iplan.tag} (no cached image for this Dockerfile + lock + base)"
    with build_mutex(iplan.tag):
        image_id = engine.image_id(iplan.tag)
        built = image_id is None
        if image_id is None:
            with (
                BuildProgress(iplan.tag, build_log, echo, announce) as progress,
                Tee(build_log, progress) if build_log else contextlib.nullcontext(progress) as log,
            ):
                log(announce)  # the log file's first line (the terminal got it from BuildProgress)
                if wheels is None:
                    wheels = wheelhouse.wheelhouse(
                        root / iplan.lock, iplan.lock_sha256, iplan.python_version, log=log
                    )
                image_id = engine.build(
                    iplan.tag,
                    root / iplan.dockerfile,
                    {"image.lock": root / iplan.lock, "wheels": wheels},
                    buildargs={"BASE": iplan.base, **iplan.build_args},
                    labels=iplan.labels(),
                    on_line=log,
                )
    record = image_record(iplan, image_id, built, time.time() - started if built else None, engine)
    return ResolvedImage(record=record, tag=iplan.tag)


def reuse(engine: Engine, recorded: manifest.Image) -> ResolvedImage:
    """The image a manifest records, run again as it is (by id: the very image, whatever its tag
    names today). The caller has checked it is present."""
    record = {**recorded.model_dump(), "built_now": False, "build_seconds": None, "engine": engine.version()}
    return ResolvedImage(record=record, tag=recorded.id)


@dataclass(frozen=True)
class Exact:
    """The very image a record names (its id), had here or not: ``how`` says how it was had, or
    why it could not be and how to get it."""

    image: ResolvedImage | None
    how: str


NO_COPY = (
    "the exact image: `runner export RUN_DIR -o FILE` where it was recorded, then `--image FILE`; "
    "or record runs with image.registry=HOST:PORT/REPOSITORY"
)


def exact(
    engine: Engine, recorded: manifest.Image, image_file: Path | None, echo: Callable[[str], None]
) -> Exact:
    """The recorded image itself, by id: loaded from ``image_file``, already here, or pulled by the
    recorded digest. A file or a digest that gives another image is refused, nothing run."""
    if image_file is not None:
        from runner.host import image_files

        ids = image_files.load(engine, image_file, expect=recorded.id)  # another image is not loaded
        if recorded.id not in ids:
            raise RunnerError(
                f"{image_file} holds image {', '.join(ids) or 'none'}, not the recorded {recorded.id} "
                "— nothing was run",
                EXIT_ENVIRONMENT,
            )
        return Exact(
            reuse(engine, recorded), f"loaded {recorded.tag} from {image_file} (the recorded image id)"
        )
    if engine.image_id(recorded.id) == recorded.id:
        return Exact(reuse(engine, recorded), f"reused {recorded.tag} (the recorded image id)")
    ref = recorded.registry_ref
    if not ref:
        return Exact(None, NO_COPY)
    echo(f"pulling {ref} (the recorded digest)")
    got = engine.pull(ref)
    if got is None:
        return Exact(
            None,
            f"{ref} could not be pulled (start its registry, or `runner export` the run, then --image FILE)",
        )
    if got != recorded.id:
        raise RunnerError(
            f"{ref} is image {got}, not the recorded {recorded.id}: refused — nothing was run",
            EXIT_ENVIRONMENT,
        )
    return Exact(reuse(engine, recorded), f"pulled {ref} (the recorded digest and image id)")


def image_record(
    iplan: images.ImagePlan, image_id: str, built: bool, build_seconds: float | None, engine: Engine
) -> Mapping[str, Any]:
    """The manifest's ``image`` section for an image planned by ``iplan`` and found or built."""
    return {
        **{k: v for k, v in iplan.to_dict().items() if k in manifest.Image.model_fields},
        "id": image_id,
        "built_now": built,
        "build_seconds": build_seconds,
        "engine": engine.version(),
    }


@contextlib.contextmanager
def build_mutex(tag: str) -> Iterator[None]:
    """Be the one runner on this host building ``tag`` (an ``flock`` on a file under the runner
    cache). Not to be confused with a lock file (``images/*.lock``), which pins packages."""
    import fcntl

    from runner.host.hashing import cache_dir

    mutexes = cache_dir() / "build-mutexes"
    mutexes.mkdir(parents=True, exist_ok=True)
    with open(mutexes / tag.replace("/", "_").replace(":", "_"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
