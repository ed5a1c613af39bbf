"""The engine seam against the real Docker engine: :class:`runner.host.engine.Engine` is all the
runner sees of a container engine — requests in, its own handles and exit records out, nothing of
docker-py — and ``engine=NAME`` (filling ``launch.engine``, a ``_target_``) chooses the engine, so
another one is a new module and a config value. A manifest never chooses code to run: a replay
takes an engine by name, an option of the user's ``engine`` group."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from runner.core.engine_types import ContainerRequest, EngineInfo
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, EngineLost, RunnerError
from runner.host import engine as engines
from runner.host.docker_engine import DockerEngine
from runner.host.engine import Container, ContainerExit, Engine
from tests.conftest import manifest, run_runner
from tests.live_runs import PROBE, probe_args

BASE = "runner-base:bookworm"  # conf/image: every image's base, so it is here whenever the image is
LABEL = "org.runner.test-engine"


class WrappedEngine:
    """A second engine in a module of its own: it implements the protocol by handing every call to
    a Docker engine (no inheritance), and says so in ``version()``, which the manifest records."""

    def __init__(self, base_url: str | None = None) -> None:
        self.inner = DockerEngine(base_url)

    def connect(self) -> None:
        self.inner.connect()

    def close(self) -> None:
        self.inner.close()

    def version(self) -> dict[str, Any]:
        return {**self.inner.version(), "wrapped_by": type(self).__name__}

    def describe(self) -> EngineInfo:
        return self.inner.describe()

    def image_id(self, ref: str) -> str | None:
        return self.inner.image_id(ref)

    def image_digest(self, ref: str) -> str | None:
        return self.inner.image_digest(ref)

    def pull(self, ref: str) -> str | None:
        return self.inner.pull(ref)

    def push(self, image: str, ref: str) -> str:
        return self.inner.push(image, ref)

    def save(self, image: str, out: BinaryIO) -> None:
        self.inner.save(image, out)

    def load(self, archive: Path) -> list[str]:
        return self.inner.load(archive)

    def remove_image(self, ref: str) -> bool:
        return self.inner.remove_image(ref)

    def read_image_file(self, image: str, path: str) -> bytes:
        return self.inner.read_image_file(image, path)

    def build(self, *args: Any, **kwargs: Any) -> str:
        return self.inner.build(*args, **kwargs)

    def start(self, req: ContainerRequest) -> Container:
        return self.inner.start(req)

    def stream_logs(self, container: Container) -> Iterator[str]:
        return self.inner.stream_logs(container)

    def wait(self, container: Container) -> ContainerExit:
        return self.inner.wait(container)

    def stop_and_remove(self, container: Container, timeout: int = 10) -> None:
        self.inner.stop_and_remove(container, timeout)

    def remove_named(self, name: str) -> None:
        self.inner.remove_named(name)

    def containers_labelled(self, key: str, value: str | None = None) -> list[Container]:
        return self.inner.containers_labelled(key, value)


class NotAnEngine:
    def __init__(self, base_url: str | None = None) -> None:
        pass


def _request(command: str, tmp_path: Path, **kw: Any) -> ContainerRequest:
    name = f"runner-test-engine-{uuid.uuid4().hex[:8]}"
    return ContainerRequest(
        image=BASE,
        name=name,
        command=["sh", "-c", command],
        environment={"GREETING": "hi"},
        user="1000:1000",
        mounts=[(str(tmp_path), "/job", True)],
        working_dir="/tmp",
        labels={LABEL: name},
        **kw,
    )


# -- choosing an engine (no container started) ------------------------------------------------------------
def test_an_engine_that_does_not_answer_fails_in_one_line():
    with pytest.raises(RunnerError) as caught:
        DockerEngine(base_url="unix:///nonexistent.sock").connect()
    assert caught.value.exit_code == EXIT_ENVIRONMENT
    assert "Docker engine not reachable at unix:///nonexistent.sock" in caught.value.message


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("runner.host.no_such_engine.Engine", "cannot make an engine of 'runner.host.no_such_engine.Engine'"),
        ("tests.host.test_engine.NotAnEngine", "is not a container engine"),
    ],
)
def test_a_target_that_is_no_engine_is_refused(target, why):
    with pytest.raises(RunnerError) as caught:
        engines.make({"_target_": target, "base_url": None})
    assert caught.value.exit_code == EXIT_USAGE and why in caught.value.message
    assert "\n" not in caught.value.message


def test_a_bad_engine_target_on_the_command_line_is_one_line(tmp_path):
    proc = run_runner(
        f"hydra.run.dir={tmp_path / 'run'}", "launch.engine._target_=tests.host.test_engine.NotAnEngine"
    )
    assert proc.returncode == EXIT_USAGE, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "runner: error: launch.engine: 'tests.host.test_engine.NotAnEngine' is not a container engine "
        "(see runner.host.engine.Engine)"
    ]


@pytest.mark.docker
def test_the_configured_engine_is_docker_behind_the_protocol(engine):
    assert isinstance(engine, Engine) and isinstance(engine, DockerEngine)
    info = engine.describe()  # dockerd as root here: every limit of a request is enforced
    assert info == EngineInfo(name="docker", version=engine.version()["version"], rootless=False)
    made = engines.connect({"_target_": "tests.host.test_engine.WrappedEngine", "base_url": None})
    try:
        # (pytest imports this file under another module name than the one the _target_ names)
        assert type(made).__name__ == "WrappedEngine" and isinstance(made, Engine)
        assert made.version()["wrapped_by"] == "WrappedEngine"
        assert made.version()["version"] == engine.version()["version"]
    finally:
        made.close()


# -- containers through the seam -----------------------------------------------------------------------------
@pytest.mark.docker
def test_a_container_is_the_runners_handle_from_start_to_removal(engine, tmp_path):
    req = _request("echo one; echo $GREETING; id -u; echo last; exit 3", tmp_path)
    handle = engine.start(req)
    try:
        assert type(handle) is Container and handle.name == req.name and isinstance(handle.id, str)
        with pytest.raises(dataclasses.FrozenInstanceError):
            handle.id = "x"  # type: ignore[misc]
        assert engine.containers_labelled(LABEL, req.name) == [handle]
        assert list(engine.stream_logs(handle)) == ["one", "hi", "1000", "last"]
        assert engine.wait(handle) == ContainerExit(exit_code=3, oom_killed=False)
    finally:
        engine.stop_and_remove(handle, timeout=1)
    assert engine.containers_labelled(LABEL, req.name) == []
    engine.stop_and_remove(handle, timeout=1)  # already gone: nothing to do, nothing raised


@pytest.mark.docker
def test_a_container_that_ends_at_once_keeps_its_log(engine, tmp_path):
    """Its output is attached before it starts (as ``docker run`` does): read only once the
    container has ended and the engine has removed it (a lifeline's), every line is still there."""
    req = _request("echo the user error line; exit 3", tmp_path, lifeline=True)
    handle = engine.start(req)
    try:
        deadline = time.monotonic() + 60
        while engine.containers_labelled(LABEL, req.name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.containers_labelled(LABEL, req.name) == [], "it ended and was removed"
        assert list(engine.stream_logs(handle)) == ["the user error line"]
        assert engine.wait(handle).exit_code == 3
    finally:
        engine.stop_and_remove(handle, timeout=1)


@pytest.mark.docker
@pytest.mark.parametrize("ask", ["image_id", "pull"])
def test_an_engine_gone_while_the_runs_image_is_found_is_engine_lost_in_one_line(ask, tmp_path):
    """The engine goes away after the run connected, before its container starts (while the data
    downloads, say): choosing the image says engine lost (exit 5) too, not requests' traceback."""
    sock = tmp_path / "docker.sock"  # the machine's engine, reached through a name that then goes
    sock.symlink_to(DockerEngine()._address().removeprefix("unix://"))
    engine = DockerEngine(base_url=f"unix://{sock}")
    try:
        engine.connect()
        sock.unlink()
        with pytest.raises(EngineLost, match=r"went away: it stopped answering \(its socket is gone\)$"):
            getattr(engine, ask)(BASE)
    finally:
        engine.close()


@pytest.mark.docker
@pytest.mark.parametrize("status", [0, 3])
def test_training_that_completed_is_not_told_engine_lost_when_the_engine_answers_late(status, tmp_path):
    """Only a container that did not end well asks whether the engine is still there: one that
    exited 0 completed, whatever the engine does after (a ping that times out on a busy machine
    must not turn a completed run into a failed one)."""
    engine = DockerEngine()
    handle = engine.start(_request(f"exit {status}", tmp_path, lifeline=True))
    try:
        before = engine.base_url
        engine.base_url = f"unix://{tmp_path / 'no-engine.sock'}"  # from now on, no engine answers
        if status:
            with pytest.raises(EngineLost, match="its socket is gone"):
                engine.wait(handle)
        else:
            assert engine.wait(handle) == ContainerExit(exit_code=0, oom_killed=False)
    finally:
        engine.base_url = before
        engine.stop_and_remove(handle, timeout=1)
        engine.close()


@pytest.mark.docker
def test_the_container_is_locked_down_and_a_running_one_stops(engine, tmp_path):
    req = _request(
        "touch /job/x 2>/dev/null || echo read-only; cat /proc/self/status | grep CapEff; sleep 60", tmp_path
    )
    handle = engine.start(req)
    try:
        lines = engine.stream_logs(handle)
        assert next(lines) == "read-only"
        assert next(lines).split() == ["CapEff:", "0000000000000000"]
    finally:
        engine.stop_and_remove(handle, timeout=1)
    assert engine.containers_labelled(LABEL, req.name) == []
    engine.remove_named(req.name)  # nothing by that name: fine


@pytest.mark.docker
def test_an_absent_image_is_one_line_and_leaves_nothing(engine, tmp_path):
    req = dataclasses.replace(_request("true", tmp_path), image="runner-test:no-such-image")
    with pytest.raises(RunnerError, match="image runner-test:no-such-image not found"):
        engine.start(req)
    assert engine.containers_labelled(LABEL, req.name) == []


# -- another engine, end to end -----------------------------------------------------------------------------
@pytest.mark.docker
def test_another_engine_is_a_module_and_a_config_value_and_a_record_never_chooses_it(engine, tmp_path):
    run_dir = tmp_path / "run"
    proc = run_runner(
        f"hydra.run.dir={run_dir}",
        *PROBE,
        probe_args("report"),
        "launch.engine._target_=tests.host.test_engine.WrappedEngine",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(run_dir)
    assert m["image"]["engine"]["wrapped_by"] == "WrappedEngine"  # the run went through the other engine
    assert m["config"]["launch"]["engine"]["_target_"] == "tests.host.test_engine.WrappedEngine"
    version = engine.version()["version"]
    assert m["engine"] == {"name": "docker", "version": version, "rootless": False, "unenforced": []}

    # the record names that code, but a record is data: the replay takes the engine the record
    # names by its name (docker), as the user's own `engine` group has it
    proc = run_runner(str(run_dir), "--out", str(tmp_path / "replay"), module="runner.replay")
    assert (tmp_path / "replay" / "manifest.json").is_file(), proc.stderr[-3000:]
    replayed = manifest(tmp_path / "replay")
    assert replayed["status"] == "completed" and "wrapped_by" not in replayed["image"]["engine"]
    assert replayed["image"]["engine"]["version"] == version
    assert replayed["engine"] == m["engine"]

    # an engine is a name of the user's `engine` group: anything else is one line, before anything runs
    for name, why in (
        ("no-such", "engine 'no-such': no such engine (available: "),
        ("a.b:C", "engine 'a.b:C': not an engine name"),
    ):
        out = tmp_path / f"replay-{name}"
        proc = run_runner(str(run_dir), "--out", str(out), "--engine", name, module="runner.replay")
        assert proc.returncode == EXIT_USAGE and not out.exists()
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith(f"runner: error: {why}"), line
