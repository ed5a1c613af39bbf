"""Images as artefacts with digests, against the real registry (``make registry``: Debian's
docker-registry on 127.0.0.1:5000) and the real Docker engine: a push gives the registry's content
digest; a pull by that digest gives back the very image (same id); a digest or a file that gives
another image is refused; a registry that does not answer is one line."""

from __future__ import annotations

import urllib.request
import uuid
from pathlib import Path

import pytest

from runner.core import images, manifest
from runner.core.errors import EXIT_ENVIRONMENT, EXIT_USAGE, RunnerError
from runner.host import image_builder, image_files
from runner.host.engine import Engine

pytestmark = pytest.mark.docker

REGISTRY = "127.0.0.1:5000/runner-test-registry"
BASE = "runner-base:bookworm"


@pytest.fixture(scope="module")
def registry() -> str:
    try:
        with urllib.request.urlopen(f"http://{REGISTRY.split('/')[0]}/v2/", timeout=5) as answer:
            assert answer.headers.get("Docker-Distribution-Api-Version") == "registry/2.0"
    except OSError:
        pytest.fail(
            "no registry answers on 127.0.0.1:5000: `make registry` (scripts/ensure-registry.sh) starts it"
        )
    return REGISTRY


@pytest.fixture
def small_image(engine: Engine, tmp_path: Path):
    """An image of the test's own (the base plus a label unique to the test): a new id, small to push."""
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\n")
    tag = f"runner-test-registry:{uuid.uuid4().hex[:12]}"
    image_id = engine.build(
        tag, tmp_path / "Dockerfile", {}, {}, {"org.runner.test-registry": tag}, on_line=lambda line: None
    )
    yield tag, image_id
    engine.remove_image(image_id)


def _record(image_id: str, tag: str, registry_ref: str | None = None) -> manifest.Image:
    """The manifest's image section of a run in ``image_id`` (the fields a replay reads)."""
    return manifest.Image(
        tag=tag,
        id=image_id,
        kind="cpu",
        content_hash="0" * 64,
        dockerfile="Dockerfile.cpu",
        dockerfile_sha256="0" * 64,
        lock="images/cpu.lock",
        lock_sha256="0" * 64,
        base_ref=BASE,
        base_digest=None,
        base_id="sha256:" + "0" * 64,
        python_version="3.11",
        build_args={},
        built_now=False,
        registry_ref=registry_ref,
    )


def _gone(engine: Engine, image_id: str) -> None:
    engine.remove_image(image_id)
    assert engine.image_id(image_id) is None


def test_a_pushed_image_comes_back_by_its_digest_as_the_very_image(engine, registry, small_image):
    tag, image_id = small_image
    target = images.registry_target(registry, tag)
    digest = engine.push(tag, target)
    assert digest.startswith("sha256:") and len(digest) == 71
    assert engine.push(tag, target) == digest  # pushing what the registry holds changes nothing
    assert engine.image_id(target) is None and engine.image_id(tag) == image_id  # its names as they were
    ref = images.by_digest(target, digest)
    assert ref == f"{registry}@{digest}"

    _gone(engine, image_id)
    record = _record(image_id, tag, ref)
    lines: list[str] = []
    exact = image_builder.exact(engine, record, None, lines.append)
    assert exact.image is not None and exact.image.tag == image_id  # run by id, whatever tags say
    assert exact.how == f"pulled {ref} (the recorded digest and image id)"
    assert lines == [f"pulling {ref} (the recorded digest)"]
    assert engine.image_id(image_id) == image_id and engine.image_digest(image_id) == digest

    # a record naming that digest for another image id: what the registry gives is refused
    other = _record("sha256:" + "1" * 64, tag, ref)
    with pytest.raises(RunnerError) as err:
        image_builder.exact(engine, other, None, lambda line: None)
    assert err.value.exit_code == EXIT_ENVIRONMENT
    assert err.value.message == (
        f"{ref} is image {image_id}, not the recorded {'sha256:' + '1' * 64}: refused — nothing was run"
    )


def test_a_digest_the_registry_lacks_or_no_registry_is_said_not_raised(engine, registry, small_image):
    tag, image_id = small_image
    _gone(engine, image_id)
    for ref in (f"{registry}@sha256:{'2' * 64}", f"127.0.0.1:5999/nothing@sha256:{'2' * 64}"):
        exact = image_builder.exact(engine, _record(image_id, tag, ref), None, lambda line: None)
        assert exact.image is None and exact.how.startswith(f"{ref} could not be pulled")
    exact = image_builder.exact(engine, _record(image_id, tag), None, lambda line: None)
    assert exact.image is None and exact.how == image_builder.NO_COPY


def test_a_push_to_no_registry_is_one_line(engine, small_image):
    tag, _ = small_image
    with pytest.raises(RunnerError) as err:
        engine.push(tag, "127.0.0.1:5999/runner-test-registry:nothing")
    assert err.value.exit_code == EXIT_ENVIRONMENT and "\n" not in err.value.message
    assert err.value.message.startswith("cannot push 127.0.0.1:5999/runner-test-registry:nothing: ")


def test_an_image_file_must_hold_the_recorded_image(engine, small_image, tmp_path):
    tag, image_id = small_image
    saved = tmp_path / "image.tar"
    with saved.open("wb") as f:
        engine.save(tag, f)
    _gone(engine, image_id)
    exact = image_builder.exact(engine, _record(image_id, tag), saved, lambda line: None)
    assert exact.image is not None and engine.image_id(tag) == image_id
    assert exact.how == f"loaded {tag} from {saved} (the recorded image id)"

    with pytest.raises(RunnerError) as err:
        image_builder.exact(engine, _record("sha256:" + "3" * 64, tag), saved, lambda line: None)
    assert err.value.exit_code == EXIT_ENVIRONMENT
    assert err.value.message == (
        f"{saved} holds image {image_id}, not the recorded {'sha256:' + '3' * 64} — nothing was run"
    )
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    with pytest.raises(RunnerError) as err:
        image_files.load(engine, not_an_image)
    assert err.value.exit_code == EXIT_USAGE and "\n" not in err.value.message
