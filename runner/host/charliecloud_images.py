"""Charliecloud's images: unpacked root filesystems in a per-user cache, one per image id.

Charliecloud runs a directory. The runner makes one from an image file (``docker save``'s
docker-archive, or an OCI archive: ``runner export``) or a registry reference, unprivileged:
skopeo copies it into an OCI layout, umoci unpacks its layers into a root filesystem. Each is
kept under ``<cache>/charliecloud/images/<id>/`` beside ``image.json``, which says which image it
is: the image id (the sha256 of its config, what Docker and Podman call the image), its tags and
registry digests, its environment and labels, and the file it came from. A second load of the same
image finds it there and unpacks nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.core.json_types import JsonObject
from runner.host.hashing import cache_dir

META = "image.json"
ROOTFS = "rootfs"
_ID = re.compile(r"^sha256:[0-9a-f]{64}$")
_LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class StoredImage:
    """One unpacked image and what it is."""

    id: str  # sha256:… of the image config
    root: Path  # the unpacked root filesystem, what ch-run runs
    tags: tuple[str, ...] = ()
    digests: tuple[str, ...] = ()  # repository@sha256:… it was pulled by
    env: tuple[str, ...] = ()  # the image's own ENV, as Docker and Podman start a container with it
    labels: dict[str, str] = field(default_factory=dict)
    source: str = ""  # the file or reference it was unpacked from
    unpack_seconds: float | None = None

    def record(self) -> JsonObject:
        """``image.json``: everything but the root, which is where the file lies."""
        return {
            "id": self.id,
            "tags": list(self.tags),
            "digests": list(self.digests),
            "env": list(self.env),
            "labels": dict(self.labels),
            "source": self.source,
            "unpack_seconds": self.unpack_seconds,
        }


class ImageStore:
    """The unpacked images of one user (``<cache>/charliecloud/images``, or ``root``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or cache_dir() / "charliecloud" / "images"

    def all(self) -> list[StoredImage]:
        if not self.root.is_dir():
            return []
        return [img for d in sorted(self.root.iterdir()) if (img := self._read(d)) is not None]

    def find(self, ref: str) -> StoredImage | None:
        """The image ``ref`` names: its id (``sha256:…``, or 12 or more of its hex digits), a tag
        or a digest reference."""
        hexid = ref.removeprefix("sha256:")
        if re.fullmatch(r"[0-9a-f]{12,64}", hexid):
            for img in self.all():
                if img.id.removeprefix("sha256:").startswith(hexid):
                    return img
        tag = ref if ":" in ref.rsplit("/", 1)[-1] or "@" in ref else f"{ref}:latest"
        return next((img for img in self.all() if tag in img.tags or tag in img.digests), None)

    def base_id(self, ref: str) -> str | None:
        """The id of the base image ``ref`` as the images here recorded it (``org.runner.base-id``):
        Charliecloud runs the built image, never its base, so the base is known by what was built on
        it. None when none was, or they disagree."""
        ids = {
            img.labels.get("org.runner.base-id")
            for img in self.all()
            if img.labels.get("org.runner.base") == ref
        }
        ids.discard(None)
        return ids.pop() if len(ids) == 1 else None

    def remove(self, ref: str) -> bool:
        img = self.find(ref)
        if img is None:
            return False
        with self._locked(img.id):
            shutil.rmtree(img.root.parent, ignore_errors=True)
        return True

    def load_file(self, path: Path) -> StoredImage:
        """Unpack the image of a docker-archive or OCI archive file (or find it unpacked already)."""
        if not path.is_file():
            raise RunnerError(f"image file {path} not found", EXIT_USAGE)
        kind, tags = _archive_kind(path)
        return self._load(f"{kind}:{path}", tags=tuple(tags), source=str(path))

    def pull(self, ref: str) -> StoredImage | None:
        """Unpack the image ``ref`` names in its registry (a registry on this machine without TLS);
        None when no registry answers or it holds no such image, and for a name without a
        registry host (``runner-base:bookworm``): Docker Hub is not asked."""
        host = ref.split("/", 1)[0] if "/" in ref else ""
        if not ("." in host or ":" in host or host == "localhost"):
            return None
        try:
            return self._load(f"docker://{ref}", tags=(ref,) if "@" not in ref else (), source=ref)
        except RunnerError:
            return None

    def _load(self, transport: str, tags: tuple[str, ...], source: str) -> StoredImage:
        config = _skopeo(["inspect", "--config", "--raw", *_tls(transport), transport]).stdout
        image_id = "sha256:" + hashlib.sha256(config).hexdigest()
        digests = (source,) if "@sha256:" in source else ()
        with self._locked(image_id):
            found = self._read(self._dir(image_id))
            if found is not None:
                return self._write(found, tags, digests)
            started = time.time()
            rootfs = self._unpack(transport, image_id)
            cfg = json.loads(config).get("config") or {}
            img = StoredImage(
                id=image_id,
                root=rootfs,
                env=tuple(cfg.get("Env") or ()),
                labels=dict(cfg.get("Labels") or {}),
                source=source,
                unpack_seconds=round(time.time() - started, 1),
            )
            return self._write(img, tags, digests)

    def _unpack(self, transport: str, image_id: str) -> Path:
        """skopeo → OCI layout → umoci's unprivileged unpack, into a scratch dir renamed into place."""
        self.root.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=self.root))
        try:
            _skopeo(
                [
                    "copy",
                    "--quiet",
                    *_tls(transport, "--src-tls-verify"),
                    transport,
                    f"oci:{scratch / 'oci'}:image",
                ]
            )
            _run(
                [
                    "umoci",
                    "raw",
                    "unpack",
                    "--rootless",
                    "--image",
                    f"{scratch / 'oci'}:image",
                    str(scratch / ROOTFS),
                ]
            )
            shutil.rmtree(scratch / "oci")
            final = self._dir(image_id)
            if final.exists():  # an entry left without its image.json (cut short): no image, replaced
                stale = Path(tempfile.mkdtemp(prefix=".stale-", dir=self.root))
                final.rename(stale / "entry")
                shutil.rmtree(stale, ignore_errors=True)
            scratch.rename(final)
            return final / ROOTFS
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise

    def _write(self, img: StoredImage, tags: tuple[str, ...], digests: tuple[str, ...]) -> StoredImage:
        """Record ``img`` with ``tags`` and ``digests`` added; a tag moves here from any other image."""
        for other in self.all():
            if other.id != img.id and set(tags) & set(other.tags):
                moved = tuple(t for t in other.tags if t not in tags)
                _write_json(self._dir(other.id) / META, {**other.record(), "tags": list(moved)})
        merged = StoredImage(
            **{
                **asdict(img),
                "tags": tuple(dict.fromkeys((*img.tags, *tags))),
                "digests": tuple(dict.fromkeys((*img.digests, *digests))),
            }
        )
        _write_json(self._dir(img.id) / META, merged.record())
        return merged

    def _read(self, d: Path) -> StoredImage | None:
        try:
            meta = json.loads((d / META).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(meta, dict) or not _ID.match(str(meta.get("id"))) or not (d / ROOTFS).is_dir():
            return None
        known = {k: meta[k] for k in ("tags", "digests", "env") if isinstance(meta.get(k), list)}
        return StoredImage(
            id=meta["id"],
            root=d / ROOTFS,
            labels=dict(meta.get("labels") or {}),
            source=str(meta.get("source") or ""),
            unpack_seconds=meta.get("unpack_seconds"),
            **{k: tuple(str(x) for x in v) for k, v in known.items()},
        )

    def _dir(self, image_id: str) -> Path:
        return self.root / image_id.removeprefix("sha256:")

    @contextlib.contextmanager
    def _locked(self, image_id: str) -> Iterator[None]:
        """One unpack of an image at a time, across processes (a sweep's jobs load the same one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f".{image_id.removeprefix('sha256:')}.lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield


def _archive_kind(path: Path) -> tuple[str, list[str]]:
    """``docker-archive`` (with its tags) or ``oci-archive``, told by the archive's own index."""
    try:
        with tarfile.open(path) as tar:
            names = {}
            for member in tar:
                if member.name in ("manifest.json", "index.json", "oci-layout"):
                    names[member.name] = member
            if "manifest.json" in names:
                f = tar.extractfile(names["manifest.json"])
                entries = json.loads(f.read()) if f else []
                if len(entries) != 1:
                    raise RunnerError(
                        f"{path} holds {len(entries)} images; load one image's file", EXIT_USAGE
                    )
                return "docker-archive", [str(t) for t in entries[0].get("RepoTags") or []]
    except (tarfile.TarError, OSError, ValueError) as exc:
        raise RunnerError(
            f"{path} is not an image file (docker-archive or OCI archive): {exc}", EXIT_USAGE
        ) from None
    if "oci-layout" in names:
        return "oci-archive", []
    raise RunnerError(f"{path} is not an image file (docker-archive or OCI archive)", EXIT_USAGE)


def _tls(transport: str, flag: str = "--tls-verify") -> list[str]:
    """A registry on this machine answers plain HTTP (as Docker allows it for 127.0.0.1)."""
    if transport.startswith("docker://") and transport[len("docker://") :].startswith(_LOOPBACK):
        return [f"{flag}=false"]
    return []


def _skopeo(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return _run(["skopeo", *args])


def _run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    try:
        proc = subprocess.run(argv, capture_output=True, check=False)
    except FileNotFoundError:
        raise RunnerError(
            f"{argv[0]} not found: Charliecloud's images need skopeo and umoci (`make charliecloud`)",
            EXIT_ENVIRONMENT,
        ) from None
    if proc.returncode != 0:
        why = " ".join(proc.stderr.decode(errors="replace").split())[-300:]
        raise RunnerError(f"{argv[0]} {argv[1]} failed: {why}", EXIT_ENVIRONMENT)
    return proc


def _write_json(path: Path, data: JsonObject) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
