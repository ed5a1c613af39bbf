"""The one module that talks to Docker (docker-py). Everything else speaks to :class:`Engine`.

docker-py's named exceptions are caught here and re-raised as :class:`RunnerError` with a
message a researcher can act on.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import docker.errors
from docker.types import DeviceRequest, Mount

from runner.core.engine_types import ContainerRequest
from runner.core.errors import EXIT_BUILD, EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError

LABEL_RUN = "org.runner.run-id"
# Container-engine sockets: a container that can reach one controls the host, read-only mount or not.
ENGINE_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                  "/run/podman/podman.sock", "/run/user/1000/docker.sock")  # fmt: skip


def engine_sockets(env: dict[str, str] | None = None) -> list[Path]:
    """The engine sockets of this host: the well-known ones plus ``DOCKER_HOST``'s, links resolved."""
    env = os.environ if env is None else env
    paths = list(ENGINE_SOCKETS)
    host = env.get("DOCKER_HOST", "")
    if host.startswith("unix://"):
        paths.append(host[len("unix://") :])
    return sorted({Path(os.path.realpath(p)) for p in paths})


def refuse_engine_sockets(mounts: list[tuple[str, str, bool]], sockets: list[Path]) -> None:
    """Refuse a bind mount that is, or holds, an engine socket (e.g. ``dataset.root=/var/run``)."""
    for src, dst, _ in mounts:
        source = Path(os.path.realpath(src))
        for sock in sockets:
            if sock == source or sock.is_relative_to(source):
                raise RunnerError(f"refusing to mount {src} at {dst}: it holds the container engine's socket "
                                  f"{sock}, which would hand the container the host", EXIT_USAGE)  # fmt: skip


class Engine:
    def __init__(self, client: docker.DockerClient):
        self.client = client

    @classmethod
    def connect(cls) -> Engine:
        try:
            client = docker.from_env(timeout=120)
            client.ping()
        except docker.errors.DockerException as exc:
            host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
            raise RunnerError(
                f"Docker engine not reachable at {host} — is dockerd running? (`make setup` starts it; "
                f"or use launch.backend=host) [{type(exc).__name__}]",
                EXIT_ENVIRONMENT,
            ) from None
        return cls(client)

    # -- facts -------------------------------------------------------------------------------------
    def version(self) -> dict:
        v = self.client.version()
        return {"version": v.get("Version"), "api_version": v.get("ApiVersion"), "os": v.get("Os"),
                "arch": v.get("Arch"), "kernel": v.get("KernelVersion")}  # fmt: skip

    def _image(self, ref: str):
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
        ctx = Path(tempfile.mkdtemp(prefix="runner-build-"))
        log: list[str] = []
        try:
            shutil.copy2(dockerfile, ctx / "Dockerfile")
            for name, src in files.items():
                if src.is_dir():
                    shutil.copytree(src, ctx / name, copy_function=_link_or_copy)
                else:
                    _link_or_copy(src, ctx / name)
            stream = self.client.api.build(
                path=str(ctx), tag=tag, buildargs=buildargs, labels=labels, network_mode="none",
                rm=True, forcerm=True, pull=False, decode=True,
            )  # fmt: skip
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
            return image_id or self.client.images.get(tag).id
        except docker.errors.DockerException as exc:
            tail = " | ".join(log[-5:])
            raise RunnerError(f"image build failed for {tag}: {exc} {tail}".strip(), EXIT_BUILD) from None
        finally:
            shutil.rmtree(ctx, ignore_errors=True)

    # -- containers --------------------------------------------------------------------------------
    def start(self, req: ContainerRequest):
        device_requests = None
        if req.gpus is not None:
            if req.gpus == -1:
                device_requests = [DeviceRequest(count=-1, capabilities=[["gpu"]])]
            elif isinstance(req.gpus, int):
                device_requests = [DeviceRequest(count=req.gpus, capabilities=[["gpu"]])]
            else:
                device_requests = [DeviceRequest(device_ids=[str(g) for g in req.gpus], capabilities=[["gpu"]])]
        refuse_engine_sockets(req.mounts, engine_sockets())
        mounts = [Mount(target=dst, source=src, type="bind", read_only=ro) for src, dst, ro in req.mounts]
        try:
            return self.client.containers.run(
                req.image,
                command=req.command,
                name=req.name,
                environment=req.environment,
                user=req.user,
                mounts=mounts,
                working_dir=req.working_dir,
                network_mode="none",
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={"/tmp": "rw,exec,nosuid,size=2g"},
                ipc_mode="private",  # DDP ranks share one container's IPC namespace; nothing from the host
                shm_size=req.shm_size,
                cpuset_cpus=req.cpuset_cpus,
                mem_limit=req.mem_limit,
                device_requests=device_requests,
                labels=req.labels,
                detach=True,
                auto_remove=False,
            )
        except docker.errors.ImageNotFound:
            raise RunnerError(f"image {req.image} not found", EXIT_ENVIRONMENT) from None
        except docker.errors.APIError as exc:
            raise RunnerError(f"cannot start container {req.name}: {exc.explanation}", EXIT_ENVIRONMENT) from None

    @staticmethod
    def stream_logs(container) -> Iterator[str]:
        buf = b""
        for chunk in container.logs(stream=True, follow=True):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                yield line.decode(errors="replace")
        if buf:
            yield buf.decode(errors="replace")

    @staticmethod
    def wait(container) -> dict:
        result = container.wait()
        container.reload()
        state = container.attrs.get("State", {})
        return {"exit_code": int(result.get("StatusCode", -1)), "oom_killed": bool(state.get("OOMKilled"))}

    @staticmethod
    def stop_and_remove(container, timeout: int = 10) -> None:
        """Stop (SIGTERM, then SIGKILL after ``timeout`` s) and remove; a container already gone is fine."""
        with contextlib.suppress(docker.errors.DockerException):
            container.stop(timeout=timeout)
        with contextlib.suppress(docker.errors.DockerException):
            container.remove(force=True)

    def remove_named(self, name: str) -> None:
        """Remove the container called ``name`` if it exists (one created but never started)."""
        with contextlib.suppress(docker.errors.DockerException):
            self.client.containers.get(name).remove(force=True)

    def containers_labelled(self, key: str, value: str | None = None) -> list:
        """Containers (running or not) carrying the label; one removed while listing is left out."""
        label = key if value is None else f"{key}={value}"
        return self.client.containers.list(all=True, filters={"label": label}, ignore_removed=True)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
