"""`dataset=mnist` downloads missing files on the host, keeps only those whose sha256 matches, and
fails offline with one line naming the alternatives. The mirror is our own HTTP server on
127.0.0.1 serving small IDX files cut from Debian's Fashion-MNIST."""

from __future__ import annotations

import functools
import gzip
import http.server
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from runner.core.errors import EXIT_ENVIRONMENT, RunnerError
from runner.host import datasets
from runner.host.hashing import HashCache, sha256_file
from tests.cli_output import error_line
from tests.conftest import FAST, manifest, run_runner

FASHION = Path("/usr/share/datasets/fashion-mnist")
SIZES = {
    "train-images-idx3-ubyte.gz": 4096,
    "train-labels-idx1-ubyte.gz": 4096,
    "t10k-images-idx3-ubyte.gz": 512,
    "t10k-labels-idx1-ubyte.gz": 512,
}


def cut_idx(src: Path, dst: Path, n: int) -> None:
    """The first ``n`` items of an IDX file, with the header's count rewritten; gzip bytes reproducible."""
    raw = gzip.decompress(src.read_bytes())
    ndim = raw[3]
    dims = list(struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim]))
    item = 1
    for d in dims[1:]:
        item *= d
    dims[0] = n
    body = raw[4 + 4 * ndim : 4 + 4 * ndim + n * item]
    dst.write_bytes(gzip.compress(raw[:4] + struct.pack(f">{ndim}I", *dims) + body, mtime=0))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args) -> None:
        _Quiet.requests.append(self.path)


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Iterator[tuple[str, dict[str, str]]]:
    """(URL of a local mirror, {file name: sha256}) for four small MNIST-format files."""
    served = tmp_path_factory.mktemp("mirror")
    for name, n in SIZES.items():
        cut_idx(FASHION / name, served / name, n)
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", {n: sha256_file(served / n) for n in SIZES}
    finally:
        server.shutdown()
        server.server_close()


def overrides(root: Path, url: str, sums: dict[str, str]) -> list[str]:
    return [
        f"dataset.root={root}",
        f"dataset.download.mirrors=[{url}]",
        "dataset.download.sha256={" + ",".join(f"{k}:{v}" for k, v in sums.items()) + "}",
    ]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.docker
def test_missing_files_are_downloaded_verified_and_recorded(mirror, tmp_path):
    url, sums = mirror
    root, run_dir = tmp_path / "data", tmp_path / "run"
    _Quiet.requests.clear()
    proc = run_runner(f"hydra.run.dir={run_dir}", "dataset=mnist", *FAST, *overrides(root, url, sums))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(_Quiet.requests) == sorted(f"/{n}" for n in SIZES)
    assert sorted(p.name for p in root.iterdir()) == sorted(SIZES)  # no partial downloads left
    assert {n: sha256_file(root / n) for n in SIZES} == sums
    m = manifest(run_dir)
    assert m["status"] == "completed" and m["data"]["name"] == "mnist" and m["data"]["root"] == str(root)
    assert {n: rec["sha256"] for n, rec in m["data"]["files"].items()} == sums


def test_a_wrong_checksum_is_refused_and_nothing_is_kept(mirror, tmp_path):
    url, sums = mirror
    root = tmp_path / "data"
    wrong = {**sums, "train-images-idx3-ubyte.gz": "0" * 64}
    proc = run_runner(f"hydra.run.dir={tmp_path / 'run'}", "dataset=mnist", *overrides(root, url, wrong))
    line = error_line(proc, EXIT_ENVIRONMENT)
    assert "train-images-idx3-ubyte.gz: checksum mismatch, file not kept" in line
    assert f"expected {'0' * 12}" in line and sums["train-images-idx3-ubyte.gz"][:12] in line
    assert list(root.iterdir()) == []


def test_offline_fails_in_one_line_naming_the_alternatives(mirror, tmp_path):
    _, sums = mirror
    root = tmp_path / "data"
    dead = f"http://127.0.0.1:{closed_port()}/"
    proc = run_runner(f"hydra.run.dir={tmp_path / 'run'}", "dataset=mnist", *overrides(root, dead, sums))
    line = error_line(proc, EXIT_ENVIRONMENT)
    assert "cannot download train-images-idx3-ubyte.gz" in line and "offline?" in line
    for alternative in (str(root), "dataset.download.mirrors", "dataset=fashion_mnist"):
        assert alternative in line
    assert list(root.iterdir()) == []


def test_a_present_file_with_the_wrong_hash_is_refused(mirror, tmp_path):
    _, sums = mirror
    root = tmp_path / "data"
    root.mkdir()
    for name in SIZES:
        (root / name).write_bytes(b"not the data")
    cfg = {
        "name": "mnist",
        "root": str(root),
        "files": {"a": "train-images-idx3-ubyte.gz"},
        "download": {"mirrors": [], "sha256": sums},
    }
    with pytest.raises(RunnerError, match="delete it to download it again"):
        datasets.prepare(cfg, HashCache(tmp_path / "h.sqlite"), log=lambda line: None)


def test_downloads_need_a_pinned_checksum(tmp_path):
    cfg = {
        "name": "mnist",
        "root": str(tmp_path / "data"),
        "files": {"a": "x.gz"},
        "download": {"mirrors": ["http://127.0.0.1:9/"], "sha256": {}},
    }
    with pytest.raises(RunnerError, match="no sha256 for x.gz"):
        datasets.prepare(cfg, HashCache(tmp_path / "h.sqlite"), log=lambda line: None)


def test_the_shipped_mnist_checksums_are_the_published_ones():
    """sha256 of the original MNIST files as TFDS, Keras and many projects publish them."""
    from omegaconf import OmegaConf

    from tests.conftest import ROOT

    published = {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }
    conf = OmegaConf.load(ROOT / "conf" / "dataset" / "mnist.yaml")
    assert OmegaConf.to_container(conf.download.sha256) == published
    assert sorted(conf.files.values()) == sorted(published)
