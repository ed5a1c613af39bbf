"""Images as files: what ``runner export`` writes and ``runner import`` / ``replay --image`` read.

A file holds one image, and the same image always gives the same bytes (entries sorted, owned by
root, dated 1970-01-01 or the image's own creation time), so a file's sha256 can be recorded,
compared and published beside a paper:

* ``docker-archive`` — ``docker save``'s layout (``manifest.json``, the image config, one tar per
  layer), naming the image by its recorded tag. Docker and Podman ``load`` it; Apptainer builds
  from it (``apptainer build x.sif docker-archive:FILE``).
* ``oci`` — an OCI image layout in one tar (``oci-layout``, ``index.json``, ``blobs/sha256/…``):
  the image config's bytes unchanged, so the config digest is still the image id, and layers
  uncompressed, so each layer's digest is its content's. Podman, skopeo and Apptainer
  (``oci-archive:FILE``) read it.
* ``squashfs`` — the image's file tree, layers applied, in enroot's layout (``/etc/environment``,
  ``/etc/rc``, ``/etc/rc.local``, ``/etc/fstab`` from the config): ``srun --container-image=FILE``
  (pyxis) or ``enroot create``. Read-only; made by ``mksquashfs`` (squashfs-tools, reproducible).

Loading a docker-archive or an OCI file gives the image its id back: the sha256 of its config,
which names every layer's content, so an id that matches a record is the recorded image, bit for bit.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, TypedDict

from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.core.json_types import Fields, JsonObject
from runner.host.engine import Engine

DOCKER_ARCHIVE, OCI, SQUASHFS = "docker-archive", "oci", "squashfs"
FORMATS = (DOCKER_ARCHIVE, OCI, SQUASHFS)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"  # uncompressed: its digest is its content's
CHUNK = 1 << 20
# enroot's own default (ENROOT_SQUASH_OPTIONS): nothing compressed, so its mounts read at disk speed
ENROOT_SQUASH_OPTIONS = ("-comp", "lzo", "-noI", "-noD", "-noF", "-noX", "-no-duplicates")


@dataclass(frozen=True)
class ImageFile:
    """An image written as one file: what it is (``image_id``: the config digest every engine calls
    the image) and what the file is (``sha256`` of its bytes). ``oci_manifest`` is the digest of
    the OCI manifest inside an ``oci`` file (what ``skopeo inspect`` shows); None otherwise."""

    path: Path
    format: str
    sha256: str
    bytes: int
    image_id: str
    tag: str
    oci_manifest: str | None = None

    def to_json(self) -> JsonObject:
        return {
            "file": self.path.name,
            "format": self.format,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "image_id": self.image_id,
            "tag": self.tag,
            "oci_manifest_digest": self.oci_manifest,
        }


class SavedEntry(TypedDict, total=False):
    """The one entry of a docker-archive's ``manifest.json``."""

    Config: str  # the image config's member name
    RepoTags: list[str] | None
    Layers: list[str]  # the layers' member names, bottom first


class Descriptor(TypedDict):
    """An OCI content descriptor: what a blob is, its digest and size."""

    mediaType: str
    digest: str
    size: int


@dataclass(frozen=True)
class ImageConfig:
    """What enroot's files are made of, from an image config (``config`` of the OCI image config)."""

    created: int  # whole seconds since the epoch (0 when it names none)
    working_dir: str = "/"
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None  # None: none (``/bin/sh`` without an entrypoint)
    env: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict)
    volumes: tuple[str, ...] = ()

    @classmethod
    def from_json(cls, data: object, where: str = "the image config") -> ImageConfig:
        doc = Fields.of(data, where)
        f = Fields.of(doc.opt_obj("config") or {}, f"{where}: config")
        labels, volumes = f.opt_obj("Labels") or {}, f.opt_obj("Volumes") or {}
        cmd = f.opt_list("Cmd")
        return cls(
            created=_created(doc.data.get("created")),
            working_dir=f.opt_str("WorkingDir") or "/",
            entrypoint=tuple(str(a) for a in f.opt_list("Entrypoint") or []),
            cmd=None if not cmd else tuple(str(a) for a in cmd),
            env=tuple(str(e) for e in f.opt_list("Env") or []),
            labels={str(k): str(v) for k, v in labels.items()},
            volumes=tuple(sorted(volumes)),
        )


