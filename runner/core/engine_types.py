"""Plain data handed to the engine and told by it; no docker-py here, so planning code can build it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ContainerRequest:
    """Everything one training container is started with."""

    image: str
    name: str
    command: list[str]
    environment: dict[str, str]
    user: str
    mounts: list[tuple[str, str, bool]]  # (host path, container path, read_only)
    working_dir: str = "/code"
    gpus: list[int] | list[str] | int | None = None  # None: no GPU; -1: all; [ids]
    shm_size: str | int | None = "1g"
    cpuset_cpus: str | None = None
    mem_limit: str | int | None = None
    labels: dict[str, str] = field(default_factory=dict)
    network: str = "none"  # "none": loopback only; "host": the host's network (a multi-node run alone)
    # tied to the process that started it: when that process dies, even by SIGKILL, the container's
    # standard input closes, its worker stops (RUNNER_LIFELINE) and the engine removes it
    lifeline: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data: how a multi-node run hands its container to the other nodes."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContainerRequest:
        known = {f.name for f in dataclasses.fields(cls)}
        out = {k: v for k, v in data.items() if k in known}
        out["mounts"] = [(str(s), str(d), bool(ro)) for s, d, ro in out.get("mounts") or []]
        return cls(**out)


# What "not asking" looks like for a request's field; any other value asks the engine to enforce it.
_UNRESTRICTED: dict[str, Any] = {"network": "host"}


@dataclass(frozen=True)
class EngineInfo:
    """What a container engine is, for the record: its name (the ``engine`` config group's option:
    ``docker``, ``podman``, ``charliecloud``), version, whether it runs without root, and which of a
    :class:`ContainerRequest`'s limits and locks it cannot enforce here (field names, e.g.
    ``cpuset_cpus`` and ``mem_limit`` for a rootless engine on cgroup v1, ``network`` for one that
    cannot give a container a network namespace of its own)."""

    name: str
    version: str | None
    rootless: bool
    cannot_enforce: tuple[str, ...] = ()

    def unenforced(self, req: ContainerRequest) -> list[str]:
        """The limits and locks ``req`` asks for that this engine cannot enforce, as ``field=value``
        (a field the request has no value for is not asked for, and not listed)."""
        out = []
        for key in self.cannot_enforce:
            value = getattr(req, key, True)  # a lock that is not a request field: always asked for
            if value is not None and value is not False and value != _UNRESTRICTED.get(key):
                out.append(key if value is True else f"{key}={value}")
        return out
