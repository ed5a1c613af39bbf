"""Charliecloud's image cache and command line, without running anything: which unpacked image a
name finds, how a base is known by the images built on it, what ch-run is asked to do for a
request, and an entry an unpack left half-written (a tiny image file, unpacked by skopeo and umoci;
the real runs are in test_charliecloud_engine.py and e2e/test_charliecloud.py)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from runner.core.engine_types import ContainerRequest
from runner.core.errors import EXIT_USAGE, RunnerError
from runner.host.charliecloud_engine import CharliecloudEngine
from runner.host.charliecloud_images import ImageStore, StoredImage

A, B = "sha256:" + "a" * 64, "sha256:" + "b" * 64


def _store(tmp_path: Path, *images: StoredImage) -> ImageStore:
    store = ImageStore(tmp_path / "images")
    for img in images:
        d = store.root / img.id.removeprefix("sha256:")
        (d / "rootfs").mkdir(parents=True)
        (d / "image.json").write_text(json.dumps(img.record()))
    return store


def _image(image_id: str, **kw) -> StoredImage:
    return StoredImage(id=image_id, root=Path("/unused"), **kw)


def test_an_image_is_found_by_id_tag_or_digest_and_nothing_else(tmp_path):
    store = _store(
        tmp_path,
        _image(A, tags=("runner:cpu-1",), digests=("127.0.0.1:5000/runner@sha256:" + "c" * 64,)),
        _image(B, tags=("other:latest",)),
    )
    assert store.find(A).id == A and store.find("a" * 12).id == A and store.find("runner:cpu-1").id == A
    assert store.find("127.0.0.1:5000/runner@sha256:" + "c" * 64).id == A
    assert store.find("other").id == B  # a name without a tag is :latest, as Docker reads it
    assert store.find("runner:cpu-2") is None and store.find("a" * 11) is None
    assert store.find(A).root == store.root / ("a" * 64) / "rootfs"


def test_a_half_written_or_foreign_entry_is_no_image(tmp_path):
    store = _store(tmp_path, _image(A, tags=("runner:cpu-1",)))
    (store.root / ("b" * 64)).mkdir()  # an unpack that never finished: no image.json
    (store.root / "junk").mkdir()
    (store.root / "junk" / "image.json").write_text('{"id": "../../etc"}')
    (store.root / "junk" / "rootfs").mkdir()
    assert [img.id for img in store.all()] == [A]


def _tiny_archive(path: Path) -> str:
    """A docker-archive of one layer holding hello.txt; returns its image id."""

    def tar(entries: dict[str, bytes], fileobj) -> None:
        with tarfile.open(fileobj=fileobj, mode="w") as t:
            for name, data in entries.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))

    layer = io.BytesIO()
    tar({"hello.txt": b"hi\n"}, layer)
    diff_id = "sha256:" + hashlib.sha256(layer.getvalue()).hexdigest()
    config = json.dumps(
        {"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": [diff_id]}}
    ).encode()
    image_id = hashlib.sha256(config).hexdigest()
    manifest = [{"Config": f"{image_id}.json", "RepoTags": ["tiny:1"], "Layers": ["l/layer.tar"]}]
    with path.open("wb") as f:
        tar(
            {
                f"{image_id}.json": config,
                "l/layer.tar": layer.getvalue(),
                "manifest.json": json.dumps(manifest).encode(),
            },
            f,
        )
    return "sha256:" + image_id


def test_an_entry_an_unpack_left_without_its_record_is_replaced(tmp_path):
    """A runner stopped between moving an unpacked tree into place and writing its image.json
    leaves an entry that is no image; loading the image again replaces it (it was a traceback)."""
    image_id = _tiny_archive(tmp_path / "tiny.tar")
    store = ImageStore(tmp_path / "images")
    left = store.root / image_id.removeprefix("sha256:") / "rootfs"
    left.mkdir(parents=True)
    (left / "stale").write_text("from the attempt cut short")
    img = store.load_file(tmp_path / "tiny.tar")
    assert img.id == image_id and sorted(p.name for p in img.root.iterdir()) == ["hello.txt"]
    assert store.find("tiny:1").id == image_id
    assert sorted(p.name for p in store.root.iterdir() if not p.name.endswith(".lock")) == [image_id[7:]]


def test_a_base_is_known_by_the_images_built_on_it_unless_they_disagree(tmp_path):
    labels = {"org.runner.base": "runner-base:bookworm", "org.runner.base-id": "sha256:" + "e" * 64}
    store = _store(tmp_path, _image(A, labels=labels))
    assert store.base_id("runner-base:bookworm") == "sha256:" + "e" * 64
    assert store.base_id("debian:12") is None
    _store(tmp_path, _image(B, labels={**labels, "org.runner.base-id": "sha256:" + "f" * 64}))
    assert store.base_id("runner-base:bookworm") is None  # two bases of one name: no guess


def test_a_tag_moves_to_the_image_loaded_under_it(tmp_path):
    store = _store(tmp_path, _image(A, tags=("runner:cpu-1", "keep:1")), _image(B))
    store._write(store.find(B), ("runner:cpu-1",), ())
    assert store.find("runner:cpu-1").id == B and store.find("keep:1").id == A
    assert store.remove("runner:cpu-1") and store.find(B) is None and not store.remove("runner:cpu-1")


def test_the_request_becomes_exactly_this_command_line(tmp_path):
    store = _store(tmp_path, _image(A, env=("PATH=/opt/venv/bin:/usr/bin", "LANG=C.UTF-8")))
    req = ContainerRequest(
        image=A,
        name="n",
        command=["python", "-m", "runner.worker"],
        environment={"LANG": "C", "X": "a $HOME b"},
        user="1001:1002",
        mounts=[("/src/code", "/code", True), ("/src/data", "/data", True), ("/src/run", "/job", False)],
        working_dir="/code",
    )
    argv = CharliecloudEngine(cache_dir=str(tmp_path)).argv(req, store.find(A))
    ch = argv.index("ch-run")
    # the outer namespaces: own user, mounts, pids (it ends with its first process) and network
    assert argv[:ch][-5:-1] == ["prelude", "2", "/src/code", "/src/data"] and argv[ch - 1] == "--net"
    assert {"--user", "--mount", "--pid", "--kill-child", "--net"} <= set(argv[:ch])
    assert argv[ch:] == [
        "ch-run",
        "--unset-env=*",
        "--env-no-expand",  # a value is the value: no $ expanded
        "--set-env=PATH=/opt/venv/bin:/usr/bin",  # the image's own ENV first, as Docker
        "--set-env=LANG=C.UTF-8",
        "--set-env=LANG=C",  # then the request's, which wins
        "--set-env=X=a $HOME b",
        "--private-tmp",
        "--no-passwd",
        "--uid=1001",
        "--gid=1002",
        "--bind=/src/code:/code",
        "--bind=/src/data:/data",
        "--bind=/src/run:/job",
        "--cd=/code",
        str(store.find(A).root),
        "--",
        "python",
        "-m",
        "runner.worker",
    ]
    host_net = CharliecloudEngine(cache_dir=str(tmp_path)).argv(
        ContainerRequest(**{**req.to_dict(), "network": "host"}), store.find(A)
    )
    assert "--net" not in host_net[: host_net.index("ch-run")]


def test_a_mount_point_outside_the_image_is_refused(tmp_path):
    from runner.host.charliecloud_engine import _mount_points

    root = tmp_path / "rootfs"
    root.mkdir()
    req = ContainerRequest(
        image=A,
        name="n",
        command=["true"],
        environment={},
        user="1:1",
        mounts=[(str(tmp_path), "/../x", True)],
    )
    with pytest.raises(RunnerError, match="it leaves the image") as caught:
        _mount_points(root, req)
    assert caught.value.exit_code == EXIT_USAGE
