"""``image.registry`` and the references the runner records: a registry value is HOST[:PORT]/REPOSITORY
(else one line, before anything is built), an image is pushed under its content-hash tag, and
recorded as REPOSITORY@sha256:… — the one reference that cannot move."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from runner.core import images, manifest
from runner.core.errors import EXIT_USAGE, RunnerError

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    "value",
    ["127.0.0.1:5000/runner", "localhost/runner", "registry.example.org/lab/runner", "host:5000/a/b_c"],
)
def test_a_registry_is_a_host_and_a_repository(value):
    assert images.check_registry(value) == value


@pytest.mark.parametrize("value", [None, ""])
def test_no_registry_keeps_images_here(value):
    assert images.check_registry(value) is None


@pytest.mark.parametrize(
    "value",
    [
        "runner",  # a Docker Hub name: the runner never pushes there by accident
        "lab/runner",
        "127.0.0.1:5000",  # no repository
        "127.0.0.1:5000/runner:v1",  # a tag of its own
        f"127.0.0.1:5000/runner@{DIGEST}",
        "127.0.0.1:5000/Runner",
        5000,
    ],
)
def test_anything_else_is_refused_in_one_line(value):
    with pytest.raises(RunnerError) as err:
        images.check_registry(value)
    assert err.value.exit_code == EXIT_USAGE and "\n" not in err.value.message
    assert err.value.message.startswith(f"image.registry={value!r}: want HOST[:PORT]/REPOSITORY")


def test_an_image_is_pushed_under_its_content_hash_tag_and_recorded_by_digest():
    target = images.registry_target("127.0.0.1:5000/runner", "runner:cpu-0123456789abcdef0123")
    assert target == "127.0.0.1:5000/runner:cpu-0123456789abcdef0123"
    assert images.by_digest(target, DIGEST) == f"127.0.0.1:5000/runner@{DIGEST}"
    assert images.by_digest("127.0.0.1:5000/runner", DIGEST) == f"127.0.0.1:5000/runner@{DIGEST}"
    with pytest.raises(RunnerError):
        images.by_digest(target, "sha256:short")


def test_the_manifest_holds_only_a_reference_by_digest():
    fields = {n: f.default for n, f in manifest.Image.model_fields.items() if not f.is_required()}
    base = {
        "tag": "runner:cpu-x",
        "id": DIGEST,
        "kind": "cpu",
        "content_hash": "0" * 64,
        "dockerfile": "Dockerfile.cpu",
        "dockerfile_sha256": "0" * 64,
        "lock": "images/cpu.lock",
        "lock_sha256": "0" * 64,
        "base_ref": "runner-base:bookworm",
        "base_digest": None,
        "base_id": DIGEST,
        "python_version": "3.11",
        "build_args": {},
        "built_now": True,
    }
    assert fields["registry_ref"] is None and manifest.Image(**base).registry_ref is None
    ok = manifest.Image(**base, registry_ref=f"127.0.0.1:5000/runner@{DIGEST}")
    assert ok.registry_ref == f"127.0.0.1:5000/runner@{DIGEST}"
    with pytest.raises(ValidationError):
        manifest.Image(**base, registry_ref="127.0.0.1:5000/runner:cpu-x")  # a tag can move: never recorded