@dataclass(frozen=True)
class _Saved:
    """An engine's docker-archive, opened: its config, and its layers bottom first."""

    tar: tarfile.TarFile
    entry: SavedEntry  # manifest.json's one entry
    config: bytes

    @property
    def layers(self) -> list[str]:
        return [str(name) for name in self.entry.get("Layers") or []]

    def layer(self, name: str) -> IO[bytes]:
        f = self.tar.extractfile(self.tar.getmember(name))  # a link (podman's layout) resolved
        if f is None:
            raise RunnerError(f"the saved image has no layer {name}", EXIT_ENVIRONMENT)
        return f


def export(engine: Engine, image_id: str, tag: str, out: Path, fmt: str) -> ImageFile:
    """Write the image ``image_id`` to ``out`` as ``fmt``, naming it ``tag``; whole or not at all."""
    if fmt not in FORMATS:
        raise RunnerError(f"--format {fmt!r}: one of {', '.join(FORMATS)}", EXIT_USAGE)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
        work = Path(tmp)
        raw = work / "saved.tar"
        with raw.open("wb") as f:
            engine.save(image_id, f)  # by id: the same archive whatever names the image has here
        made = work / "image"
        with tarfile.open(raw) as tar:
            saved = _open_saved(tar, image_id)
            oci = None
            if fmt == DOCKER_ARCHIVE:
                _write_docker_archive(saved, tag, made)
            elif fmt == OCI:
                oci = _write_oci(saved, tag, made)
            else:
                _write_squashfs(saved, work / "rootfs", made)
        digest, size = _sha256(made)
        os.replace(made, out)
    return ImageFile(out, fmt, digest, size, image_id, tag, oci)


def _open_saved(tar: tarfile.TarFile, image_id: str) -> _Saved:
    try:
        entries = json.load(_member(tar, "manifest.json"))
        entry = entries[0]
        config = _member(tar, entry["Config"]).read()
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise RunnerError(
            f"the engine saved {image_id} in a form the runner cannot read: {exc}", EXIT_ENVIRONMENT
        ) from None
    if len(entries) != 1 or "sha256:" + hashlib.sha256(config).hexdigest() != image_id:
        raise RunnerError(f"the engine saved something other than image {image_id}", EXIT_ENVIRONMENT)
    return _Saved(tar, entry, config)


def _member(tar: tarfile.TarFile, name: str) -> IO[bytes]:
    f = tar.extractfile(name)
    if f is None:
        raise KeyError(name)
    return f


