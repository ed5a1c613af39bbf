"""The one module that talks to Docker (docker-py): :class:`DockerEngine`, the default
:class:`~runner.host.engine.Engine`. Nothing of docker-py leaves it: containers are handed out
as :class:`~runner.host.engine.Container` handles, and docker-py's named exceptions are caught
here and re-raised as :class:`RunnerError` with a message a researcher can act on.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
from docker.types import DeviceRequest, Mount

from runner.core.engine_types import ContainerRequest, EngineInfo
from runner.core.errors import EXIT_BUILD, EXIT_ENVIRONMENT, RunnerError
from runner.host.engine import Container, ContainerExit, engine_sockets, refuse_engine_sockets


class DockerEngine:
    """Docker through docker-py; also any engine that speaks Docker's API (Podman's service).

    ``base_url`` is the engine's address (None: ``DOCKER_HOST``, else the local socket);
    ``timeout`` bounds each API call, in seconds.
    """

    def __init__(self, base_url: str | None = None, timeout: int = 120) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._info: EngineInfo | None = None
        self._lifelines: dict[str, _Lifeline] = {}

    def connect(self) -> None:
        if self._client is not None:
            return
        try:
            if self.base_url:
                client = docker.DockerClient(base_url=self.base_url, timeout=self.timeout)
            else:
                client = docker.from_env(timeout=self.timeout)
            client.ping()
        except docker.errors.DockerException as exc:
            host = self.base_url or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            raise RunnerError(
                f"Docker engine not reachable at {host} — is dockerd running? (`make setup` starts it; "
                f"or use launch.backend=host) [{type(exc).__name__}]",
                EXIT_ENVIRONMENT,
            ) from None
        self._client = client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self._info = None

    @property
    def client(self) -> docker.DockerClient:
        """The docker-py client (connecting first, if need be), for this module and for tests
        that inspect what the engine did."""
        if self._client is None:
            self.connect()
        assert self._client is not None
        return self._client

    # -- facts -------------------------------------------------------------------------------------
    def version(self) -> dict[str, Any]:
        v = self.client.version()
        return {
            "version": v.get("Version"),
            "api_version": v.get("ApiVersion"),
            "os": v.get("Os"),
            "arch": v.get("Arch"),
            "kernel": v.get("KernelVersion"),
        }

    def describe(self) -> EngineInfo:
        """Docker, or Podman's service when that is what answers (its version says so); rootless
        when the engine says so. A rootless engine on cgroup v1 cannot limit cores or memory."""
        if self._info is None:
            v, info = self.client.version(), self.client.info()
            names = " ".join(str(c.get("Name", "")) for c in v.get("Components") or []).lower()
            rootless = any("rootless" in str(o) for o in info.get("SecurityOptions") or [])
            cgroup_v1 = str(info.get("CgroupVersion", "2")) == "1"
            self._info = EngineInfo(
                name="podman" if "podman" in names else "docker",
                version=v.get("Version"),
                rootless=rootless,
                cannot_enforce=("cpuset_cpus", "mem_limit") if rootless and cgroup_v1 else (),
            )
        return self._info

    def _image(self, ref: str) -> Any:
        """The local image ``ref`` names, or None; an engine that refuses the question is one line."""
        try:
            return self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return None
        except docker.errors.APIError as exc:
            raise RunnerError(f"cannot inspect image {ref}: {exc.explanation}", EXIT_ENVIRONMENT) from None

    def image_id(self, ref: str) -> str | None:
        image = self._image(ref)
        return image.id if image else None

    def image_digest(self, ref: str) -> str | None:
        image = self._image(ref)
        digests = (image.attrs.get("RepoDigests") or []) if image else []
        return digests[0].split("@", 1)[1] if digests else None

    def pull(self, ref: str) -> str | None:
        """Pull a reference; None when no registry answers (the caller decides what that means)."""
        try:
            return self.client.images.pull(ref).id
        except docker.errors.DockerException:
            return None

    def remove_image(self, ref: str) -> bool:
        try:
            self.client.images.remove(ref, force=True)
            return True
        except docker.errors.ImageNotFound:
            return False

    def read_image_file(self, image: str, path: str) -> bytes:
        """A file's bytes from an image, without starting a container."""
        container = self.client.containers.create(image, command=["true"], network_mode="none")
        try:
            stream, _ = container.get_archive(path)
            with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
                member = tar.next()
                f = tar.extractfile(member) if member else None
                return f.read() if f else b""
        except docker.errors.NotFound:
            raise RunnerError(f"{path} not found in image {image}", EXIT_ENVIRONMENT) from None
        finally:
            container.remove(force=True)

    # -- build -------------------------------------------------------------------------------------
    def build(
        self,
        tag: str,
        dockerfile: Path,
        files: dict[str, Path],
        buildargs: dict[str, str],
        labels: dict[str, str],
        on_line: Callable[[str], None],
    ) -> str:
        """Build ``tag`` with no network from a context holding the Dockerfile and ``files``.

        ``files`` maps a context name to a host file or directory; directories are hard-linked
        where possible so a multi-GB wheelhouse costs no copy. Returns the image id.
        """
        ctx = _build_context(dockerfile, files)
        log: list[str] = []
        try:
            stream = self.client.api.build(
                path=str(ctx),
                tag=tag,
                buildargs=buildargs,
                labels=labels,
                network_mode="none",
                rm=True,
                forcerm=True,
                pull=False,
                decode=True,
            )
            return _follow_build(stream, tag, log, on_line) or self.client.images.get(tag).id
        except docker.errors.DockerException as exc:
            tail = " | ".join(log[-5:])
            raise RunnerError(f"image build failed for {tag}: {exc} {tail}".strip(), EXIT_BUILD) from None
        finally:
            shutil.rmtree(ctx, ignore_errors=True)

    # -- containers --------------------------------------------------------------------------------
    def start(self, req: ContainerRequest) -> Container:
        """Create, then start: an image that is not here is an error, never a pull from a registry."""
        refuse_engine_sockets(req.mounts, engine_sockets(also=[self.base_url]))
        api = self.client.api
        skip = set(self.describe().cannot_enforce)  # the run has said so, and records it
        mounts = [Mount(target=dst, source=src, type="bind", read_only=ro) for src, dst, ro in req.mounts]
        host_config = api.create_host_config(
            mounts=mounts,
            network_mode="host" if req.network == "host" else "none",
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            read_only=True,
            tmpfs={"/tmp": "rw,exec,nosuid,size=2g"},
            ipc_mode="private",  # DDP ranks share one container's IPC namespace; nothing from the host
            shm_size=req.shm_size,
            cpuset_cpus=None if "cpuset_cpus" in skip else req.cpuset_cpus,
            mem_limit=None if "mem_limit" in skip else req.mem_limit,
            device_requests=_device_requests(req.gpus),
            auto_remove=req.lifeline,
        )
        try:
            cid = api.create_container(
                req.image,
                command=req.command,
                name=req.name,
                environment=req.environment,
                user=req.user,
                working_dir=req.working_dir,
                labels=req.labels,
                host_config=host_config,
                stdin_open=req.lifeline,  # with detach=False, docker-py sets StdinOnce along with it
            )["Id"]
        except docker.errors.ImageNotFound:
            raise RunnerError(f"image {req.image} not found", EXIT_ENVIRONMENT) from None
        except docker.errors.APIError as exc:
            raise RunnerError(
                f"cannot create container {req.name}: {exc.explanation}", EXIT_ENVIRONMENT
            ) from None
        try:
            if req.lifeline:  # held before the container runs, as `docker run -i` attaches first
                self._lifelines[cid] = _Lifeline(api, cid)
            api.start(cid)
        except docker.errors.APIError as exc:
            self._lifelines.pop(cid, None)
            with contextlib.suppress(docker.errors.DockerException):
                api.remove_container(cid, force=True)
            raise RunnerError(
                f"cannot start container {req.name}: {exc.explanation}", EXIT_ENVIRONMENT
            ) from None
        return Container(id=cid, name=req.name)

    def stream_logs(self, container: Container) -> Iterator[str]:
        buf = b""
        try:
            for chunk in self.client.api.logs(container.id, stream=True, follow=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield line.decode(errors="replace")
        except docker.errors.NotFound:  # removed from outside: its log ends here
            pass
        if buf:
            yield buf.decode(errors="replace")

    def wait(self, container: Container) -> ContainerExit:
        lifeline = self._lifelines.pop(container.id, None)
        if lifeline is not None:  # removed as it ended: its status is what the waiter saw
            return ContainerExit(exit_code=lifeline.exit_code(), oom_killed=False)
        try:
            result = self.client.api.wait(container.id)
            state = self.client.api.inspect_container(container.id).get("State", {})
        except docker.errors.NotFound:
            raise RunnerError(
                f"container {container.name} was removed before it ended", EXIT_ENVIRONMENT
            ) from None
        return ContainerExit(
            exit_code=int(result.get("StatusCode", -1)), oom_killed=bool(state.get("OOMKilled"))
        )

    def stop_and_remove(self, container: Container, timeout: int = 10) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self.client.api.stop(container.id, timeout=timeout)
        with contextlib.suppress(docker.errors.DockerException):
            self.client.api.remove_container(container.id, force=True)

    def remove_named(self, name: str) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self.client.api.remove_container(name, force=True)

    def containers_labelled(self, key: str, value: str | None = None) -> list[Container]:
        label = key if value is None else f"{key}={value}"
        found = self.client.api.containers(all=True, filters={"label": label})
        return [Container(id=c["Id"], name=(c.get("Names") or ["/"])[0].lstrip("/")) for c in found]


class _Lifeline:
    """A container's life tied to this process. Before the container starts, a thread waits for
    its removal (its exit status comes with it: an auto-removed container cannot be inspected
    after) and this process attaches to its standard input, holding it open. When this process ends,
    however it ends, the kernel closes that connection, the engine closes the container's stdin
    (``stdin_once``), and the worker, watching it, stops."""

    def __init__(self, api: Any, container_id: str):
        self.api, self.id = api, container_id
        self._status: dict[str, Any] = {}
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()
        self._socket = api.attach_socket(container_id, params={"stdin": 1, "stream": 1})

    def _wait(self) -> None:
        try:
            self._status.update(self.api.wait(self.id, condition="removed"))
        except Exception:  # noqa: BLE001 - docker-py's or requests' errors alike: the status is unknown
            self._status["StatusCode"] = -1

    def exit_code(self) -> int:
        self._waiter.join()
        return int(self._status.get("StatusCode", -1))


def _device_requests(gpus: list[str] | int | None) -> list[DeviceRequest] | None:
    """``ContainerRequest.gpus`` as Docker's device requests: None, all (-1), a count, or ids."""
    if gpus is None:
        return None
    if isinstance(gpus, int):
        return [DeviceRequest(count=gpus, capabilities=[["gpu"]])]
    return [DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])]


