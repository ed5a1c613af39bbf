"""What an engine cannot enforce is said in one line and recorded, never dropped silently; the
record names the engine, and a replay or a resume chooses one by name, never by a recorded target."""

from __future__ import annotations

import dataclasses

import pytest

from runner.core import manifest
from runner.core.engine_types import ContainerRequest, EngineInfo
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.flows import run
from runner.flows.cli_common import engine_for, engine_spec

REQ = ContainerRequest(image="i", name="n", command=["true"], environment={}, user="1000:1000", mounts=[])


class Described:
    """Enough of :class:`runner.host.engine.Engine` for the record: what it says it is."""

    def __init__(self, info: EngineInfo) -> None:
        self.info = info

    def describe(self) -> EngineInfo:
        return self.info


def test_only_what_a_request_asks_for_is_unenforced():
    rootless_v1 = EngineInfo("podman", "4.3.1", True, ("cpuset_cpus", "mem_limit"))
    assert rootless_v1.unenforced(REQ) == []  # no limit asked: nothing is missing
    limited = dataclasses.replace(REQ, cpuset_cpus="0-1", mem_limit="2g")
    assert rootless_v1.unenforced(limited) == ["cpuset_cpus=0-1", "mem_limit=2g"]
    no_netns = EngineInfo("charliecloud", "0.31", True, ("network",))
    assert no_netns.unenforced(REQ) == ["network=none"]  # every single-node run asks for no network
    assert no_netns.unenforced(dataclasses.replace(REQ, network="host")) == []
    assert EngineInfo("x", None, True, ("pid_namespace",)).unenforced(REQ) == ["pid_namespace"]
    assert EngineInfo("docker", "24", False).unenforced(limited) == []


def test_a_limit_the_engine_cannot_apply_is_said_in_one_line_and_recorded():
    lines: list[str] = []
    engine = Described(EngineInfo("podman", "4.3.1", True, ("cpuset_cpus", "mem_limit")))
    got = run._engine_record(engine, dataclasses.replace(REQ, mem_limit="2g"), lines.append)  # type: ignore[arg-type]
    assert got == manifest.Engine(name="podman", version="4.3.1", rootless=True, unenforced=["mem_limit=2g"])
    assert lines == [
        "warning: podman 4.3.1 (rootless) cannot enforce mem_limit=2g here: the run goes on without it "
        "(recorded as the manifest's engine.unenforced)"
    ]
    lines.clear()
    run._engine_record(engine, REQ, lines.append)  # type: ignore[arg-type]
    assert lines == []


def test_an_engine_is_chosen_by_name_from_the_users_own_group():
    assert engine_spec("docker") == {"_target_": "runner.host.docker_engine.DockerEngine", "base_url": None}
    assert engine_for("docker", None, "--engine NAME") == engine_spec("docker")
    assert engine_for(None, None, "--engine NAME") == engine_spec(
        "docker"
    )  # a record before engines had names
    for bad in ("runner.host.docker_engine.DockerEngine", "../engine/docker", "Docker", "x" * 41):
        with pytest.raises(RunnerError, match="not an engine name") as caught:
            engine_spec(bad)
        assert caught.value.exit_code == EXIT_USAGE
    with pytest.raises(RunnerError) as caught:
        engine_for("nosuch", None, "--engine NAME")  # a record naming an engine this machine lacks
    assert caught.value.message.startswith("the record ran on engine 'nosuch': no such engine (available: ")
    assert caught.value.message.endswith("choose one with --engine NAME")
    with pytest.raises(RunnerError, match="^engine 'nosuch': no such engine"):
        engine_for("docker", "nosuch", "--engine NAME")


def test_a_manifest_records_its_engine_and_an_older_one_reads_without():
    from tests.run_records import record

    m = manifest.Manifest.model_validate(record())
    assert m.engine is None
    rec = {**record(), "engine": {"name": "podman", "version": "4.3.1", "rootless": True, "unenforced": []}}
    assert manifest.Manifest.model_validate(rec).engine == manifest.Engine(
        name="podman", version="4.3.1", rootless=True
    )
    with pytest.raises(ValueError):
        manifest.Manifest.model_validate({**rec, "engine": {**rec["engine"], "target": "x.Y"}})
