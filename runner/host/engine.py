"""What a container engine must do for the runner, and how one is chosen.

:class:`Engine` is the seam: everything above it (executors, image resolution, replay, the
sweep launcher) speaks to this protocol and sees only the runner's own types —
:class:`ContainerRequest` in, :class:`Container` handles, :class:`ContainerExit` and
:class:`EngineInfo` out, image ids as strings. No object of an engine's client library crosses it.

An engine is chosen by the config group ``engine`` (``engine=docker``, ``engine=podman``, …:
``conf/engine/NAME.yaml`` fills ``launch.engine``, a Hydra ``_target_`` node); :func:`make`
instantiates it with :func:`hydra.utils.instantiate`, :func:`connect` also connects it. Docker
(:mod:`runner.host.docker_engine`) is the default. An engine with another API is one new module
holding a class that implements :class:`Engine` and one option of the group; nothing else changes.

A ``_target_`` names code to run, so only the user's own configuration may choose the engine:
a recorded manifest is data. A replay or a resume takes an engine by *name*, an option of the
user's own ``engine`` group (the one the record names, or ``--engine NAME``), never a recorded
``_target_``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, runtime_checkable

from runner.core.config import Launch
from runner.core.engine_types import ContainerRequest, EngineInfo
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.core.manifest import EngineVersion
from runner.core.run_input import ResolvedImage
from runner.core.spec import RunPlan

DEFAULT_ENGINE: Mapping[str, Any] = {"_target_": "runner.host.docker_engine.DockerEngine"}

# Container-engine sockets: a container that can reach one controls the host, read-only mount or not.
ENGINE_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/run/podman/podman.sock",
    "/run/user/1000/docker.sock",
    "/run/user/1000/podman/podman.sock",
)


@dataclass(frozen=True)
class Container:
    """A container the engine started: what the runner holds on to, nothing of the engine's client."""

    id: str
    name: str


@dataclass(frozen=True)
class ContainerExit:
    """How a container's main process ended."""

    exit_code: int
    oom_killed: bool = False


@runtime_checkable
class Engine(Protocol):
    """A container engine. Every failure the user can act on is raised as :class:`RunnerError`."""

    def connect(self) -> None:
        """Open the connection now and check that the engine answers (EXIT_ENVIRONMENT when it
        does not). Calling it on a connected engine does nothing; an engine not yet connected
        connects on first use."""

    def close(self) -> None:
        """Release the connection (a forked process opens its own)."""

    def version(self) -> EngineVersion:
        """Facts for the manifest: ``version``, ``api_version``, ``os``, ``arch``, ``kernel``."""

    def describe(self) -> EngineInfo:
        """What the engine is (name, version, rootless) and which limits and locks of a request it
        cannot enforce here; :meth:`start` leaves those out, and the run says so and records it."""

    def image_id(self, ref: str) -> str | None:
        """The id of the local image ``ref`` names, or None when there is none."""

    def image_digest(self, ref: str) -> str | None:
        """The registry digest (``sha256:…``) of the local image ``ref``, or None."""

    def pull(self, ref: str) -> str | None:
        """Pull ``ref`` and return its image id; None when no registry answers or it holds no such
        image. A ``repository@sha256:…`` reference gets exactly that content or nothing."""

    def push(self, image: str, ref: str) -> str:
        """Tag the local ``image`` as ``ref`` (``registry/repository:tag``) and push it there; returns
        the registry's content digest of what it now holds (``sha256:…``). A registry that refuses
        or does not answer is EXIT_ENVIRONMENT."""

    def save(self, image: str, out: BinaryIO) -> None:
        """Write ``image`` (an id or a tag, which the archive then names) to ``out`` as a
        docker-archive (``docker save``), the format every engine loads."""

    def load(self, archive: Path) -> list[str]:
        """Load the images of a docker-archive file; returns their ids. A file that is not one is
        EXIT_USAGE."""

    def remove_image(self, ref: str) -> bool:
        """Remove the image; False when there was none."""

    def read_image_file(self, image: str, path: str) -> bytes:
        """A file's bytes from an image, without running anything in it."""

    def build(
        self,
        tag: str,
        dockerfile: Path,
        files: dict[str, Path],
        buildargs: dict[str, str],
        labels: dict[str, str],
        on_line: Callable[[str], None],
    ) -> str:
        """Build ``tag`` without network from the Dockerfile and ``files`` (context name → host
        path); each line of build output goes to ``on_line``. Returns the image id."""

    def start(self, req: ContainerRequest) -> Container:
        """Create and start the locked-down container ``req`` describes (no network, no
        capabilities, read-only root); refuses a mount holding an engine socket. What
        :meth:`describe` lists as not enforceable is left out, nothing else."""

    def stream_logs(self, container: Container) -> Iterator[str]:
        """The container's output, line by line, until it ends."""

    def wait(self, container: Container) -> ContainerExit:
        """Block until the container ends."""

    def stop_and_remove(self, container: Container, timeout: int = 10) -> None:
        """Stop (SIGTERM, SIGKILL after ``timeout`` s) and remove; one already gone is fine."""

    def remove_named(self, name: str) -> None:
        """Remove the container called ``name`` if there is one (created, never started)."""

    def containers_labelled(self, key: str, value: str | None = None) -> list[Container]:
        """Containers, running or not, carrying label ``key`` (with ``value``, when given)."""


