"""The one module that talks to Docker's API (docker-py): :class:`DockerEngine`, the default
:class:`~runner.host.engine.Engine`, and :class:`PodmanEngine`, rootless Podman through its
Docker-compatible service. Nothing of docker-py leaves it: containers are handed out
as :class:`~runner.host.engine.Container` handles, and docker-py's named exceptions are caught
here and re-raised as :class:`RunnerError` with a message a researcher can act on.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import io
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import docker
import docker.errors
from docker.types import DeviceRequest, Mount
from docker.utils import parse_repository_tag

from runner.core.engine_types import ContainerRequest, EngineInfo
from runner.core.errors import EXIT_BUILD, EXIT_ENVIRONMENT, EXIT_USAGE, EngineLost, RunnerError
from runner.core.manifest import EngineVersion
from runner.host import procfs
from runner.host.engine import Container, ContainerExit, engine_sockets, refuse_engine_sockets


class DockerEngine:
    """Docker through docker-py; also any engine that speaks Docker's API (Podman's service).

    ``base_url`` is the engine's address (None: ``DOCKER_HOST``, else the local socket);
    ``timeout`` bounds each API call, in seconds.
    """

    # what a lifeline's waiter waits for: the removal, whose answer carries the exit status
    LIFELINE_WAIT = "removed"

    def __init__(self, base_url: str | None = None, timeout: int = 120) -> None:
        self.base_url = base_url
        self.timeout = timeout
        self._client: docker.DockerClient | None = None
        self._info: EngineInfo | None = None
        self._lifelines: dict[str, _Lifeline] = {}
        self._outputs: dict[str, Any] = {}  # container id → its output, attached before it started
        self._processes: dict[str, _HostProcess] = {}  # container id → its main process, on this host

    def connect(self) -> None:
        if self._client is not None:
            return
        try:
            self._client = self._open()
        except docker.errors.DockerException as exc:
            raise self._unreachable(exc) from None

    def _open(self, timeout: int | None = None) -> docker.DockerClient:
        """A client of the engine at ``base_url`` that answered a ping (each call of ``timeout``
        seconds; None: the engine's own)."""
        timeout = timeout or self.timeout
        if self.base_url:
            client = docker.DockerClient(base_url=self.base_url, timeout=timeout)
        else:
            client = docker.from_env(timeout=timeout)
        try:
            client.ping()
        except BaseException:
            client.close()
            raise
        return client

    def _address(self) -> str:
        return self.base_url or os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")

    def _unreachable(self, exc: Exception) -> RunnerError:
        host = self._address()
        return RunnerError(
            f"Docker engine not reachable at {host} — is dockerd running? (`make setup` starts it; "
            f"or use launch.backend=host) [{type(exc).__name__}]",
            EXIT_ENVIRONMENT,
        )

    def close(self) -> None:
        for container_id in list(self._outputs):  # outputs attached and never read
            self._detach(container_id)
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
    def version(self) -> EngineVersion:
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
        except OSError as exc:  # the engine went away since it was reached (requests' errors are OSErrors)
            raise self._lost(exc) from None

    def image_id(self, ref: str) -> str | None:
        image = self._image(ref)
        return image.id if image else None

    def image_digest(self, ref: str) -> str | None:
        image = self._image(ref)
        digests = (image.attrs.get("RepoDigests") or []) if image else []
        return digests[0].split("@", 1)[1] if digests else None

    def pull(self, ref: str) -> str | None:
        """Pull a reference; None when no registry answers (the caller decides what that means);
        :class:`EngineLost` when the engine itself no longer does."""
        try:
            return self.client.images.pull(ref).id
        except docker.errors.DockerException:
            return None
        except OSError as exc:
            raise self._lost(exc) from None

    def push(self, image: str, ref: str) -> str:
        """Tag ``image`` as ``ref``, push it, and take the tag off again: the local image keeps the
        names it had (``docker rmi TAG`` still removes it). The digest is the registry's."""
        repository, tag = parse_repository_tag(ref)
        named = f"{repository}:{tag or 'latest'}"
        try:
            if not self.client.api.tag(image, repository, tag or "latest"):
                raise RunnerError(f"cannot tag {image} as {ref}", EXIT_ENVIRONMENT)
            try:
                digest = self._push(repository, tag or "latest", ref)
            finally:
                if named != image:
                    self.client.api.remove_image(named, noprune=True)
        except docker.errors.DockerException as exc:
            raise RunnerError(f"cannot push {ref}: {_why(exc)}", EXIT_ENVIRONMENT) from None
        return digest

    def _push(self, repository: str, tag: str, ref: str) -> str:
        digest = None
        for chunk in self.client.api.push(repository, tag=tag, stream=True, decode=True):
            if "error" in chunk:
                why = " ".join(str(chunk["error"]).split())
                raise RunnerError(f"cannot push {ref}: {why} — is the registry running?", EXIT_ENVIRONMENT)
            digest = (chunk.get("aux") or {}).get("Digest") or digest
        if not digest:
            raise RunnerError(f"cannot push {ref}: the engine reported no digest", EXIT_ENVIRONMENT)
        return str(digest)

    def save(self, image: str, out: BinaryIO) -> None:
        try:
            for chunk in self.client.api.get_image(image, chunk_size=1 << 20):
                out.write(chunk)
        except docker.errors.ImageNotFound:
            raise RunnerError(f"image {image} not found", EXIT_ENVIRONMENT) from None
        except docker.errors.DockerException as exc:
            raise RunnerError(f"cannot save image {image}: {_why(exc)}", EXIT_ENVIRONMENT) from None

    def load(self, archive: Path) -> list[str]:
        try:
            with open(archive, "rb") as f:
                return [image.id for image in self.client.images.load(f)]
        except docker.errors.DockerException as exc:
            raise RunnerError(f"cannot load {archive}: {_why(exc)}", EXIT_USAGE) from None

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
        except OSError as exc:  # the engine went away mid-build (requests' errors are OSErrors)
            raise self._lost(exc) from None
        finally:
            shutil.rmtree(ctx, ignore_errors=True)

    # -- containers --------------------------------------------------------------------------------
    def start(self, req: ContainerRequest) -> Container:
        """Create, then start: an image that is not here is an error, never a pull from a registry;
        an engine that stops answering meanwhile is :class:`EngineLost`."""
        refuse_engine_sockets(req.mounts, engine_sockets(also=[self.base_url]))
        try:
            return self._start(req)
        except OSError as exc:  # requests' connection errors are OSErrors
            raise self._lost(exc) from None

    def _start(self, req: ContainerRequest) -> Container:
        api = self.client.api
        cid = self._create(req, self._host_config(req))
        try:
            # its output attached before it runs, as `docker run` does: a container that ends at
            # once, removed as it ends (a lifeline's), still hands over every line it printed
            self._outputs[cid] = api.attach(cid, stdout=True, stderr=True, stream=True)
            if req.lifeline:  # held before the container runs, as `docker run -i` attaches first
                self._lifelines[cid] = _Lifeline(api, cid, self.LIFELINE_WAIT)
            api.start(cid)
            self._note_process(cid)
        except (docker.errors.APIError, OSError) as exc:
            self._lifelines.pop(cid, None)
            self._detach(cid)
            with contextlib.suppress(docker.errors.DockerException, OSError):
                api.remove_container(cid, force=True)
            if isinstance(exc, OSError):
                raise
            raise RunnerError(
                f"cannot start container {req.name}: {exc.explanation}", EXIT_ENVIRONMENT
            ) from None
        return Container(id=cid, name=req.name)

    def _note_process(self, cid: str) -> None:
        """Keep the container's main process as this host sees it: one the engine can no longer
        stop (it died) is stopped by :meth:`stop_and_remove` itself."""
        with contextlib.suppress(docker.errors.DockerException, OSError, KeyError, TypeError, ValueError):
            found = _HostProcess.of(int(self.client.api.inspect_container(cid)["State"]["Pid"]), cid)
            if found is not None:
                self._processes[cid] = found

    def _host_config(self, req: ContainerRequest) -> dict[str, Any]:
        """The container's locks and limits, as the engine's API takes them; a limit the engine
        cannot enforce (:meth:`describe`) is left out: the run has said so, and records it."""
        skip = set(self.describe().cannot_enforce)
        mounts = [Mount(target=dst, source=src, type="bind", read_only=ro) for src, dst, ro in req.mounts]
        host_config: dict[str, Any] = self.client.api.create_host_config(
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
        return host_config

    def _create(self, req: ContainerRequest, host_config: dict[str, Any]) -> str:
        """Create the container (not started); returns its id."""
        try:
            created = self.client.api.create_container(
                req.image,
                command=req.command,
                name=req.name,
                environment=req.environment,
                user=req.user,
                working_dir=req.working_dir,
                labels=req.labels,
                host_config=host_config,
                stdin_open=req.lifeline,  # with detach=False, docker-py sets StdinOnce along with it
            )
        except docker.errors.ImageNotFound:
            raise RunnerError(f"image {req.image} not found", EXIT_ENVIRONMENT) from None
        except docker.errors.APIError as exc:
            raise RunnerError(
                f"cannot create container {req.name}: {exc.explanation}", EXIT_ENVIRONMENT
            ) from None
        return str(created["Id"])

    def stream_logs(self, container: Container) -> Iterator[str]:
        """Its output as attached when it started (else its log, followed): to its end. Taken at
        once: a stop meanwhile no longer drops it."""
        return self._lines(container, self._outputs.pop(container.id, None))

    def _lines(self, container: Container, attached: Any) -> Iterator[str]:
        buf = b""
        try:
            chunks = attached or self.client.api.logs(container.id, stream=True, follow=True)
            for chunk in chunks:
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    yield line.decode(errors="replace")
        except docker.errors.NotFound:  # removed from outside: its log ends here
            pass
        finally:
            if attached is not None:
                attached.close()
        if buf:
            yield buf.decode(errors="replace")

    def _detach(self, container_id: str) -> None:
        """Drop the output attached at the start whose log nobody read."""
        attached = self._outputs.pop(container_id, None)
        if attached is not None:
            with contextlib.suppress(Exception):  # a connection already closed
                attached.close()

    def wait(self, container: Container) -> ContainerExit:
        """How the container ended; :class:`EngineLost` when the engine went away meanwhile."""
        lifeline = self._lifelines.pop(container.id, None)
        if lifeline is not None:  # removed as it ended: its status is what the waiter saw
            code = lifeline.exit_code()
            if code != 0:  # training that completed did so, whatever the engine does after
                self._still_here(lifeline.broke)
            return ContainerExit(exit_code=code, oom_killed=self._oom_seen(container.id, lifeline.since))
        try:
            result = self.client.api.wait(container.id)
            state = self.client.api.inspect_container(container.id).get("State", {})
        except docker.errors.NotFound:
            self._still_here(None)  # gone with an engine that restarted, or removed from outside
            raise RunnerError(
                f"container {container.name} was removed before it ended", EXIT_ENVIRONMENT
            ) from None
        except OSError as exc:  # the connection broke (requests' errors are OSErrors)
            self._still_here(_gone(exc))
            raise
        code = int(result.get("StatusCode", -1))
        if code != 0:
            self._still_here(None)
        return ContainerExit(exit_code=code, oom_killed=bool(state.get("OOMKilled")))

    def _still_here(self, broke: str | None) -> None:
        """Raise :class:`EngineLost` unless the engine answers now, on a new connection, and the
        connection the container's end was awaited on (``broke``: how it broke, or None) held.

        A daemon that stops (a restart, ``systemctl stop``) closes its socket first, then stops its
        containers (without live-restore), and the waiter sees an ordinary exit status: only a
        question asked after the end tells it from training that ended by itself. Asked only of a
        container that did not exit 0 (one stopped by its engine never does): a completed run stays
        completed when the engine is slow to answer, or gone, after its end."""
        try:
            self._open(timeout=5).close()
        except (docker.errors.DockerException, OSError) as exc:
            raise self._lost(exc) from None
        if broke is not None:
            raise EngineLost(self._named(), f"the connection to it broke mid-run ({broke})")

    def _lost(self, exc: BaseException) -> EngineLost:
        return EngineLost(self._named(), f"it stopped answering ({_gone(exc)})")

    def _named(self) -> str:
        """The engine, as a line names it: ``docker at unix:///var/run/docker.sock``."""
        return f"{self._info.name if self._info else 'docker'} at {self._address()}"

    def _oom_seen(self, container_id: str, since: float) -> bool:
        """Whether the engine reported an OOM kill in the container since ``since`` (an auto-removed
        container cannot be inspected for it after; its ``oom`` event stays in the engine's log)."""
        try:
            events = self.client.api.events(
                since=int(since) - 1,
                until=int(time.time()) + 1,
                filters={"container": container_id, "event": "oom"},
                decode=True,
            )
            return any(e.get("status", e.get("Action")) == "oom" for e in events)
        except (docker.errors.DockerException, OSError):  # the engine's log unread: no OOM is claimed
            return False

    def stop_and_remove(self, container: Container, timeout: int = 10) -> None:
        """Also when the engine went away. One that stops (a restart) stops its containers itself,
        without live-restore; one that died (SIGKILL, a crash) or keeps them on purpose (live-restore)
        leaves them running (containerd's shims keep them, and the lifeline's stdin stays open): the
        container's main process is stopped here, as the engine would (SIGTERM, SIGKILL after
        ``timeout`` s). Either way an engine that starts again removes what is left (auto-removed)."""
        self._detach(container.id)
        process = self._processes.pop(container.id, None)
        try:
            self.client.api.stop(container.id, timeout=timeout)
        except OSError:  # no engine answers (requests' errors are OSErrors)
            if process is not None:
                process.stop(timeout)
        except docker.errors.DockerException:
            pass
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.client.api.remove_container(container.id, force=True)

    def remove_named(self, name: str) -> None:
        with contextlib.suppress(docker.errors.DockerException, OSError):
            self.client.api.remove_container(name, force=True)

    def containers_labelled(self, key: str, value: str | None = None) -> list[Container]:
        label = key if value is None else f"{key}={value}"
        found = self.client.api.containers(all=True, filters={"label": label})
        return [Container(id=c["Id"], name=(c.get("Names") or ["/"])[0].lstrip("/")) for c in found]


class PodmanEngine(DockerEngine):
    """Podman, rootless, through its Docker-compatible service (docker-py with ``base_url``).

    ``base_url``: the service's socket (None: the user's own, ``$XDG_RUNTIME_DIR/podman/podman.sock``).
    When nothing answers there and ``start_service`` is true, the runner starts the user's
    ``podman --runtime RUNTIME system service`` on a socket of its own beside it (so that runs side
    by side, each with its own, never stop one another's; in a session of its own, so a Ctrl-C
    meant for the run does not stop the engine under it) and stops what it started on
    :meth:`close` or when this process ends; a runner killed outright leaves it to stop after
    ``idle_s`` idle seconds.
    ``runtime``: ``runc`` (``crun`` fails on hybrid cgroups: "cgroups in hybrid mode not supported").

    Rootless, the container keeps the user's uid (user namespace ``keep-id``), so what it writes
    in the run dir is the user's. The service adds ``TERM`` and ``container`` to every container's
    variables; the training process starts without them, under exactly the profile's environment.
    On cgroup v1 a rootless engine cannot limit cores or memory (Podman ignores them, saying so
    only on its own command line): :meth:`describe` lists them, and the run says so and records it.
    """

    ADDED_ENV = ("TERM", "container")  # variables the service sets in every container
    LIFELINE_WAIT = "next-exit"  # Podman answers "removed" with status 0, whatever the exit status was

    def __init__(
        self,
        base_url: str | None = None,
        timeout: int = 120,
        start_service: bool = True,
        runtime: str = "runc",
        idle_s: int = 600,
    ) -> None:
        super().__init__(base_url or _user_podman_socket(), timeout)
        self.start_service, self.runtime, self.idle_s = start_service, runtime, idle_s
        self._service: _Service | None = None

    def connect(self) -> None:
        if self._client is not None:
            return
        try:
            self._client = self._open()
            return
        except docker.errors.DockerException as exc:
            if not (
                self.start_service and self._service is None and str(self.base_url).startswith("unix://")
            ):
                raise self._unreachable(exc) from None
        self._service = _Service.start(self.base_url or "", self.runtime, self.idle_s)
        self.base_url = self._service.url
        try:
            self._client = self._service.wait_for(self._open)
        except (docker.errors.DockerException, RunnerError) as exc:
            self._service.stop()
            self._service = None
            raise exc if isinstance(exc, RunnerError) else self._unreachable(exc) from None

    def close(self) -> None:
        super().close()
        if self._service is not None:
            self._service.stop()
            self._service = None

    def _unreachable(self, exc: Exception) -> RunnerError:
        return RunnerError(
            f"Podman not reachable at {self.base_url}: start `podman --runtime {self.runtime} system "
            f"service {self.base_url}`, or let the runner start it (launch.engine.start_service=true) "
            f"[{type(exc).__name__}]",
            EXIT_ENVIRONMENT,
        )

    def describe(self) -> EngineInfo:
        """Podman's own account of itself (``/libpod/info``): rootless, and its cgroup version."""
        if self._info is None:
            api = self.client.api  # docker-py's own request helpers, for an endpoint it has no method for
            host = api._result(api._get(api._url("/libpod/info")), json=True)["host"]
            rootless = bool(host.get("security", {}).get("rootless"))
            cgroup_v1 = str(host.get("cgroupVersion")) == "v1"
            self._info = EngineInfo(
                name="podman",
                version=self.client.version().get("Version"),
                rootless=rootless,
                cannot_enforce=("cpuset_cpus", "mem_limit") if rootless and cgroup_v1 else (),
            )
        return self._info

    def start(self, req: ContainerRequest) -> Container:
        added = [name for name in self.ADDED_ENV if name not in req.environment]
        if added:  # the training process starts under exactly the request's variables
            unset = [f"--unset={name}" for name in added]
            req = dataclasses.replace(req, command=["env", *unset, "--", *req.command])
        return super().start(req)

    def _host_config(self, req: ContainerRequest) -> dict[str, Any]:
        host_config = super()._host_config(req)
        if self.describe().rootless:  # the user's uid stays theirs inside: the run dir is theirs
            host_config["UsernsMode"] = "keep-id"
        return host_config


def _user_podman_socket() -> str:
    """The socket a user's own Podman service listens on: ``$XDG_RUNTIME_DIR/podman/podman.sock``
    (root's: ``/run/podman/podman.sock``)."""
    if os.geteuid() == 0:
        return "unix:///run/podman/podman.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.geteuid()}"
    return f"unix://{runtime}/podman/podman.sock"


class _Service:
    """A ``podman system service`` this process started, and stops."""

    def __init__(self, proc: subprocess.Popen, url: str, log: Path) -> None:
        self.proc, self.url, self.log = proc, url, log
        self.owner = os.getpid()  # a forked child closing its copy of the engine leaves it running
        atexit.register(self.stop)

    @classmethod
    def start(cls, beside: str, runtime: str, idle_s: int) -> _Service:
        """A service on a socket of this process's own, in the directory of ``beside``'s."""
        sock = Path(beside[len("unix://") :]).with_name(f"runner-{os.getpid()}-{time.monotonic_ns()}.sock")
        url, log = f"unix://{sock}", sock.with_suffix(".log")
        argv = ["podman", "--runtime", runtime, "system", "service", f"--time={idle_s}", url]
        try:
            sock.parent.mkdir(parents=True, exist_ok=True)
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
                )
        except OSError as exc:
            raise RunnerError(
                f"cannot start podman system service on {url}: {exc.strerror or exc} ({' '.join(argv)})",
                EXIT_ENVIRONMENT,
            ) from None
        return cls(proc, url, log)

    def wait_for(self, open_client: Callable[[], Any], seconds: float = 30.0) -> Any:
        """``open_client()`` once the service answers; RunnerError when it ends or never answers."""
        deadline = time.monotonic() + seconds
        while True:
            if self.proc.poll() is not None:
                tail = " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-3:])
                raise RunnerError(
                    f"podman system service ended at once (exit {self.proc.returncode}): {tail}",
                    EXIT_ENVIRONMENT,
                )
            try:
                return open_client()
            except docker.errors.DockerException:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def stop(self) -> None:
        """Stop it (SIGTERM, SIGKILL after 10 s); only the process that started it does."""
        atexit.unregister(self.stop)
        if os.getpid() != self.owner or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.unlink(missing_ok=True)  # a service that ended well leaves nothing behind
        Path(self.url[len("unix://") :]).unlink(missing_ok=True)


@dataclasses.dataclass(frozen=True)
class _HostProcess:
    """A container's main process as this host sees it: its pid, and its start time (clock ticks
    after boot), which tell it from a later process given the same pid."""

    pid: int
    started: int

    @classmethod
    def of(cls, pid: int, container_id: str) -> _HostProcess | None:
        """The process ``pid`` if it is the container's (its cgroup names the container; a runner
        in another pid namespace than the engine sees another process, or none, there)."""
        try:
            in_container = container_id in Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return None
        started = _started(pid)
        return cls(pid, started) if in_container and started is not None and pid > 1 else None

    def alive(self) -> bool:
        return _started(self.pid) == self.started

    def stop(self, grace: float) -> None:
        """SIGTERM, SIGKILL after ``grace`` seconds; nothing where it may not be signalled."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            if not self.alive():
                return
            try:
                os.kill(self.pid, sig)
            except OSError:  # ended meanwhile, or not this user's to signal
                return
            deadline = time.monotonic() + wait
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.1)


def _started(pid: int) -> int | None:
    """A running process's start time; None when there is none or it has ended (a zombie, not yet
    reaped)."""
    fields = procfs.stat(pid)
    try:
        return None if fields is None or procfs.ended(fields) else int(fields[19])
    except (ValueError, IndexError):
        return None


class _Lifeline:
    """A container's life tied to this process. Before the container starts, a thread waits for
    its removal (its exit status comes with it: an auto-removed container cannot be inspected
    after) and this process attaches to its standard input, holding it open. When this process ends,
    however it ends, the kernel closes that connection, the engine closes the container's stdin
    (``stdin_once``), and the worker, watching it, stops."""

    def __init__(self, api: Any, container_id: str, condition: str = "removed"):
        self.api, self.id, self.condition = api, container_id, condition
        self.since = time.time()
        self._status: dict[str, Any] = {}
        self.broke: str | None = None  # how the wait's connection broke (the engine went away), if it did
        self._waiter = threading.Thread(target=self._wait, daemon=True)
        self._waiter.start()
        self._socket = api.attach_socket(container_id, params={"stdin": 1, "stream": 1})

    def _wait(self) -> None:
        try:
            self._status.update(self.api.wait(self.id, condition=self.condition))
        except Exception as exc:  # noqa: BLE001 - docker-py's or requests' errors alike: the status is unknown
            self._status["StatusCode"] = -1
            if isinstance(exc, OSError):  # the connection (requests' errors are OSErrors), not an answer
                self.broke = _gone(exc)

    def exit_code(self) -> int:
        self._waiter.join()
        return int(self._status.get("StatusCode", -1))


def _why(exc: BaseException) -> str:
    """docker-py's error in one line: the engine's own explanation where it gave one."""
    text = getattr(exc, "explanation", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


_GONE = (
    (FileNotFoundError, "its socket is gone"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (TimeoutError, "no answer in time"),
)


def _gone(exc: BaseException) -> str:
    """Why an engine does not answer, in a few words: the socket error under docker-py's and
    requests' wrappers (they nest it in their arguments), else the error's own line."""
    todo, seen = [exc], set()
    while todo:
        err = todo.pop()
        if id(err) in seen:
            continue
        seen.add(id(err))
        for kind, words in _GONE:
            if isinstance(err, kind):
                return words
        todo += [x for x in (*err.args, err.__cause__, err.__context__) if isinstance(x, BaseException)]
    return _why(exc)[:200]


def _device_requests(gpus: list[int] | list[str] | int | None) -> list[DeviceRequest] | None:
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