def _build_context(dockerfile: Path, files: dict[str, Path]) -> Path:
    """A temporary build context: the Dockerfile and ``files`` (directories hard-linked where
    possible). The caller removes it."""
    ctx = Path(tempfile.mkdtemp(prefix="runner-build-"))
    try:
        shutil.copy2(dockerfile, ctx / "Dockerfile")
        for name, src in files.items():
            if src.is_dir():
                shutil.copytree(src, ctx / name, copy_function=_link_or_copy)
            else:
                _link_or_copy(src, ctx / name)
    except BaseException:
        shutil.rmtree(ctx, ignore_errors=True)
        raise
    return ctx


def _follow_build(
    stream: Iterable[Mapping[str, Any]], tag: str, log: list[str], on_line: Callable[[str], None]
) -> str | None:
    """Read the build's output: each line to ``on_line`` and ``log``; an error ends the build in
    one line with its last lines. Returns the image id when the engine named it."""
    image_id = None
    for chunk in stream:
        if "error" in chunk:
            log.append(str(chunk["error"]).strip())
            tail = " | ".join(x for x in log[-6:] if x)
            raise RunnerError(f"image build failed for {tag}: {tail}", EXIT_BUILD)
        line = str(chunk.get("stream", "")).rstrip()
        if line:
            log.append(line)
            on_line(line)
        if "aux" in chunk and "ID" in chunk["aux"]:
            image_id = chunk["aux"]["ID"]
    return image_id


def _link_or_copy(src: str | Path, dst: str | Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
