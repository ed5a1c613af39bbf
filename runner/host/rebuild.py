"""The recorded environment, brought back for a replay — or a precise list of what cannot be.

A replay runs in the image the manifest names: the exact image (by its recorded id) when it is
here, loaded from an image file (``--image FILE``) or pulled by its recorded digest
(``image.registry_ref``), otherwise one rebuilt from the *recorded* Dockerfile and lock (taken
from the restored code snapshot, never from today's tree) on the recorded base. Before anything runs,
every way the environment could differ from the record is checked and collected as a
:class:`~runner.core.compare.Drift`:

* the base image: present, same id, same digest (when one was recorded);
* the Dockerfile and lock in the snapshot: same sha256 as the image was built from;
* the wheels the lock pins: fetchable, and each one's sha256 among the lock's pins;
* the rebuilt image's ``pip freeze`` (``/opt/venv/pip-freeze.txt``) equals the recorded packages;
* the data files: same sha256; variables whose values were redacted: set on this host.

Any drift stops the replay with :class:`EnvironmentDrift` (one line naming each item) unless
the caller allows drift, in which case the drift travels into the verdict.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from runner.core import images, manifest
from runner.core.compare import ABSENT, Drift, package_changes
from runner.core.errors import EXIT_ENVIRONMENT, RunnerError
from runner.core.locks import distribution_project, lock_pins
from runner.core.run_input import ResolvedImage
from runner.core.spec import RunPlan
from runner.host import image_builder, wheelhouse
from runner.host.hashing import HashCache, sha256_file
from runner.host.snapshot import project_root

if TYPE_CHECKING:
    from runner.host.engine import Engine

PIP_FREEZE = "/opt/venv/pip-freeze.txt"  # written by the Dockerfiles at build time


class EnvironmentDrift(RunnerError):
    """The recorded environment cannot be had exactly; ``drift`` says item by item how."""

    def __init__(self, drift: list[Drift], fatal: str | None = None, hint: str | None = None):
        items = "; ".join(d.describe() for d in drift)
        if fatal:
            msg = f"cannot replay: {fatal} ({items}) — nothing was run"
        else:
            msg = (
                f"the recorded environment cannot be rebuilt exactly: {items} — nothing was run "
                "(--allow-env-drift runs anyway and reports this drift)"
            )
        super().__init__(f"{msg}; {hint}" if hint else msg, EXIT_ENVIRONMENT)
        self.drift, self.fatal = drift, fatal


@dataclass
class Prepared:
    """What a replay runs with: the image (None on the host backend), the variables, and any drift."""

    image: ResolvedImage | None
    how: str
    environment: dict[str, str]
    drift: list[Drift]


# -- checks that need no engine ---------------------------------------------------------------------
def recorded_variables(
    recorded: Mapping[str, str], host_env: Mapping[str, str]
) -> tuple[dict[str, str], list[Drift]]:
    """The recorded variables, with values the record redacted (secrets) taken from this host."""
    out, drift = {}, []
    for name, value in recorded.items():
        if value != manifest.REDACTED:
            out[name] = value
        elif name in host_env:
            out[name] = host_env[name]
        else:
            drift.append(Drift(f"variable {name}", "set (its value is redacted in the record)", "not set"))
    return out, drift


def check_data(data: manifest.Data | None, cache: HashCache | None = None) -> list[Drift]:
    """Each recorded data file: present at its recorded path with its recorded sha256."""
    if data is None:
        return []
    drift = []
    cache = cache or HashCache()
    for name, rec in data.files.items():
        path = Path(data.root) / name
        if not path.is_file():
            drift.append(Drift(f"data file {path}", f"sha256 {rec.sha256[:12]}…", "missing"))
            continue
        digest = cache.sha256(path)
        if digest != rec.sha256:
            drift.append(Drift(f"data file {path}", f"sha256 {rec.sha256[:12]}…", f"sha256 {digest[:12]}…"))
    return drift


def check_file(root: Path, rel: str, recorded_sha256: str, what: str) -> tuple[Path, list[Drift]]:
    """A build input inside the restored snapshot, with the hash the image was built from."""
    path = root / rel
    if not path.is_file():
        return path, [Drift(f"{what} {rel}", f"sha256 {recorded_sha256[:12]}…", "not in the code snapshot")]
    digest = sha256_file(path)
    if digest != recorded_sha256:
        return path, [
            Drift(
                f"{what} {rel} in the snapshot", f"sha256 {recorded_sha256[:12]}…", f"sha256 {digest[:12]}…"
            )
        ]
    return path, []


def check_wheels(lock: Path, wheel_dir: Path, cache: HashCache | None = None) -> list[Drift]:
    """Every pinned project has a file in the wheelhouse whose sha256 the lock pins for it."""
    pins = lock_pins(lock.read_text())
    cache = cache or HashCache()
    seen: dict[str, list[tuple[str, str]]] = {}
    for f in sorted(wheel_dir.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            seen.setdefault(distribution_project(f.name), []).append((f.name, cache.sha256(f)))
    drift = []
    for name, (version, hashes) in sorted(pins.items()):
        files = seen.get(name, [])
        if not files:
            drift.append(
                Drift(f"wheel for {name}=={version}", f"pinned by {lock.name}", "missing from the wheelhouse")
            )
        for fname, digest in files:
            if hashes and digest not in hashes:
                drift.append(
                    Drift(
                        f"wheel {fname}",
                        f"one of the {len(hashes)} sha256 {lock.name} pins for {name}=={version}",
                        f"sha256 {digest[:16]}…",
                    )
                )
    return drift


def package_drift(recorded: list[str], found: list[str], where: str) -> list[Drift]:
    def v(x) -> str:
        return "absent" if x is ABSENT else str(x) or "(no version)"

    return [Drift(f"package {c.key}", v(c.a), f"{v(c.b)} {where}") for c in package_changes(recorded, found)]


# -- the image ---------------------------------------------------------------------------------------
def _read_freeze(engine: Engine, tag: str) -> list[str] | None:
    try:
        return engine.read_image_file(tag, PIP_FREEZE).decode(errors="replace").splitlines()
    except RunnerError:
        return None


def prepare(
    engine: Engine | None,
    m: manifest.Manifest,
    snap_dir: Path,
    plan: RunPlan,
    *,
    allow_drift: bool,
    echo: Callable[[str], None],
) -> Prepared:
    """Everything a replay runs with, checked against the record; raises EnvironmentDrift on drift
    (unless ``allow_drift``) before any training starts. ``plan`` is the replay's RunPlan. The
    recorded image is reused (by its id), else pulled by its recorded digest, else rebuilt."""
    cache = HashCache()
    env, drift = recorded_variables(m.environment, os.environ)
    drift += check_data(m.data, cache)

    if not m.containerized:  # host backend: this interpreter is the environment
        from runner.core import installed

        drift += package_drift(m.packages, installed.packages(), "in this Python") if m.packages else []
        _stop(drift, allow_drift)
        return Prepared(None, f"host backend: this Python ({sys.executable})", env, drift)

    if m.image is None:
        raise RunnerError(
            "the manifest records a containerized run but no image: cannot replay it", EXIT_ENVIRONMENT
        )
    assert engine is not None, "a containerized replay needs an engine"
    exact = image_builder.exact(engine, m.image, None, echo)
    if exact.image is not None:  # the very image: from the file, still here, or pulled by digest
        _stop(drift, allow_drift)
        return Prepared(exact.image, exact.how, env, drift)
    try:
        image, how, image_drift = _rebuild(engine, m, snap_dir, plan, _SoFar(drift, allow_drift), echo)
        drift += image_drift
        _stop(drift, allow_drift)
    except EnvironmentDrift as exc:  # say, in the same line, how to get the exact image
        raise EnvironmentDrift(exc.drift, exc.fatal, hint=exact.how) from None
    return Prepared(image, how, env, drift)


def _recorded_image_plan(
    engine: Engine, rec: manifest.Image, snap_dir: Path, drift: list[Drift]
) -> tuple[images.ImagePlan, list[Drift]]:
    """The recorded image's plan, on the base as it is here and the snapshot's Dockerfile and lock,
    with every way those differ from the record; raises EnvironmentDrift when one is missing."""
    found: list[Drift] = []
    base_now = engine.image_id(rec.base_ref) or engine.pull(rec.base_ref)
    if base_now is None:
        found.append(
            Drift(f"base image {rec.base_ref}", f"id {rec.base_id}", "not present, and no registry answered")
        )
        raise EnvironmentDrift(drift + found, fatal=f"there is no base image {rec.base_ref} to build on")
    if base_now != rec.base_id:
        found.append(Drift(f"base image {rec.base_ref}", f"id {rec.base_id}", f"id {base_now}"))
    digest_now = engine.image_digest(rec.base_ref)
    if rec.base_digest and digest_now != rec.base_digest:
        found.append(
            Drift(f"base image {rec.base_ref}", f"digest {rec.base_digest}", f"digest {digest_now or 'none'}")
        )
    dockerfile, d1 = check_file(snap_dir, rec.dockerfile, rec.dockerfile_sha256, "Dockerfile")
    lock, d2 = check_file(snap_dir, rec.lock, rec.lock_sha256, "lock")
    found += d1 + d2
    if not dockerfile.is_file() or not lock.is_file():
        raise EnvironmentDrift(
            drift + found, fatal="the code snapshot lacks the Dockerfile or lock the image was built from"
        )
    iplan = images.ImagePlan(
        kind=rec.kind,
        dockerfile=rec.dockerfile,
        dockerfile_sha256=sha256_file(dockerfile),
        lock=rec.lock,
        lock_sha256=sha256_file(lock),
        base_ref=rec.base_ref,
        base_digest=rec.base_digest if digest_now == rec.base_digest else digest_now,
        base_id=base_now,
        python_version=rec.python_version,
        build_args=dict(rec.build_args),
    )
    return iplan, found


def _recorded_wheels(
    iplan: images.ImagePlan, snap_dir: Path, echo: Callable[[str], None]
) -> tuple[Path | None, list[Drift]]:
    """The wheels the recorded lock pins, fetched and checked against its hashes."""
    lock = snap_dir / iplan.lock
    try:
        wheels = wheelhouse.wheelhouse(lock, iplan.lock_sha256, iplan.python_version, log=echo)
        return wheels, check_wheels(lock, wheels)
    except RunnerError as exc:
        return None, [Drift(f"wheels pinned by {iplan.lock}", "fetchable, hashes as pinned", exc.message)]


@dataclass(frozen=True)
class _SoFar:
    """The drift a replay found before it came to the image, and whether it may go on with drift."""

    drift: list[Drift]
    allowed: bool

    def stop(self, found: list[Drift]) -> None:
        """Stop here (EnvironmentDrift) when there is drift and it is not allowed."""
        _stop(self.drift + found, self.allowed)


def _rebuild(
    engine: Engine,
    m: manifest.Manifest,
    snap_dir: Path,
    plan: RunPlan,
    so_far: _SoFar,
    echo: Callable[[str], None],
) -> tuple[ResolvedImage, str, list[Drift]]:
    """Rebuild (or find by content hash) the image from the snapshot's Dockerfile and lock; returns
    it, how it was had, and the drift found on the way (``so_far``'s not included)."""
    assert m.image is not None
    rec = m.image
    iplan, found = _recorded_image_plan(engine, rec, snap_dir, so_far.drift)
    so_far.stop(found)  # before spending a build on an environment that cannot match
    wheels = None
    if engine.image_id(iplan.tag) is None:
        echo(f"rebuilding {iplan.tag} from the recorded Dockerfile and lock (the recorded image is gone)")
        wheels, wheel_drift = _recorded_wheels(iplan, snap_dir, echo)
        if wheel_drift:
            found += wheel_drift
            so_far.stop(found)
            return _fall_back(engine, m, plan, echo, found)
    image = image_builder.find_or_build(engine, iplan, snap_dir, echo, wheels=wheels)
    if image.record["built_now"]:
        how = f"rebuilt {iplan.tag} from the recorded Dockerfile and lock on base {rec.base_ref}"
    else:
        how = f"found {iplan.tag} by content hash (recorded id gone; same Dockerfile, lock, base)"
    found += _freeze_drift(m, _read_freeze(engine, iplan.tag), iplan.tag)
    if iplan.tag != rec.tag:
        found.append(Drift("image tag", rec.tag, iplan.tag))
    return image, how, found


def _fall_back(
    engine: Engine, m: manifest.Manifest, plan: RunPlan, echo: Callable[[str], None], found: list[Drift]
) -> tuple[ResolvedImage, str, list[Drift]]:
    """With drift allowed and the recorded lock not installable: the image today's tree gives."""
    assert m.image is not None
    echo("the recorded lock cannot be installed; --allow-env-drift: using the image today's tree gives")
    root = project_root()
    fallback = image_builder.resolve_image(engine, plan, root, echo)
    found.append(
        Drift(
            "image",
            f"{m.image.tag} built from the recorded Dockerfile and lock",
            f"{fallback.tag} from today's tree at {root}",
        )
    )
    found += _freeze_drift(m, _read_freeze(engine, fallback.tag), fallback.tag)
    return (
        fallback,
        f"fell back to {fallback.tag} (today's tree): the recorded lock cannot be installed",
        found,
    )


def _freeze_drift(m: manifest.Manifest, freeze: list[str] | None, tag: str) -> list[Drift]:
    if freeze is None:
        return [Drift("pip freeze", f"{len(m.packages)} packages", f"{tag} has no {PIP_FREEZE}")]
    if not m.packages:  # a run that failed before the worker listed them: nothing to hold the image to
        return []
    return package_drift(m.packages, freeze, f"in {tag}")


def _stop(drift: list[Drift], allow_drift: bool) -> None:
    if drift and not allow_drift:
        raise EnvironmentDrift(drift)
