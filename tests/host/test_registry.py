"""Images as artefacts with digests, against the real registry (``make registry``: Debian's
docker-registry on 127.0.0.1:5000) and the real Docker engine: a push gives the registry's content
digest; a pull by that digest gives back the very image (same id); a digest or a file that gives
another image is refused; a registry that does not answer is one line."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
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

    _gone(engine, image_id)
    with pytest.raises(RunnerError) as err:
        image_builder.exact(engine, _record("sha256:" + "3" * 64, tag), saved, lambda line: None)
    assert err.value.exit_code == EXIT_ENVIRONMENT
    assert err.value.message == (
        f"{saved} holds image {image_id}, not the recorded {'sha256:' + '3' * 64} — nothing was run"
    )
    assert (
        engine.image_id(image_id) is None and engine.image_id(tag) is None
    )  # refused unloaded: no tag moved
    not_an_image = tmp_path / "notes.txt"
    not_an_image.write_text("hello")
    with pytest.raises(RunnerError) as err:
        image_files.load(engine, not_an_image)
    assert err.value.exit_code == EXIT_USAGE and "\n" not in err.value.message


def _export(engine: Engine, image_id: str, tag: str, out: Path, fmt: str) -> image_files.ImageFile:
    written = image_files.export(engine, image_id, tag, out, fmt)
    assert written.path == out and out.is_file() and written.bytes == out.stat().st_size
    assert written.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".")] == []  # no temporary left
    return written


@pytest.mark.parametrize("fmt", ["docker-archive", "oci"])
def test_an_exported_file_is_the_same_bytes_each_time_and_loads_as_the_very_image(
    engine, small_image, tmp_path, fmt
):
    tag, image_id = small_image
    first = _export(engine, image_id, tag, tmp_path / "one", fmt)
    assert image_files.sniff(first.path) == fmt
    with tarfile.open(first.path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}

    _gone(engine, image_id)  # the image leaves this engine and comes back from the file
    assert image_files.load(engine, first.path) == [image_id]
    assert engine.image_id(tag) == image_id  # named by its recorded tag again
    engine.remove_image(tag)
    assert engine.image_id(image_id) is None
    assert image_files.load(engine, first.path) == [image_id]
    again = _export(engine, image_id, tag, tmp_path / "two", fmt)
    assert again.sha256 == first.sha256  # exported again after a round trip: the same bytes
    if fmt == "oci":
        index = json.loads(_read(first.path, "index.json"))
        manifest_doc = json.loads(_read(first.path, f"blobs/sha256/{first.oci_manifest.split(':')[1]}"))
        assert index["manifests"][0]["digest"] == first.oci_manifest
        assert manifest_doc["config"]["digest"] == image_id  # the config's bytes kept: its digest is the id


@pytest.fixture
def tree_image(engine: Engine, tmp_path: Path):
    """A small image of files only (FROM scratch): a config with variables, a working dir and a
    volume, nested dirs, a link, a file only its owner reads."""
    tree = tmp_path / "tree"
    (tree / "usr" / "bin").mkdir(parents=True)
    (tree / "usr" / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    (tree / "usr" / "bin" / "tool").chmod(0o755)
    (tree / "usr" / "bin" / "alias").symlink_to("tool")
    (tree / "etc").mkdir()
    (tree / "etc" / "secret").write_text("owner only\n")
    (tree / "etc" / "secret").chmod(0o600)
    (tree / "dev").mkdir()
    (tree / "dev" / "null-ish").write_text("enroot mounts its own /dev\n")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM scratch\nCOPY tree/ /\nENV A=1 B='two words'\n"
        'WORKDIR /work\nVOLUME /data\nCMD ["/usr/bin/tool"]\n'
    )
    tag = f"runner-test-registry:tree-{uuid.uuid4().hex[:12]}"
    image_id = engine.build(
        tag, dockerfile, {"tree": tree}, {}, {"org.runner.test": tag}, on_line=lambda line: None
    )
    yield tag, image_id
    engine.remove_image(image_id)


def test_a_squashfs_is_the_same_bytes_each_time_in_enroots_layout(engine, tree_image, tmp_path):
    tag, image_id = tree_image
    first = _export(engine, image_id, tag, tmp_path / "one.sqsh", "squashfs")
    second = _export(engine, image_id, tag, tmp_path / "two.sqsh", "squashfs")
    assert first.sha256 == second.sha256 and image_files.sniff(first.path) == "squashfs"
    listing = [line.split() for line in _unsquashfs("-lln", first.path).splitlines() if line.strip()]
    entries = {
        fields[5].removeprefix("squashfs-root"): fields for fields in listing
    }  # perm owner size date time name
    expected = {"/etc/environment", "/etc/rc", "/etc/rc.local", "/etc/fstab", "/usr/bin/tool", "/work"}
    assert expected <= set(entries)
    assert entries["/usr/bin/tool"][0] == "-rwxr-xr-x" and entries["/etc/secret"][0] == "-rw-------"
    assert entries["/usr/bin/alias"][0].startswith("l") and entries["/usr/bin/alias"][-1] == "tool"
    assert "/dev" in entries and not any(n.startswith("/dev/") for n in entries)  # enroot mounts /dev
    assert {e[1] for e in entries.values()} == {"0/0"}  # every owner root, as enroot makes them
    env = _unsquashfs("-cat", first.path, "etc/environment").splitlines()
    assert env == ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "A=1", "B=two words"]
    assert _unsquashfs("-cat", first.path, "etc/fstab") == (
        "${ENROOT_ROOTFS}/data /data none x-create=dir,bind,rw,nosuid,nodev\n"
    )
    rc = _unsquashfs("-cat", first.path, "etc/rc")
    assert f"# org.runner.test {tag}" in rc and "cd '/work' && unset OLDPWD || exit 1" in rc
    assert "    exec '/usr/bin/tool'" in rc.splitlines()
    with pytest.raises(RunnerError) as err:
        image_files.load(engine, first.path)
    assert err.value.exit_code == EXIT_USAGE and "squashfs" in err.value.message


def _unsquashfs(*args: str | Path) -> str:
    return subprocess.run(["unsquashfs", *map(str, args)], check=True, capture_output=True, text=True).stdout


def _read(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


def _layer(*entries: tuple[str, bytes | None] | tuple[str, str, bytes]) -> io.BytesIO:
    """A layer tar: (name, bytes) a file, (name, None) a directory, (name, target, SYMTYPE) a link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for entry in entries:
            info = tarfile.TarInfo(entry[0])
            info.mtime = 1_000_000
            if len(entry) == 3:
                info.type, info.linkname = entry[2], entry[1]
                tar.addfile(info)
            elif entry[1] is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size = len(entry[1])
                tar.addfile(info, io.BytesIO(entry[1]))
    buf.seek(0)
    return buf


