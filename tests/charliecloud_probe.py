"""What the Charliecloud engine does, seen from the unprivileged user who runs it: ``python -m
tests.charliecloud_probe CASE IMAGE DIR`` (as that user) drives the engine through its protocol and
prints what it saw as one JSON line, which ``tests/host/test_charliecloud_engine.py`` asserts on."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from runner.core.engine_types import ContainerRequest
from runner.core.errors import RunnerError
from runner.host.charliecloud_engine import CharliecloudEngine

LABEL = "org.runner.test-charliecloud"


def _request(image: str, scratch: Path, command: str, **kw: Any) -> ContainerRequest:
    name = f"runner-test-ch-{uuid.uuid4().hex[:8]}"
    (scratch / "code").mkdir(exist_ok=True)
    (scratch / "job").mkdir(exist_ok=True)
    return ContainerRequest(
        image=image,
        name=name,
        command=["sh", "-c", command],
        environment={"GREETING": "hi", "HOME": "/tmp"},
        user="1000:1000",
        mounts=[(str(scratch / "code"), "/code", True), (str(scratch / "job"), "/job", False)],
        working_dir="/code",
        labels={LABEL: name},
        **kw,
    )


def contract(engine: CharliecloudEngine, image: str, scratch: Path) -> dict[str, Any]:
    """A container from start to removal: its log, exit status, and whether it is listed."""
    req = _request(image, scratch, "echo one; echo $GREETING; id -u; echo last; exit 3")
    handle = engine.start(req)
    listed = engine.containers_labelled(LABEL, req.name) == [handle]
    lines = list(engine.stream_logs(handle))
    ended = engine.wait(handle)
    engine.stop_and_remove(handle, timeout=1)
    engine.stop_and_remove(handle, timeout=1)  # already gone: nothing to do
    return {
        "listed": listed,
        "lines": lines,
        "exit": ended.exit_code,
        "after": len(engine.containers_labelled(LABEL, req.name)),
    }


LOCKS = (
    "env | sort; "
    "touch /code/x 2>/dev/null && echo code:rw || echo code:ro; "
    "touch /job/x 2>/dev/null && echo job:rw || echo job:ro; "
    "touch /usr/x 2>/dev/null && echo image:rw || echo image:ro; "
    "echo net:$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,); "
    "grep -E '^(CapEff|NoNewPrivs):' /proc/self/status | tr -d '\\t'; "
    "echo pid:$$ pids:$(ls /proc | grep -c '^[0-9]')"
)


def locks(engine: CharliecloudEngine, image: str, scratch: Path) -> dict[str, Any]:
    """What a process in the container sees: its environment, what it may write, its network,
    its capabilities."""
    handle = engine.start(_request(image, scratch, LOCKS))
    lines = list(engine.stream_logs(handle))
    engine.stop_and_remove(handle, timeout=1)
    return {"lines": lines}


def stop(engine: CharliecloudEngine, image: str, scratch: Path) -> dict[str, Any]:
    """A running container with processes in the background, stopped: nothing of it stays."""
    marker = f"{600 + os.getpid() % 300}"
    req = _request(image, scratch, f"sleep {marker} & sleep {marker} & echo up; wait")
    handle = engine.start(req)
    first = next(iter(engine.stream_logs(handle)))
    deadline = time.monotonic() + 10  # "up" may come before both children have become `sleep`
    while len(sleeping := _processes(f"sleep\0{marker}")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    engine.stop_and_remove(handle, timeout=2)
    return {
        "first": first,
        "sleeping": len(sleeping),
        "seconds": time.monotonic() - started,
        "left": len(_processes(f"sleep\0{marker}")),
        "listed": len(engine.containers_labelled(LABEL, req.name)),
    }


def refusals(engine: CharliecloudEngine, image: str, scratch: Path) -> dict[str, Any]:
    """What the engine refuses, each in one line: an absent image, a GPU, a build."""
    out: dict[str, Any] = {}
    cases = {
        "absent": lambda: engine.start(_request("runner-test:no-such-image", scratch, "true")),
        "gpu": lambda: engine.start(_request(image, scratch, "true", gpus=1)),
        "build": lambda: engine.build("runner:cpu-x", Path("Dockerfile.cpu"), {}, {}, {}, print),
    }
    for name, call in cases.items():
        try:
            call()
            out[name] = None
        except RunnerError as exc:
            out[name] = [exc.exit_code, exc.message]
    out["listed"] = len(engine.containers_labelled(LABEL))
    return out


def _processes(cmdline: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "cmdline").read_text().rstrip("\0") == cmdline:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def main() -> None:
    case, image, scratch = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    engine = CharliecloudEngine()
    print(json.dumps(globals()[case](engine, image, scratch)))


if __name__ == "__main__":
    main()