# -- docker-archive and OCI: one tar, entries sorted, headers pinned ----------------------------------
def _header(name: str, size: int = 0, mode: int = 0o644, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.type, info.mtime = size, mode, kind, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _write_docker_archive(saved: _Saved, tag: str, out: Path) -> None:
    """The saved archive again, sorted and pinned, its ``manifest.json`` naming ``tag``."""
    manifest = _canonical([{**saved.entry, "RepoTags": [tag]}])
    members = {m.name: m for m in saved.tar.getmembers() if m.name not in ("manifest.json", "repositories")}
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as dst:
        for name in sorted([*members, "manifest.json"]):
            if name == "manifest.json":
                dst.addfile(_header(name, len(manifest)), io.BytesIO(manifest))
                continue
            m = members[name]
            if m.isdir():
                dst.addfile(_header(name, mode=0o755, kind=tarfile.DIRTYPE))
            elif m.issym() or m.islnk():
                link = _header(name, mode=0o777 if m.issym() else 0o644, kind=m.type)
                link.linkname = m.linkname
                dst.addfile(link)
            else:
                dst.addfile(_header(name, m.size), saved.tar.extractfile(m))


def _write_oci(saved: _Saved, tag: str, out: Path) -> str:
    """An OCI image layout in one tar; returns its manifest's digest."""
    layers: list[tuple[Descriptor, str]] = []
    for name in saved.layers:
        digest, size = _sha256_stream(saved.layer(name))
        layers.append(({"mediaType": OCI_LAYER, "digest": f"sha256:{digest}", "size": size}, name))
    config_digest = "sha256:" + hashlib.sha256(saved.config).hexdigest()
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": len(saved.config),
            },
            "layers": [desc for desc, _ in layers],
        }
    )
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = _oci_index(manifest_digest, len(manifest), tag)
    blobs: dict[str, tuple[int, Any]] = {
        config_digest: (len(saved.config), lambda: io.BytesIO(saved.config)),
        manifest_digest: (len(manifest), lambda: io.BytesIO(manifest)),
    }
    for desc, name in layers:
        blobs[str(desc["digest"])] = (int(desc["size"]), functools.partial(saved.layer, name))
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as dst:
        for d in ("blobs/", "blobs/sha256/"):
            dst.addfile(_header(d, mode=0o755, kind=tarfile.DIRTYPE))
        for digest in sorted(blobs):
            size, reader = blobs[digest]
            dst.addfile(_header(f"blobs/sha256/{digest.split(':', 1)[1]}", size), reader())
        dst.addfile(_header("index.json", len(index)), io.BytesIO(index))
        layout = b'{"imageLayoutVersion":"1.0.0"}'
        dst.addfile(_header("oci-layout", len(layout)), io.BytesIO(layout))
    return manifest_digest


def _oci_index(manifest_digest: str, size: int, tag: str) -> bytes:
    """``index.json``: the one manifest, named by the image's tag."""
    desc = {
        "mediaType": OCI_MANIFEST,
        "digest": manifest_digest,
        "size": size,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }
    return _canonical({"schemaVersion": 2, "manifests": [desc]})


# -- squashfs in enroot's layout ------------------------------------------------------------------------
def _write_squashfs(saved: _Saved, root: Path, out: Path) -> None:
    """The image's tree (its layers applied, whiteouts honoured, ``/dev`` left empty as enroot
    does), enroot's configuration files from the image config, then ``mksquashfs`` with every
    owner root and the file system's own time pinned to the image's creation time."""
    if shutil.which("mksquashfs") is None:
        raise RunnerError(
            "--format squashfs needs mksquashfs (squashfs-tools): `make registry` installs it",
            EXIT_ENVIRONMENT,
        )
    try:
        config = ImageConfig.from_json(json.loads(saved.config))
    except ValueError as exc:  # not JSON, or not an image config (ContractError)
        raise RunnerError(f"the image config cannot be read: {exc}", EXIT_ENVIRONMENT) from None
    pinned = config.created
    root.mkdir()
    dir_times = unpack((saved.layer(name) for name in saved.layers), root)
    _enroot_files(root, config)
    for here, _, _ in os.walk(root, topdown=False):
        rel = os.path.relpath(here, root)
        t = dir_times.get(rel, pinned)
        os.utime(here, (t, t), follow_symlinks=False)
    cmd = ["mksquashfs", str(root), str(out), "-noappend", "-all-root", "-no-xattrs", "-reproducible"]
    cmd += ["-mkfs-time", str(pinned), "-no-progress", "-quiet", *ENROOT_SQUASH_OPTIONS]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        why = " ".join((done.stderr or done.stdout).split())[-300:]
        raise RunnerError(f"mksquashfs failed: {why}", EXIT_ENVIRONMENT)


def unpack(layers: Iterable[IO[bytes]], root: Path) -> dict[str, int]:
    """Apply layer tars, bottom first, onto the directory ``root``: a whiteout (``.wh.NAME``)
    removes what a lower layer put there, an opaque one (``.wh..wh..opq``) all of it; ``/dev`` stays
    empty. An entry that leaves the tree or goes through a link is refused. Returns each
    directory's time as its top layer gives it (set them once the tree is whole)."""
    dir_times: dict[str, int] = {}
    for f in layers:
        with tarfile.open(fileobj=f, mode="r|") as layer:
            for member in layer:
                _apply(layer, member, root, dir_times)
    return dir_times