def test_layers_apply_as_an_engine_applies_them(tmp_path):
    lower = _layer(
        ("a", None),
        ("a/keep", b"1"),
        ("a/gone", b"2"),
        ("b", None),
        ("b/old", b"3"),
        ("c", None),
        ("dev", None),
        ("dev/console", b""),
    )
    upper = _layer(
        ("a", None),
        ("a/.wh.gone", b""),  # a whiteout: removed
        ("b", None),
        ("b/.wh..wh..opq", b""),  # opaque: nothing of the lower b
        ("b/new", b"4"),
        ("c", b"now a file"),  # a directory replaced by a file
        ("l", "a", tarfile.SYMTYPE),
    )
    root = tmp_path / "root"
    root.mkdir()
    times = image_files.unpack([lower, upper], root)
    found = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert found == ["a", "a/keep", "b", "b/new", "c", "dev", "l"]
    assert (root / "c").read_text() == "now a file" and os.readlink(root / "l") == "a"
    assert os.lstat(root / "l").st_mtime == 1_000_000  # links dated too: the tree is the same each time
    assert times == {"a": 1_000_000, "b": 1_000_000, "dev": 1_000_000}


@pytest.mark.parametrize(
    "bad",
    [
        _layer(("../escape", b"x")),
        _layer(("l", "/etc", tarfile.SYMTYPE), ("l/passwd", b"x")),  # through a link, out of the tree
    ],
)
def test_a_layer_that_leaves_the_tree_is_refused(tmp_path, bad):
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(RunnerError) as err:
        image_files.unpack([bad], root)
    assert err.value.exit_code == EXIT_ENVIRONMENT and "\n" not in err.value.message
    assert sorted(p.name for p in tmp_path.rglob("*")) in (["root"], ["l", "root"])


def test_a_hard_link_out_of_the_tree_is_refused(tmp_path):
    """A hard link names its target by path, and extracting it links that file: one that leaves the
    tree (by .. or through a link) would put a file of this machine into the image."""
    (tmp_path / "secret").write_text("not the image's")
    for bad in (
        _layer(("h", "../secret", tarfile.LNKTYPE)),
        _layer(("l", str(tmp_path), tarfile.SYMTYPE), ("h", "l/secret", tarfile.LNKTYPE)),
    ):
        root = tmp_path / "root"
        root.mkdir()
        with pytest.raises(RunnerError) as err:
            image_files.unpack([bad], root)
        assert err.value.exit_code == EXIT_ENVIRONMENT and "\n" not in err.value.message
        assert not (root / "h").exists() and os.stat(tmp_path / "secret").st_nlink == 1
        shutil.rmtree(root)


def test_a_slurm_node_without_the_image_pulls_it_by_the_recorded_digest(engine, registry, small_image):
    from runner.flows.node import image_here

    tag, image_id = small_image
    ref = images.by_digest(registry, engine.push(tag, images.registry_target(registry, tag)))
    assert image_here(engine, tag, {"ref": ref, "id": image_id}, "n2") == tag  # here: as named
    _gone(engine, image_id)
    assert image_here(engine, tag, {"ref": ref, "id": image_id}, "n2") == image_id  # pulled: run by id
    _gone(engine, image_id)
    with pytest.raises(RunnerError) as err:
        image_here(engine, tag, {"ref": ref, "id": "sha256:" + "4" * 64}, "n2")
    assert (
        err.value.message
        == f"node agent: {ref} is image {image_id} on n2, not the run's {'sha256:' + '4' * 64}: refused"
    )
    _gone(engine, image_id)
    with pytest.raises(RunnerError) as err:
        image_here(engine, tag, None, "n2")
    assert err.value.exit_code == EXIT_ENVIRONMENT
    assert err.value.message.startswith(f"node agent: image {tag} is not on n2's engine: every node needs")
