"""A Slurm sweep's jobs run the image the sweep resolved, by its id (``launch.image_id``, which a
node's slot sets): found on the node's engine under that id, never by a tag and never built there.
Driven by the in-memory engine (this project's own protocol); the real thing is tests/e2e/test_slurm."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.core import spec
from runner.core.errors import EXIT_ENVIRONMENT, RunnerError
from runner.flows.cli_common import compose
from runner.host import image_builder
from tests.conftest import ROOT
from tests.memory_engine import MemoryEngine

IMAGE = "sha256:" + "ab" * 32
BASE = "runner-base:bookworm"


class Holding(MemoryEngine):
    """An engine holding exactly these references (each its own id), and building nothing."""

    def __init__(self, *held: str) -> None:
        super().__init__(fail={"build": AssertionError("a pinned image is never built")})
        self.held = set(held)

    def image_id(self, ref: str) -> str | None:
        return ref if ref in self.held else None


class Registry(Holding):
    """… and a registry that serves ``served`` (a digest reference → the image id a pull gives)."""

    def __init__(self, served: dict[str, str], *held: str) -> None:
        super().__init__(*held)
        self.served = served

    def pull(self, ref: str) -> str | None:
        self.calls.append(f"pull {ref}")
        got = self.served.get(ref)
        if got:
            self.held.add(got)
        return got


def _plan(tmp_path: Path, *overrides: str) -> spec.RunPlan:
    cfg = OmegaConf.to_container(compose(["image=cpu", *overrides]), resolve=True)
    return spec.plan_run(cfg, tmp_path / "run", ROOT, spec.Host(os.environ, os.getuid(), os.getgid()))


def test_a_pinned_image_is_run_by_its_id_and_recorded_as_the_plans_image(tmp_path):
    plan = _plan(tmp_path, f"+launch.image_id={IMAGE}")
    got = image_builder.resolve_image(Registry({}, BASE, IMAGE), plan, ROOT, echo=lambda line: None)
    assert got.tag == IMAGE and got.record["id"] == IMAGE  # the container is started by id
    assert got.record["tag"].startswith("runner:cpu-") and got.record["built_now"] is False


def test_a_node_without_the_pinned_image_is_one_line_and_builds_nothing(tmp_path):
    plan = _plan(tmp_path, f"+launch.image_id={IMAGE}")
    engine = Holding(BASE, "runner:cpu-whatever")  # a tag is no substitute for the id
    with pytest.raises(RunnerError) as err:
        image_builder.resolve_image(engine, plan, ROOT, echo=lambda line: None)
    assert err.value.exit_code == EXIT_ENVIRONMENT
    assert f"image {IMAGE} (the one this sweep resolved for runner:cpu-" in err.value.message
    assert "not on this node's engine" in err.value.message and "\n" not in err.value.message
    assert "build" not in engine.calls


REF = "127.0.0.1:5000/runner@sha256:" + "cd" * 32


def test_a_node_without_the_pinned_image_pulls_it_by_the_sweeps_digest(tmp_path):
    plan = _plan(tmp_path, f"+launch.image_id={IMAGE}", f"+launch.image_ref={REF}")
    engine = Registry({REF: IMAGE}, BASE)
    said: list[str] = []
    got = image_builder.resolve_image(engine, plan, ROOT, echo=said.append)
    assert got.tag == IMAGE and got.record["id"] == IMAGE and f"pull {REF}" in engine.calls
    assert said == [f"pulling {REF} (the sweep's image {IMAGE}, by digest)"]


def test_a_digest_that_gives_another_image_is_refused(tmp_path):
    plan = _plan(tmp_path, f"+launch.image_id={IMAGE}", f"+launch.image_ref={REF}")
    other = "sha256:" + "ef" * 32
    with pytest.raises(RunnerError) as err:
        image_builder.resolve_image(Registry({REF: other}, BASE), plan, ROOT, echo=lambda line: None)
    assert err.value.message == f"{REF} is image {other}, not the sweep's {IMAGE}: refused"
    with pytest.raises(RunnerError) as err:  # a registry that does not answer
        image_builder.resolve_image(Registry({}, BASE), plan, ROOT, echo=lambda line: None)
    assert f"not on this node's engine, and {REF} could not be pulled" in err.value.message