def _created(value: object) -> int:
    """An image config's ``created``, whole seconds since the epoch (0 when it names none)."""
    created = str(value or "")
    try:
        return int(datetime.fromisoformat(created[:19] + "+00:00").timestamp()) if created else 0
    except ValueError:
        return 0


def _apply(layer: tarfile.TarFile, member: tarfile.TarInfo, root: Path, dir_times: dict[str, int]) -> None:
    """One entry of a layer onto the tree: a whiteout removes, anything else replaces what was there."""
    name = os.path.normpath(member.name.lstrip("/"))
    parts = name.split("/")
    if name in (".", "") or ".." in parts:
        if name in (".", ""):
            return
        raise RunnerError(f"a layer entry leaves the image's tree: {member.name!r}", EXIT_ENVIRONMENT)
    if parts[0] == "dev" and len(parts) > 1:
        return  # enroot mounts its own /dev
    parent = root.joinpath(*parts[:-1])
    _inside(root, parts[:-1], member.name)
    if member.islnk():  # a hard link's target is a path in the tree too, and is followed
        target_parts = os.path.normpath(member.linkname.lstrip("/")).split("/")
        if ".." in target_parts:
            raise RunnerError(f"a layer's link leaves the image's tree: {member.name!r}", EXIT_ENVIRONMENT)
        _inside(root, target_parts, member.name)
    base = parts[-1]
    if base == ".wh..wh..opq":  # an opaque directory: nothing below it from lower layers
        for child in list(parent.iterdir()) if parent.is_dir() else []:
            _remove(child)
        return
    if base.startswith(".wh."):
        _remove(parent / base[4:])
        return
    target = root / name
    if (target.exists() or target.is_symlink()) and not (
        member.isdir() and target.is_dir() and not target.is_symlink()
    ):
        _remove(target)
    member.name = name
    layer.extract(member, root, set_attrs=True, numeric_owner=True, filter="fully_trusted")
    if member.isdir():
        dir_times[name] = int(member.mtime)  # set once the tree is whole: later entries touch it
        return
    dir_times.pop(name, None)
    if member.issym():  # tarfile dates files, not links
        os.utime(target, (member.mtime, member.mtime), follow_symlinks=False)


