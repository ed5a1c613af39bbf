"""An in-memory :class:`runner.host.engine.Engine`: this project's own protocol, kept in a dict,
for driving the run pipeline's error paths in milliseconds. Every image asked for is present;
a container "runs" by yielding ``log`` and ending with ``exit_code``. ``fail`` makes one method
raise what it names (a bug in an engine, a Ctrl-C at that moment). Tests that need a real engine
use the real one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from runner.core.digests import sha256_bytes
from runner.core.engine_types import ContainerRequest, EngineInfo
from runner.core.errors import EXIT_ENVIRONMENT, RunnerError
from runner.host.engine import Container, ContainerExit


class MemoryEngine:
    def __init__(
        self, *, log: tuple[str, ...] = (), exit_code: int = 0, fail: dict[str, BaseException] | None = None
    ):
        self.log, self.exit_code, self.fail = log, exit_code, dict(fail or {})
        self.running: dict[str, Container] = {}  # name → container: what is there now
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]

    def connect(self) -> None:
        self._call("connect")

    def close(self) -> None:
        pass

    def version(self) -> dict[str, Any]:
        return {"version": "0-memory", "api_version": "0", "os": "linux", "arch": "x86_64", "kernel": "0"}

    def describe(self) -> EngineInfo:
        return EngineInfo(name="memory", version="0-memory", rootless=False)

    def image_id(self, ref: str) -> str | None:
        self._call("image_id")
        return "sha256:" + sha256_bytes(ref.encode())

    def image_digest(self, ref: str) -> str | None:
        return None

    def pull(self, ref: str) -> str | None:
        return None

    def push(self, image: str, ref: str) -> str:
        self._call("push")
        return "sha256:" + sha256_bytes(f"{image} {ref}".encode())

    def save(self, image: str, out: BinaryIO) -> None:
        self._call("save")
        raise RunnerError(f"the in-memory engine holds no image bytes ({image})", EXIT_ENVIRONMENT)

    def load(self, archive: Path) -> list[str]:
        self._call("load")
        return []

    def remove_image(self, ref: str) -> bool:
        return False

    def read_image_file(self, image: str, path: str) -> bytes:
        raise FileNotFoundError(path)

    def build(
        self,
        tag: str,
        dockerfile: Path,
        files: dict[str, Path],
        buildargs: dict[str, str],
        labels: dict[str, str],
        on_line: Callable[[str], None],
    ) -> str:
        raise AssertionError("every image is present: nothing is built")

    def start(self, req: ContainerRequest) -> Container:
        self.running[req.name] = Container(id="c-" + req.name, name=req.name)  # created, then started
        self._call("start")
        return self.running[req.name]

    def stream_logs(self, container: Container) -> Iterator[str]:
        self._call("stream_logs")
        yield from self.log

    def wait(self, container: Container) -> ContainerExit:
        self._call("wait")
        return ContainerExit(self.exit_code)

    def stop_and_remove(self, container: Container, timeout: int = 10) -> None:
        self.calls.append("stop_and_remove")
        self.running.pop(container.name, None)

    def remove_named(self, name: str) -> None:
        self.calls.append("remove_named")
        self.running.pop(name, None)

    def containers_labelled(self, key: str, value: str | None = None) -> list[Container]:
        return list(self.running.values())
