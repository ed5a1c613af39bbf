"""The Charliecloud engine against the real ``ch-run``, as the unprivileged user it is for
(``runner-ci``; ``make charliecloud`` makes it): a container is a process tree the engine tracks,
locked down as a Docker one is, and nothing of it outlives its removal. What the user's engine did
comes back from ``tests/charliecloud_probe.py`` as JSON."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from runner.core.engine_types import ContainerRequest
from runner.core.errors import EXIT_BUILD, EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.flows.cli_common import engine_spec
from runner.host import engine as engines
from runner.host.charliecloud_engine import CharliecloudEngine
from runner.host.charliecloud_images import ImageStore
from runner.host.engine import Engine
from tests import ci_user

pytestmark = pytest.mark.docker  # the image comes from the Docker engine, once per machine
BASE = "runner-base:bookworm"


@pytest.fixture
def scratch():
    path = ci_user.scratch("ch")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _probe(case: str, image: str, scratch: Path) -> dict:
    proc = ci_user.run_as(sys.executable, "-m", "tests.charliecloud_probe", case, image, str(scratch))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_a_container_is_the_runners_handle_from_start_to_removal(charliecloud_image, scratch):
    tag, _, _ = charliecloud_image
    seen = _probe("contract", tag, scratch)
    assert seen == {"listed": True, "lines": ["one", "hi", "1000", "last"], "exit": 3, "after": 0}


def test_the_container_is_locked_down_and_its_environment_is_exactly_the_requested_one(
    charliecloud_image, scratch
):
    tag, _, _ = charliecloud_image
    lines = _probe("locks", tag, scratch)["lines"]
    env = dict(line.split("=", 1) for line in lines if "=" in line and ":" not in line.split("=", 1)[0])
    # the image's own ENV (as Docker starts a container with it), then the request's; nothing of
    # the host's or the user's: only Charliecloud's marker and the shell's PWD come on top
    assert env.pop("CH_RUNNING") and env.pop("PWD") == "/code"
    assert env == {
        "PATH": "/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
        "GREETING": "hi",
        "HOME": "/tmp",
    }
    for want in ("code:ro", "job:rw", "image:ro", "net:lo,", "CapEff:0000000000000000", "NoNewPrivs:1"):
        assert want in lines, (want, lines)
    # a pid namespace of its own: the shell is its first process, and it sees only what it started
    pid, pids = next(x for x in lines if x.startswith("pid:")).split()
    assert pid == "pid:1" and int(pids.split(":")[1]) <= 5


def test_a_stopped_container_leaves_no_process(charliecloud_image, scratch):
    tag, _, _ = charliecloud_image
    seen = _probe("stop", tag, scratch)
    assert seen["first"] == "up" and seen["sleeping"] == 2
    assert seen["left"] == 0 and seen["listed"] == 0
    assert seen["seconds"] < 10


def test_what_it_refuses_is_one_line_and_leaves_nothing(charliecloud_image, scratch):
    tag, _, _ = charliecloud_image
    seen = _probe("refusals", tag, scratch)
    assert seen["absent"][0] == EXIT_ENVIRONMENT
    assert seen["absent"][1].startswith("image runner-test:no-such-image not found in Charliecloud's images")
    assert "runner export RUN_DIR -o FILE" in seen["absent"][1]
    assert seen["gpu"][0] == EXIT_USAGE and "ch-fromhost --nvidia" in seen["gpu"][1]
    assert seen["build"][0] == EXIT_BUILD and "does not build images" in seen["build"][1]
    assert all("\n" not in v[1] for v in (seen["absent"], seen["gpu"], seen["build"]))
    assert seen["listed"] == 0


def test_it_never_runs_a_container_as_root(charliecloud_image, tmp_path):
    tag, _, _ = charliecloud_image
    engine = CharliecloudEngine(cache_dir=str(ci_user_cache()))
    req = ContainerRequest(
        image=tag, name="root-refused", command=["true"], environment={}, user="1000:1000", mounts=[]
    )
    with pytest.raises(RunnerError, match="runs containers unprivileged: run the runner as a non-root user"):
        engine.start(req)
    assert engine.containers_labelled("org.runner.run-id") == []


def test_the_unpacked_image_knows_which_image_it_is(charliecloud_image):
    """Cached by image id: the directory holds the root fs and says what image it came from."""
    tag, image_id, _ = charliecloud_image
    store = ImageStore(ci_user_cache() / "images")
    img = store.find(tag)
    assert img is not None and img.id == image_id and store.find(image_id) == img
    assert img.root == store.root / image_id.removeprefix("sha256:") / "rootfs"
    meta = json.loads((img.root.parent / "image.json").read_text())
    assert meta["id"] == image_id and tag in meta["tags"]
    assert (img.root / "opt/venv/bin/python").exists()
    # the base it was built on is known by its label: what the image's content hash is made of
    assert store.base_id("runner-base:bookworm") == img.labels["org.runner.base-id"]


def ci_user_cache() -> Path:
    return Path(ci_user.account().pw_dir) / ".cache" / "runner" / "charliecloud"


def test_engine_charliecloud_is_this_engine_behind_the_protocol():
    engine = engines.make(engine_spec("charliecloud"))
    assert isinstance(engine, CharliecloudEngine) and isinstance(engine, Engine)
    info = engine.describe()
    assert (info.name, info.rootless) == ("charliecloud", True) and info.version
    assert set(info.cannot_enforce) == {"cpuset_cpus", "mem_limit", "shm_size"}
    # what a request asks of those is what a run says and records; nothing else is dropped
    req = ContainerRequest(
        image="x", name="x", command=["true"], environment={}, user="1:1", mounts=[], mem_limit="2g"
    )
    assert info.unenforced(req) == ["mem_limit=2g", "shm_size=1g"]


PULL = """
import json, sys
from runner.core.errors import RunnerError
from runner.host.charliecloud_engine import CharliecloudEngine
engine = CharliecloudEngine(cache_dir=sys.argv[1])
ref, wrong = sys.argv[2], sys.argv[3]
got = engine.pull(ref)
seen = {"id": got, "again": engine.pull(ref), "digest": engine.image_digest(ref),
        "by_id": engine.image_id(got or "none"), "wrong": engine.pull(wrong),
        "pushed": engine.push(got, ref.split("@")[0] + ":again")}
