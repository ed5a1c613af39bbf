"""Plain data handed to the engine; no docker-py here, so planning code can build it."""

from __future__ import annotations

from dataclasses import dataclass, field


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
    gpus: list[str] | int | None = None  # None: no GPU; -1: all; [ids]
    shm_size: str | None = "1g"
    cpuset_cpus: str | None = None
    mem_limit: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
