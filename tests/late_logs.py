"""Docker, except that a container's log is read only once the container has ended and the engine
has removed it: the worst a busy machine can do to a container that ends at once. Chosen like any
engine (``launch.engine._target_=tests.late_logs.LateReader``); a multi-node run's node agents use
it too."""

from __future__ import annotations

import time
from collections.abc import Iterator

from runner.host.docker_engine import DockerEngine
from runner.host.engine import Container


class LateReader(DockerEngine):
    def stream_logs(self, container: Container) -> Iterator[str]:
        deadline = time.monotonic() + 300
        while self.client.api.containers(all=True, filters={"id": container.id}):
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {container.name} never ended")
            time.sleep(0.1)
        yield from super().stream_logs(container)
