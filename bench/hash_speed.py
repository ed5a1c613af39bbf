"""Figure 3: hashing data and outputs for the manifest.

* first hash: :func:`runner.host.hashing.sha256_file` over a file of ``size`` random bytes, in the
  page cache (as outputs just written are) — the runner's own cost, goal ≥ 1 GB/s;
* cold: the same after evicting the file from the page cache (fsync + ``POSIX_FADV_DONTNEED``),
  beside a plain read of it, so the disk's share is visible — recorded, not judged;
* second run: :class:`runner.host.hashing.HashCache` over the unchanged file, opened afresh as a new
  run would — one ``stat`` and one indexed lookup, goal < 10 ms per file.

GB here is 10⁹ bytes. The file lives in a temporary directory and is deleted afterwards.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

from bench.results import Figure, Goal, load_average, median
from runner.host.hashing import CHUNK, HashCache, sha256_file

HITS_PER_REP = 20


def _write_random(path: Path, size: int) -> None:
    block = os.urandom(16 << 20)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
        f.flush()
        os.fsync(f.fileno())


def _evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _read_all(path: Path) -> None:
    buf = bytearray(CHUNK)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def _timed(fn, *args) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - started, out


def _in_memory_gbps(nbytes: int = 64 << 20) -> float:
    """hashlib's own sha256 speed on bytes already in memory: the ceiling for any file reader."""
    data = os.urandom(nbytes)
    seconds, _ = _timed(lambda: hashlib.sha256(data).digest())
    return nbytes / seconds / 1e9


def measure(size: int, reps: int, work: Path, log) -> list[Figure]:
    load = load_average()
    path = work / "hash-bench.bin"
    _write_random(path, size)
    try:
        warm, cold, cold_read, ceiling, digests = [], [], [], [], set()
        for i in range(reps):
            _evict(path)
            seconds, _ = _timed(_read_all, path)
            cold_read.append(size / seconds / 1e9)
            _evict(path)
            seconds, digest = _timed(sha256_file, path)
            cold.append(size / seconds / 1e9)
            digests.add(digest)
            seconds, digest = _timed(sha256_file, path)  # the cold pass just put it in the page cache
            warm.append(size / seconds / 1e9)
            digests.add(digest)
            ceiling.append(_in_memory_gbps())
            log(
                f"  rep {i + 1}/{reps}: in page cache {warm[-1]:.2f} GB/s, cold {cold[-1]:.2f} GB/s "
                f"(plain cold read {cold_read[-1]:.2f} GB/s)"
            )

        db = work / "hash-bench.sqlite"
        first = HashCache(db)
        miss_seconds, first_digest = _timed(first.sha256, path)
        first.close()
        hits_ms, open_ms, hit_digests = [], [], set()
        for _ in range(reps):
            open_s, cache = _timed(HashCache, db)  # a new run opens the shared cache afresh
            open_ms.append(open_s * 1e3)
            rep = []
            for _ in range(HITS_PER_REP):
                seconds, digest = _timed(cache.sha256, path)
                rep.append(seconds * 1e3)
                hit_digests.add(digest)
            cache.close()
            hits_ms.append(median(rep))
    finally:
        path.unlink(missing_ok=True)

    common = {"file_bytes": size, "chunk_bytes": CHUNK, "function": "runner.host.hashing.sha256_file"}
    return [
        Figure(
            id="hash_first_gbps",
            title="sha256 of a file, first time (in page cache)",
            unit="GB/s",
            samples=warm,
            goal=Goal(">=", 1.0),
            checks={"same_digest_every_pass": len(digests) == 1},
            details={
                **common,
                "in_memory_sha256_gbps": ceiling,
                "in_memory_sha256_median": median(ceiling),
                "note": "in_memory_sha256 is hashlib over bytes already in memory: the ceiling a "
                "reader can reach on this CPU",
            },
            load_average=load,
        ),
        Figure(
            id="hash_cold_gbps",
            title="sha256 of a file, first time (cold, evicted from page cache)",
            unit="GB/s",
            samples=cold,
            details={
                **common,
                "plain_cold_read_gbps": cold_read,
                "plain_cold_read_median": median(cold_read),
                "eviction": "fsync + posix_fadvise(POSIX_FADV_DONTNEED)",
                "note": "bounded by the disk: compare plain_cold_read, the same file read without hashing",
            },
            load_average=load,
        ),
        Figure(
            id="hash_cache_hit_ms",
            title="sha256 of an unchanged file, second run (HashCache hit)",
            unit="ms/file",
            samples=hits_ms,
            goal=Goal("<", 10.0),
            checks={"hit_returns_first_digest": hit_digests == {first_digest}},
            details={
                "file_bytes": size,
                "first_hash_seconds": miss_seconds,
                "lookups_per_rep": HITS_PER_REP,
                "cache_open_ms": open_ms,
                "keyed_by": "absolute path, size, mtime_ns",
            },
            load_average=load,
        ),
    ]
