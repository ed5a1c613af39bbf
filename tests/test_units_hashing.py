"""hashing: streaming sha256, cached by (path, size, mtime) so unchanged data is not read again."""

from __future__ import annotations

import hashlib
import os

import pytest

from runner.core import digests
from runner.host import hashing


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
