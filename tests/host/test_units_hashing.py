"""hashing: streaming sha256, cached by (path, size, mtime) so unchanged data is not read again.
atomic: files and directories written whole or not at all."""

from __future__ import annotations

import hashlib
import os

import pytest

from runner.core import digests
from runner.host import atomic, hashing


@pytest.fixture
def counted(monkeypatch) -> list[str]:
    """Each real read of a file's bytes for hashing, recorded."""
    reads: list[str] = []
    real = hashing.sha256_file

    def spy(path):
        reads.append(str(path))
        return real(path)

    monkeypatch.setattr(hashing, "sha256_file", spy)
    return reads


def test_sha256_file_matches_hashlib(tmp_path):
    f = tmp_path / "f.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    f.write_bytes(data)
    assert hashing.sha256_file(f) == hashlib.sha256(data).hexdigest()


def test_cache_hits_after_an_unchanged_file_and_misses_after_a_change(tmp_path, counted):
    cache = hashing.HashCache(tmp_path / "h.sqlite")
    f = tmp_path / "data.bin"
    f.write_bytes(b"one")
    first = cache.sha256(f)
    assert cache.sha256(f) == first and len(counted) == 1  # hit: not read again

    again = hashing.HashCache(tmp_path / "h.sqlite")  # the cache outlives the process that filled it
    assert again.sha256(f) == first and len(counted) == 1

    f.write_bytes(b"two")  # same size, new content and mtime
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = cache.sha256(f)
    assert second == hashlib.sha256(b"two").hexdigest() != first and len(counted) == 2

    f.write_bytes(b"longer content")  # new size
    assert cache.sha256(f) == hashlib.sha256(b"longer content").hexdigest() and len(counted) == 3
    cache.close()
    again.close()


def test_hash_tree_lists_regular_files_only(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("a")
    (tmp_path / "sub" / "b.txt").write_text("bb")
    (tmp_path / "link").symlink_to(tmp_path / "a.txt")
    tree = hashing.hash_tree(tmp_path)
    assert list(tree) == ["a.txt", "sub/b.txt"]
    assert tree["sub/b.txt"] == {"sha256": hashlib.sha256(b"bb").hexdigest(), "bytes": 2}
    assert hashing.hash_tree(tmp_path / "missing") == {}


def test_json_hash_is_canonical():
    assert digests.sha256_json({"a": 1, "b": [1, 2]}) == digests.sha256_json({"b": [1, 2], "a": 1})
    assert digests.sha256_json({"a": 1}) != digests.sha256_json({"a": 2})


# -- atomic: whole or not at all ------------------------------------------------------------------------
def _names(d) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_a_file_replaced_through_a_handle_is_the_old_or_the_new_one(tmp_path):
    target = tmp_path / "code.tar"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic.replacing(target) as f:
        f.write(b"half of the new")
        raise RuntimeError("the disk filled up")
    assert target.read_bytes() == b"old" and _names(tmp_path) == {"code.tar"}
    with atomic.replacing(target, durable=True) as f:
        f.write(b"new")
        assert target.read_bytes() == b"old"  # not visible before the block ends
    assert target.read_bytes() == b"new" and _names(tmp_path) == {"code.tar"}
    atomic.write_text(tmp_path / "m.json", '{"é": 1}')
    assert (tmp_path / "m.json").read_text(encoding="utf-8") == '{"é": 1}'


def test_a_stream_is_kept_only_with_the_expected_hash(tmp_path):
    chunks = [b"a" * 1000, b"b" * 7]
    digest = hashlib.sha256(b"".join(chunks)).hexdigest()
    assert atomic.write_stream(tmp_path / "x.gz", iter(chunks), sha256="0" * 64) == digest
    assert _names(tmp_path) == set()  # a mismatch keeps nothing
    assert atomic.write_stream(tmp_path / "x.gz", iter(chunks), sha256=digest) == digest
    assert (tmp_path / "x.gz").read_bytes() == b"".join(chunks)

    def cut_off():
        yield b"partial"
        raise TimeoutError("the mirror went away")

    with pytest.raises(TimeoutError):
        atomic.write_stream(tmp_path / "x.gz", cut_off(), sha256=digest)
    assert (tmp_path / "x.gz").read_bytes() == b"".join(chunks) and _names(tmp_path) == {"x.gz"}


def test_a_directory_is_published_whole_once(tmp_path):
    target, calls = tmp_path / "cache" / "entry", []

    def fill(into):
        calls.append(into)
        (into / "sub").mkdir()
        (into / "sub" / "f").write_text("x")

    assert atomic.publish_dir(target, fill) == target
    assert (target / atomic.COMPLETE).is_file() and (target / "sub" / "f").read_text() == "x"
    assert calls[0].parent == target.parent and calls[0] != target
    atomic.publish_dir(target, fill)
    assert len(calls) == 1 and _names(target.parent) == {"entry"}  # complete: not filled again


@pytest.mark.parametrize("stop", [RuntimeError("refused"), KeyboardInterrupt()])
def test_a_directory_whose_filling_fails_leaves_nothing(tmp_path, stop):
    def fill(into):
        (into / "ro").mkdir()
        (into / "ro" / "f").write_text("x")
        (into / "ro").chmod(0o555)  # an extracted archive can hold directories we may not write to
        raise stop

    with pytest.raises(type(stop)):
        atomic.publish_dir(tmp_path / "entry", fill)
    assert _names(tmp_path) == set()


def test_a_directory_published_first_by_another_process_is_kept(tmp_path):
    target = tmp_path / "entry"

    def fill_while_another_publishes(into):
        (into / "mine").touch()
        target.mkdir()
        (target / "theirs").touch()
        (target / atomic.COMPLETE).touch()

    assert atomic.publish_dir(target, fill_while_another_publishes) == target
    assert _names(target) == {"theirs", atomic.COMPLETE} and _names(tmp_path) == {"entry"}
