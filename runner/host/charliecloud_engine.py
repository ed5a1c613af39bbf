"""Charliecloud (``engine=charliecloud``): the worker under unprivileged ``ch-run``, no daemon.

A container is a process tree this engine starts and tracks; the image is a directory unpacked
from an image file or a registry (:mod:`runner.host.charliecloud_images`), cached by image id.
Each container starts as::

    unshare --user --map-current-user --keep-caps --mount --pid --fork --kill-child --mount-proc [--net]
      sh -c 'bind the read-only sources read-only; bring loopback up; exec ch-run …'
    ch-run --unset-env='*' --set-env=<the image's ENV> --set-env=<the request's variables>
      --private-tmp --no-passwd --uid U --gid G -b SRC:DST … -c WORKDIR IMAGE_DIR -- COMMAND

so the environment is exactly the image's and the request's (as under Docker; Charliecloud adds
``CH_RUNNING``), the image is read-only, the code and data are bound read-only (ch-run's own binds
are writable: the outer namespace makes their sources read-only first), and the run dir is
writable. The namespaces of its own give it no network but loopback (unless it asks for the host's)
and a pid namespace: when its first process ends, the kernel ends every process left in it, so none
outlives :meth:`CharliecloudEngine.stop_and_remove`. The processes hold no capabilities and run with
no-new-privileges (ch-run sets it).

What it cannot enforce is left out, and the run says so and records it (:data:`CANNOT_ENFORCE`):
a core set, a memory limit and the size of ``/dev/shm`` (the host's, shared) need cgroups. GPUs
are not set up for it (``ch-fromhost --nvidia``): a GPU request is refused. It does not build
images: it runs ones that Docker or Podman built, loaded from the file ``runner export`` writes
(or ``docker save``), or pulled from a registry.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import pwd
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from runner.core.engine_types import ContainerRequest, EngineInfo
from runner.core.errors import EXIT_BUILD, EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.core.json_types import Fields, JsonObject
from runner.core.manifest import EngineVersion
from runner.host import procfs
from runner.host.charliecloud_images import ImageStore, StoredImage
from runner.host.engine import Container, ContainerExit, engine_sockets, refuse_engine_sockets
from runner.host.hashing import cache_dir

NAME = "charliecloud"
# ContainerRequest fields this engine cannot enforce (recorded, and shown in one line)
CANNOT_ENFORCE = ("cpuset_cpus", "mem_limit", "shm_size")
HOW_TO_GET_AN_IMAGE = (
    "build it with engine=docker or engine=podman, then `runner export RUN_DIR -o FILE` (or "
    "`docker save IMAGE -o FILE`) and `runner import FILE --engine charliecloud`"
)
# Bind the read-only sources read-only (in the outer mount namespace: ch-run's binds of them then
# stay read-only), bring loopback up in a network namespace of its own, then become ch-run.
_PRELUDE = (
    'n=$1; shift; while [ "$n" -gt 0 ]; do '
    'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 125; shift; n=$((n-1)); done; '
    'if [ "$1" = --net ]; then ip link set lo up || exit 125; fi; shift; exec "$@"'
)
_HOST_TOOLS_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class CharliecloudEngine:
    """Charliecloud's ``ch-run``, unprivileged. ``cache_dir``: where images and the containers'
    records are kept (default: the runner's per-user cache)."""

    def __init__(self, cache_dir: str | None = None) -> None:
        self._root = Path(cache_dir).expanduser() if cache_dir else None
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._version: str | None = None

    @property
    def root(self) -> Path:
        return self._root or cache_dir() / NAME

    @property
    def images(self) -> ImageStore:
        return ImageStore(self.root / "images")

    # -- facts -----------------------------------------------------------------------------------------
    def connect(self) -> None:
        if self._version is not None:
            return
        try:
            out = subprocess.run(
                ["ch-run", "--version"], capture_output=True, text=True, env=_tool_env(), check=False
            )
        except FileNotFoundError:
            raise RunnerError(
                "Charliecloud's ch-run not found — `make charliecloud` installs it "
                "(Debian: apt-get install charliecloud)",
                EXIT_ENVIRONMENT,
            ) from None
        self._version = (
            (out.stdout or out.stderr).strip().splitlines()[-1] if out.returncode == 0 else "unknown"
        )

    def close(self) -> None:
        pass

    def version(self) -> EngineVersion:
        self.connect()
        uname = os.uname()
        return {
            "version": self._version,
            "api_version": None,
            "os": uname.sysname.lower(),
            "arch": uname.machine,
            "kernel": uname.release,
        }

    def describe(self) -> EngineInfo:
        self.connect()
        return EngineInfo(name=NAME, version=self._version, rootless=True, cannot_enforce=CANNOT_ENFORCE)

    # -- images ----------------------------------------------------------------------------------------
    def image_id(self, ref: str) -> str | None:
        img = self.images.find(ref)
        return img.id if img else self.images.base_id(ref)

    def image_digest(self, ref: str) -> str | None:
        img = self.images.find(ref)
        return img.digests[0].split("@", 1)[1] if img and img.digests else None

    def pull(self, ref: str) -> str | None:
        img = self.images.pull(ref)
        return img.id if img else None

    def load(self, archive: Path) -> list[str]:
        """Unpack the image of a docker-archive or OCI archive file (cached by its id)."""
        return [self.images.load_file(Path(archive)).id]

    def push(self, image: str, ref: str) -> str:
        """Nothing is pushed from an unpacked image; one pulled from ``ref``'s repository is there
        already, under the digest it was pulled by (what ``image.registry`` records)."""
        img = self.images.find(image)
        repository = ref.rsplit(":", 1)[0] if ":" in ref.rsplit("/", 1)[-1] else ref
        for digest_ref in img.digests if img else ():
            if digest_ref.split("@", 1)[0] == repository:
                return digest_ref.split("@", 1)[1]
        raise RunnerError(
            f"engine=charliecloud does not push images ({image} to {ref}): push where it was built "
            "(engine=docker or engine=podman)",
            EXIT_ENVIRONMENT,
        )

    def save(self, image: str, out: BinaryIO) -> None:
        raise RunnerError(
            f"engine=charliecloud keeps {image} unpacked, without its layers: export it where Docker "
            "or Podman holds it (the file it was loaded from is one already)",
            EXIT_ENVIRONMENT,
        )

    def remove_image(self, ref: str) -> bool:
        return self.images.remove(ref)

    def read_image_file(self, image: str, path: str) -> bytes:
        img = self._image(image)
        target = (img.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(img.root.resolve()) or not target.is_file():
            raise RunnerError(f"{path} not found in image {image}", EXIT_ENVIRONMENT)
        return target.read_bytes()

    def build(
        self,
        tag: str,
        dockerfile: Path,
        files: dict[str, Path],
        buildargs: dict[str, str],
        labels: dict[str, str],
        on_line: Callable[[str], None],
    ) -> str:
        raise RunnerError(
            f"engine=charliecloud does not build images, and {tag} is not here: {HOW_TO_GET_AN_IMAGE}",
            EXIT_BUILD,
        )

    def _image(self, ref: str) -> StoredImage:
        img = self.images.find(ref)
        if img is None:
            raise RunnerError(
                f"image {ref} not found in Charliecloud's images ({self.images.root}): {HOW_TO_GET_AN_IMAGE}",
                EXIT_ENVIRONMENT,
            )
        return img

    # -- containers ------------------------------------------------------------------------------------
    def start(self, req: ContainerRequest) -> Container:
        """Start ``req``'s command under ch-run; refused as root, for GPUs, and for a mount holding
        an engine socket."""
        _refuse(req)
        refuse_engine_sockets(req.mounts, engine_sockets())
        img = self._image(req.image)
        if self._named(req.name):
            raise RunnerError(
                f"cannot start container {req.name}: one of that name is running", EXIT_ENVIRONMENT
            )
        _mount_points(img.root, req)
        cid = uuid.uuid4().hex
        try:
            proc = subprocess.Popen(
                self.argv(req, img),
                stdin=subprocess.PIPE if req.lifeline else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=_tool_env(),
                cwd="/",
                start_new_session=True,  # stopped as a whole, and never by the terminal's Ctrl-C
            )
        except FileNotFoundError as exc:
            raise RunnerError(
                f"cannot start container {req.name}: {exc.filename} not found", EXIT_ENVIRONMENT
            ) from None
        self._procs[cid] = proc
        record = ContainerRecord(cid, req.name, proc.pid, _started(proc.pid), dict(req.labels))
        _write_record(self._records / f"{cid}.json", record)
        return Container(id=cid, name=req.name)

    def argv(self, req: ContainerRequest, img: StoredImage) -> list[str]:
        """The command line that starts ``req`` in ``img`` (see the module doc)."""
        uid, _, gid = req.user.partition(":")
        read_only = sorted({os.path.realpath(src) for src, _, ro in req.mounts if ro})
        own_net = req.network != "host"
        unshare = [
            "unshare",
            "--user",
            "--map-current-user",
            "--keep-caps",
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--mount-proc",
            *(["--net"] if own_net else []),
        ]
        env = [*img.env, *(f"{k}={v}" for k, v in req.environment.items())]
        ch_run = [
            "ch-run",
            "--unset-env=*",
            "--env-no-expand",
            *(f"--set-env={kv}" for kv in env),
            "--private-tmp",
            "--no-passwd",
            f"--uid={uid}",
            f"--gid={gid or uid}",
            *(f"--bind={src}:{dst}" for src, dst, _ in req.mounts),
            f"--cd={req.working_dir}",
            str(img.root),
            "--",
            *req.command,
        ]
        return [
            *unshare,
            "sh",
            "-c",
            _PRELUDE,
            "prelude",
            str(len(read_only)),
            *read_only,
            "--net" if own_net else "--host-net",
            *ch_run,
        ]

    def stream_logs(self, container: Container) -> Iterator[str]:
        proc = self._procs.get(container.id)
        if proc is None or proc.stdout is None:
            return
        for raw in proc.stdout:
            yield raw.decode(errors="replace").rstrip("\n")

    def wait(self, container: Container) -> ContainerExit:
        proc = self._procs.get(container.id)
        if proc is None:
            raise RunnerError(f"container {container.name} was removed before it ended", EXIT_ENVIRONMENT)
        code = proc.wait()
        return ContainerExit(exit_code=128 - code if code < 0 else code, oom_killed=False)

    def stop_and_remove(self, container: Container, timeout: int = 10) -> None:
        """SIGTERM to the container's first process (as ``docker stop``), SIGKILL after ``timeout``
        s; its pid namespace ends with it, so nothing it started stays."""
        proc = self._procs.pop(container.id, None)
        record = self._records / f"{container.id}.json"
        rec = None if proc else _read_record(record)
        pid = proc.pid if proc else (_live_pid(rec) if rec else None)
        if pid is not None:
            _stop(pid, timeout, proc)
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                with contextlib.suppress(OSError):
                    if stream:
                        stream.close()
        record.unlink(missing_ok=True)

    def remove_named(self, name: str) -> None:
        for container in self._named(name):
            self.stop_and_remove(container, timeout=0)

    def containers_labelled(self, key: str, value: str | None = None) -> list[Container]:
        found = []
        for rec in self._live():
            if key in rec.labels and (value is None or rec.labels[key] == value):
                found.append(Container(id=rec.id, name=rec.name))
        return found

    @property
    def _records(self) -> Path:
        path = self.root / "containers"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _live(self) -> list[ContainerRecord]:
        """The records of the containers that are here: started by this engine and not yet removed,
        or running; a record whose process is gone (its starter ended) is removed."""
        out = []
        for path in sorted(self._records.glob("*.json")):
            rec = _read_record(path)
            if rec is not None and (rec.id in self._procs or _live_pid(rec) is not None):
                out.append(rec)
            else:
                path.unlink(missing_ok=True)
        return out

    def _named(self, name: str) -> list[Container]:
        return [Container(id=r.id, name=r.name) for r in self._live() if r.name == name]


def _refuse(req: ContainerRequest) -> None:
    if os.geteuid() == 0:
        raise RunnerError(
            "engine=charliecloud runs containers unprivileged: run the runner as a non-root user", EXIT_USAGE
        )
    if req.gpus:
        raise RunnerError(
            "engine=charliecloud runs CPU work here: GPUs need the host's driver in the image "
            "(ch-fromhost --nvidia), which the runner does not set up; use engine=docker or podman",
            EXIT_USAGE,
        )
    uid = req.user.partition(":")[0]
    if not uid.isdigit() or int(uid) == 0:
        raise RunnerError(
            f"engine=charliecloud: container user {req.user!r} must be a non-root uid:gid", EXIT_USAGE
        )


def _mount_points(root: Path, req: ContainerRequest) -> None:
    """ch-run binds onto what is there: make each missing mount point (an empty directory, or file)
    in the image's unpacked copy, as Docker does in a container's own layer."""
    for src, dst, _ in req.mounts:
        point = root / dst.lstrip("/")
        if not point.resolve().is_relative_to(root.resolve()):
            raise RunnerError(f"cannot mount {src} at {dst}: it leaves the image", EXIT_USAGE)
        if os.path.isdir(src):
            point.mkdir(parents=True, exist_ok=True)
        elif not point.exists():
            point.parent.mkdir(parents=True, exist_ok=True)
            point.touch()


def _stop(pid: int, timeout: int, proc: subprocess.Popen[bytes] | None) -> None:
    """End the container whose ``unshare`` is ``pid``: its first process gets SIGTERM, all of it SIGKILL
    after ``timeout`` s (the kernel ends a pid namespace with its first process)."""
    first = _children(pid)
    for child in first if timeout > 0 else ():
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid, proc):
        time.sleep(0.05)
    for child in _children(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait()


def _alive(pid: int, proc: subprocess.Popen[bytes] | None) -> bool:
    if proc is not None:
        return proc.poll() is None
    return Path(f"/proc/{pid}").exists()


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _started(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot): with the pid, it names one process."""
    fields = procfs.stat(pid)
    return None if fields is None else fields[19]


@dataclass(frozen=True)
class ContainerRecord:
    """``containers/ID.json``: a container this engine started, found again by another process of
    the runner (its name, labels, and the process that is it: pid and start time)."""

    id: str
    name: str
    pid: int
    since: str | None  # when that pid started (:func:`_started`): with the pid, it names one process
    labels: Mapping[str, str]

    def to_json(self) -> JsonObject:
        return {
            "id": self.id,
            "name": self.name,
            "pid": self.pid,
            "since": self.since,
            "labels": dict(self.labels),
        }

    @classmethod
    def from_json(cls, data: object, where: str) -> ContainerRecord:
        f = Fields.of(data, where)
        labels = f.obj("labels", {})
        return cls(
            id=f.str_("id"),
            name=f.str_("name"),
            pid=f.int_("pid"),
            since=f.opt_str("since"),
            labels={str(k): str(v) for k, v in labels.items()},
        )


def _live_pid(rec: ContainerRecord) -> int | None:
    """The pid of a record's ``unshare`` while that very process runs, else None."""
    if rec.since is None or _started(rec.pid) != rec.since:
        return None
    return rec.pid


def _read_record(path: Path) -> ContainerRecord | None:
    """The record in ``path``; None when it cannot be read or is not one (its process is gone)."""
    try:
        return ContainerRecord.from_json(json.loads(path.read_text()), str(path))
    except (OSError, ValueError):  # ValueError: not JSON, or not a record (ContractError)
        return None


def _write_record(path: Path, rec: ContainerRecord) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec.to_json(), sort_keys=True))
    os.replace(tmp, path)


def _tool_env() -> dict[str, str]:
    """ch-run's own environment (it clears the container's): ``$USER``, which it needs, and a PATH."""
    user = os.environ.get("USER") or _user_name()
    return {"USER": user, "PATH": _HOST_TOOLS_PATH}


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return getpass.getuser()