def _inside(root: Path, parts: list[str], name: str) -> None:
    """Refuse a path in the tree whose way goes through a link (it would lead out of the tree)."""
    for i in range(1, len(parts) + 1):
        if root.joinpath(*parts[:i]).is_symlink():
            raise RunnerError(f"a layer entry goes through a link: {name!r}", EXIT_ENVIRONMENT)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _enroot_files(root: Path, cfg: ImageConfig) -> None:
    """``/etc/environment``, ``/etc/fstab``, ``/etc/rc`` and ``/etc/rc.local`` as enroot reads
    them: the image's variables, its volumes as bind mounts, its labels, working dir and command."""
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    workdir = cfg.working_dir
    (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    command = list(cfg.entrypoint)
    args = list(cfg.cmd or ([] if command else ["/bin/sh"]))
    rc = [f"# {k} {v}" for k, v in sorted(cfg.labels.items())]
    rc += [
        "",
        f"mkdir -p {_quote(workdir)} 2> /dev/null",
        f"cd {_quote(workdir)} && unset OLDPWD || exit 1",
        "",
        "if [ -s /etc/rc.local ]; then",
        "    . /etc/rc.local",
        "fi",
        "",
        "if [ $# -gt 0 ]; then",
        " ".join(["    exec", *map(_quote, command), '"$@"']),
        "else",
        " ".join(["    exec", *map(_quote, [*command, *args])]),
        "fi",
    ]
    files = {
        "environment": "".join(f"{line}\n" for line in cfg.env),
        "fstab": "".join(
            f"${{ENROOT_ROOTFS}}{v} {v} none x-create=dir,bind,rw,nosuid,nodev\n" for v in cfg.volumes
        ),
        "rc": "\n".join(rc) + "\n",
        "rc.local": "# Sourced by /etc/rc when the container starts (enroot's layout, by runner export).\n",
    }
    for name, text in files.items():
        path = etc / name
        _remove(path)
        path.write_text(text)
        path.chmod(0o644)
        os.utime(path, (cfg.created, cfg.created))


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


# -- reading ----------------------------------------------------------------------------------------------
def sniff(path: Path) -> str:
    """The format of an image file, from its content; one line when it is none the runner reads."""
    if not path.is_file():
        raise RunnerError(f"{path}: no such image file", EXIT_USAGE)
    with path.open("rb") as f:
        if f.read(4) in (b"hsqs", b"sqsh"):
            return SQUASHFS
    try:
        with tarfile.open(path, "r:") as tar:
            names = set(tar.getnames())
    except (tarfile.TarError, OSError) as exc:
        raise RunnerError(
            f"{path} is not an image file (a docker-archive or OCI tar): {exc}", EXIT_USAGE
        ) from None
    if "manifest.json" in names:
        return DOCKER_ARCHIVE
    if "oci-layout" in names and "index.json" in names:
        return OCI
    raise RunnerError(f"{path} is a tar archive but no image (no manifest.json, no oci-layout)", EXIT_USAGE)


def load(engine: Engine, path: Path, expect: str | None = None) -> list[str]:
    """Load the image file into ``engine``; the ids of the images it held. An OCI file goes through
    skopeo into a docker-archive first (its config unchanged: the same id). With ``expect`` (an
    image id), a file that does not hold that image is not loaded at all (its names would move
    tags in the engine): the ids it holds are returned for the caller to refuse."""
    fmt = sniff(path)
    if fmt == SQUASHFS:
        raise RunnerError(
            f"{path} is a squashfs (for enroot: srun --container-image=FILE): load a docker-archive or oci",
            EXIT_USAGE,
        )
    if fmt == DOCKER_ARCHIVE:
        return _load_archive(engine, path, expect)
    if shutil.which("skopeo") is None:
        raise RunnerError(
            f"loading the OCI file {path} needs skopeo: `make registry` installs it", EXIT_ENVIRONMENT
        )
    with tempfile.TemporaryDirectory(prefix="runner-import-") as tmp:
        archive = Path(tmp) / "image.tar"
        named = f"docker-archive:{archive}" + (f":{name}" if (name := _oci_name(path)) else "")
        done = subprocess.run(
            ["skopeo", "copy", "-q", f"oci-archive:{path}", named],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            why = " ".join(done.stderr.split())[-300:]
            raise RunnerError(f"cannot read the OCI file {path}: {why}", EXIT_USAGE)
        return _load_archive(engine, archive, expect, shown=path)


def _load_archive(engine: Engine, archive: Path, expect: str | None, shown: Path | None = None) -> list[str]:
    if expect is not None:
        held = archive_ids(archive, shown or archive)
        if expect not in held:
            return held
    return engine.load(archive)


def archive_ids(archive: Path, shown: Path) -> list[str]:
    """The ids of the images a docker-archive holds (its configs' sha256), read without loading it."""
    try:
        with tarfile.open(archive) as tar:
            entries = json.load(_member(tar, "manifest.json"))
            return ["sha256:" + _sha256_stream(_member(tar, str(e["Config"])))[0] for e in entries]
    except (KeyError, IndexError, TypeError, ValueError, tarfile.TarError) as exc:
        raise RunnerError(f"{shown} is not an image file the runner reads: {exc}", EXIT_USAGE) from None


def _oci_name(path: Path) -> str | None:
    """The name ``index.json`` gives the OCI file's one image (``runner export`` writes its tag)."""
    try:
        with tarfile.open(path) as tar:
            index = json.load(_member(tar, "index.json"))
        name = index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"]
    except (KeyError, IndexError, TypeError, ValueError, tarfile.TarError):
        return None
    return name if isinstance(name, str) and ":" in name and "@" not in name else None


def _sha256(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        return _sha256_stream(f)


def _sha256_stream(f: IO[bytes]) -> tuple[str, int]:
    """The sha256 (hex) and length of what ``f`` holds."""
    h, size = hashlib.sha256(), 0
    for chunk in iter(lambda: f.read(CHUNK), b""):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size
