"""Plain data handed to the engine and told by it; no docker-py here, so planning code can build it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import cast

from runner.core.json_types import ContractError, Fields, Json, JsonObject


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

    def to_dict(self) -> JsonObject:
        """The request as JSON: how a multi-node run hands its container to the other nodes."""
        gpus: Json = list(self.gpus) if isinstance(self.gpus, list) else self.gpus
        return {
            "image": self.image,
            "name": self.name,
            "command": list(self.command),
            "environment": dict(self.environment),
            "user": self.user,
            "mounts": [[src, dst, ro] for src, dst, ro in self.mounts],
            "working_dir": self.working_dir,
            "gpus": gpus,
            "shm_size": self.shm_size,
            "cpuset_cpus": self.cpuset_cpus,
            "mem_limit": self.mem_limit,
            "labels": dict(self.labels),
            "network": self.network,
            "lifeline": self.lifeline,
        }

    @classmethod
    def from_dict(cls, data: object, where: str = "request") -> ContainerRequest:
        """The request :meth:`to_dict` wrote; ContractError (one line, naming the field) for another shape."""
        f = Fields.of(data, where)
        return cls(
            image=f.str_("image"),
            name=f.str_("name"),
            command=list(f.strs("command")),
            environment=_strings(f, "environment"),
            user=f.str_("user"),
            mounts=_mounts(f),
            working_dir=f.str_("working_dir", "/code"),
            gpus=cast(
                "list[int] | list[str] | int | None",
                f.value("gpus", _gpus_ok, "null, a count or GPU ids", None),
            ),
            shm_size=cast("str | int | None", f.value("shm_size", _size_ok, "a size", None)),
            cpuset_cpus=f.opt_str("cpuset_cpus"),
            mem_limit=cast("str | int | None", f.value("mem_limit", _size_ok, "a size", None)),
            labels=_strings(f, "labels"),
            network=f.str_("network", "none"),
            lifeline=f.bool_("lifeline", False),
        )


def _gpus_ok(v: object) -> bool:
    return v is None or type(v) is int or (isinstance(v, list) and all(type(g) in (int, str) for g in v))


def _size_ok(v: object) -> bool:
    return v is None or type(v) in (int, str)


def _strings(f: Fields, key: str) -> dict[str, str]:
    value = f.obj(key, {})
    if not all(isinstance(v, str) for v in value.values()):
        raise ContractError(f"{f.where}: {key} must map names to strings")
    return {k: str(v) for k, v in value.items()}


def _mounts(f: Fields) -> list[tuple[str, str, bool]]:
    out = []
    for i, m in enumerate(f.opt_list("mounts") or []):
        if not (isinstance(m, list) and len(m) == 3 and isinstance(m[0], str) and isinstance(m[1], str)):
            raise ContractError(f"{f.where}: mounts[{i}] must be [host path, container path, read-only]")
        out.append((m[0], m[1], bool(m[2])))
    return out


# What "not asking" looks like for a request's field; any other value asks the engine to enforce it.
_UNRESTRICTED: dict[str, str] = {"network": "host"}


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
