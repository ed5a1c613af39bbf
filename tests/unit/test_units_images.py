"""images.plan: an image's tag is a hash of exactly what defines it (pure, two file reads)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from runner.core import images
from runner.core.errors import RunnerError

BASE_ID = "sha256:" + "a" * 64


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "images").mkdir()
    (tmp_path / "Dockerfile.cpu").write_text("FROM ${BASE}\nRUN true\n")
    (tmp_path / "images" / "cpu.lock").write_text("torch==2.0 --hash=sha256:00\n")
    return tmp_path


def variant(**over) -> dict:
    v = {
        "dockerfile": "Dockerfile.cpu",
        "lock": "images/cpu.lock",
        "python_version": "3.11",
        "base": {"ref": "runner-base:bookworm", "digest": None},
        "build_args": {},
    }
    v.update(over)
    return v


def tag(project: Path, base_id: str = BASE_ID, **over) -> str:
    return images.plan(variant(**over), "cpu", project, base_id).tag


def test_tag_changes_with_each_input(project):
    first = tag(project)
    assert first.startswith("runner:cpu-")
    changed = set()
    (project / "Dockerfile.cpu").write_text("FROM ${BASE}\nRUN false\n")
    changed.add(tag(project))
    (project / "images" / "cpu.lock").write_text("torch==2.1 --hash=sha256:01\n")
    changed.add(tag(project))
    changed.add(tag(project, base_id="sha256:" + "b" * 64))
    changed.add(tag(project, build_args={"X": "1"}))
    changed.add(tag(project, base={"ref": "debian:bookworm", "digest": None}))
    changed.add(tag(project, base={"ref": "runner-base:bookworm", "digest": "sha256:" + "c" * 64}))
    assert first not in changed and len(changed) == 6


def test_tag_ignores_what_does_not_define_the_image(project, tmp_path_factory):
    first = tag(project, build_args={"A": "1", "B": "2"})
    assert tag(project, build_args={"B": "2", "A": "1"}) == first  # order of build args
    (project / "Dockerfile.cpu").touch()  # mtime only
    (project / "README").write_text("docs")  # other files
    moved = tmp_path_factory.mktemp("elsewhere") / "proj"
    shutil.copytree(project, moved)  # where the project lives
    assert tag(project, build_args={"A": "1", "B": "2"}) == first
    assert tag(moved, build_args={"A": "1", "B": "2"}) == first


def test_build_args_reach_the_plan_as_strings(project):
    p = images.plan(variant(build_args={"N": 3}), "cpu", project, BASE_ID)
    assert p.build_args == {"N": "3"} and p.labels()["org.runner.content-hash"] == p.content_hash


def test_missing_dockerfile_is_refused(project):
    with pytest.raises(RunnerError, match="Dockerfile.nope"):
        images.plan(variant(dockerfile="Dockerfile.nope"), "cpu", project, BASE_ID)


def test_digest_pinned_base_is_what_from_names(project):
    p = images.plan(
        variant(base={"ref": "debian:bookworm", "digest": "sha256:" + "d" * 64}), "cpu", project, BASE_ID
    )
    assert p.base == "debian@sha256:" + "d" * 64
    assert images.plan(variant(), "cpu", project, BASE_ID).base == "runner-base:bookworm"


def test_an_image_config_is_read_once_into_what_enroot_needs():
    from runner.core.json_types import ContractError
    from runner.host.image_files import ImageConfig

    doc = {
        "created": "2024-01-02T03:04:05.123456789Z",
        "config": {
            "Env": ["A=1"],
            "Cmd": None,
            "Entrypoint": ["python"],
            "Labels": {"k": "v"},
            "Volumes": {"/b": {}, "/a": {}},
        },
    }
    cfg = ImageConfig.from_json(doc)
    assert (cfg.created, cfg.working_dir, cfg.entrypoint, cfg.cmd) == (1704164645, "/", ("python",), None)
    assert (cfg.env, dict(cfg.labels), cfg.volumes) == (("A=1",), {"k": "v"}, ("/a", "/b"))
    assert ImageConfig.from_json({}) == ImageConfig(created=0)  # an image config naming nothing
    with pytest.raises(ContractError, match="the image config: config: Env must be a list"):
        ImageConfig.from_json({"config": {"Env": "A=1"}})