try:
    engine.push(got, "127.0.0.1:5000/elsewhere:x")
except RunnerError as exc:
    seen["refused"] = exc.message
print(json.dumps(seen))
"""


def test_an_image_is_pulled_by_digest_from_the_registry_and_nothing_else(engine, scratch):
    """A node without the image pulls it by the digest its record holds (a registry on this machine,
    plain HTTP as Docker allows for 127.0.0.1); a digest the registry does not hold gets nothing. A
    push (image.registry) finds it there already; nothing else is pushed from an unpacked image."""
    registry = "127.0.0.1:5000/runner-test-charliecloud"
    digest = engine.push(BASE, f"{registry}:bookworm")
    ref, wrong = f"{registry}@{digest}", f"{registry}@sha256:{'0' * 64}"
    proc = ci_user.run_as(sys.executable, "-c", PULL, str(scratch / "cache"), ref, wrong)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    base_id = engine.image_id(BASE)
    assert seen.pop("refused").startswith("engine=charliecloud does not push images")
    assert seen == {
        "id": base_id,
        "again": base_id,
        "digest": digest,
        "by_id": base_id,
        "wrong": None,
        "pushed": digest,
    }


def test_a_container_record_reads_back_and_one_of_another_shape_is_passed_over(tmp_path):
    """What finds a container again from another process (its name, labels, the very process)."""
    from runner.host.charliecloud_engine import ContainerRecord, _read_record, _write_record

    rec = ContainerRecord("c1", "runner-x", 123, "456", {"org.runner.run-id": "r"})
    _write_record(tmp_path / "c1.json", rec)
    assert _read_record(tmp_path / "c1.json") == rec
    for torn in ('{"id": "c1", "name": "runner-x"}', '{"id": "c1", "name": "x", "pid": "1"}', "[]", "{"):
        (tmp_path / "c1.json").write_text(torn)
        assert _read_record(tmp_path / "c1.json") is None