# -- where the worker runs -------------------------------------------------------------------------------
@dataclass
class Exit:
    """How the worker ended, as every executor reports it."""

    exit_code: int
    oom_killed: bool = False
    interrupted: bool = False
    seconds: float = 0.0
    log_tail: list[str] = field(default_factory=list)
    no_space: str | None = None  # the run stopped on a full disk: the line that says where
    oom_where: str | None = None  # whose container the kernel killed for memory, where (a node's)


@dataclass(frozen=True)
class Workload:
    """What an executor is handed: the plan, where the run's unpacked code and its data are on this
    host, and the image the run has (the executor's :meth:`Executor.image`, or the record's; None:
    it runs in no image)."""

    plan: RunPlan
    code_dir: Path
    data_root: Path
    image: ResolvedImage | None = None


@runtime_checkable
class Executor(Protocol):
    """Where the worker runs: in a container of an :class:`Engine`, across the nodes of a Slurm
    allocation, or as a process of this Python. One is chosen by
    :func:`runner.host.backends.choose`; the run flow speaks to this protocol only.

    What the worker sees (its paths and environment) is the plan's
    (:meth:`runner.core.spec.RunPlan.worker_paths`, :meth:`~runner.core.spec.RunPlan.worker_env`).
    """

    name: str  # what the run's first line names

    def image(
        self, plan: RunPlan, root: Path, echo: Callable[[str], None], build_log: Path | None
    ) -> ResolvedImage | None:
        """The image the worker runs in, found or built from ``root``'s Dockerfile and lock (a
        build's whole output to ``build_log``); None where the worker runs in no image."""

    def describe(self) -> EngineInfo | None:
        """The engine the worker's container runs on, for the record (None: no container)."""

    def run(self, work: Workload, echo: Callable[[str], None]) -> Exit:
        """Run the worker to its end, its log streamed to ``echo`` and the run dir's
        ``logs/train.log``. Ctrl-C or SIGTERM stops it (an :class:`Exit` with ``interrupted``);
        nothing of it is left running, whichever way it ends."""


def make(spec: Mapping[str, Any] | None = None) -> Engine:
    """The engine ``spec`` names (a ``_target_`` node; None: :data:`DEFAULT_ENGINE`), not yet
    connected: it connects on first use, so a run that cannot reach it still leaves its record.

    ``spec`` must come from the user's own configuration, never from a record (see the module doc).
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    spec = dict(spec or DEFAULT_ENGINE)
    target = spec.get("_target_")
    try:
        engine = instantiate(spec, _convert_="all")
    except InstantiationException as exc:
        why = " ".join(str(exc).split())
        raise RunnerError(f"launch.engine: cannot make an engine of {target!r}: {why}", EXIT_USAGE) from None
    if not isinstance(engine, Engine):
        raise RunnerError(
            f"launch.engine: {target!r} is not a container engine (see runner.host.engine.Engine)", EXIT_USAGE
        )
    return engine


def for_run(launch: Launch | Mapping[str, Any]) -> Engine | None:
    """The engine a new run's own launch section names (``launch.engine``), not yet connected; None
    for ``launch.backend=host``. Only for a config the user composed now, never a recorded one.
    (Given a whole config, it reads its ``launch``.)"""
    if not isinstance(launch, Launch):
        from runner.core.config import launch_of

        launch = launch_of(launch)
    return make(launch.engine) if launch.containerized else None


def connect(spec: Mapping[str, Any] | None = None) -> Engine:
    """:func:`make`, then connect now: an engine that does not answer fails here, in one line."""
    engine = make(spec)
    engine.connect()
    return engine


# -- what every engine refuses --------------------------------------------------------------------------
def engine_sockets(env: Mapping[str, str] | None = None, also: Sequence[str | None] = ()) -> list[Path]:
    """The engine sockets of this host, links resolved: the well-known ones, ``DOCKER_HOST``'s, and
    those of the addresses in ``also`` (an engine's own ``unix://`` URL, say)."""
    env = os.environ if env is None else env
    paths = list(ENGINE_SOCKETS)
    for url in (env.get("DOCKER_HOST", ""), *also):
        if url and url.startswith("unix://"):
            paths.append(url[len("unix://") :])
    return sorted({Path(os.path.realpath(p)) for p in paths})


def refuse_engine_sockets(mounts: list[tuple[str, str, bool]], sockets: list[Path]) -> None:
    """Refuse a bind mount that is, or holds, an engine socket (e.g. ``dataset.root=/var/run``)."""
    for src, dst, _ in mounts:
        source = Path(os.path.realpath(src))
        for sock in sockets:
            if sock == source or sock.is_relative_to(source):
                raise RunnerError(
                    f"refusing to mount {src} at {dst}: it holds the container engine's socket "
                    f"{sock}, which would hand the container the host",
                    EXIT_USAGE,
                )
