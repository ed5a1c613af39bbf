"""The CUDA image builds hermetically from images/cuda.lock and keeps the wheelhouse out of its
layers. Slow (a ~3 GB wheelhouse): `make test-slow`. The image also trains on a CPU-only host,
since torch's CUDA build runs on the CPU, so its launch path is checked here too."""

from __future__ import annotations

import pytest

from tests.conftest import FAST, manifest, run_runner

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def test_cuda_image_builds_without_carrying_its_wheels_and_trains(tmp_path, engine):
    run_dir = tmp_path / "run"
    proc = run_runner("image=cuda", *FAST, f"hydra.run.dir={run_dir}", timeout=1800)
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = manifest(run_dir)
    assert m["image"]["kind"] == "cuda" and m["image"]["tag"].startswith("runner:cuda-")
    assert any(p.startswith("torch==2.14.1") for p in m["packages"])
    assert any(p.startswith("nvidia-cudnn") for p in m["packages"])

    image = engine.client.images.get(m["image"]["tag"])
    steps = " ".join(h.get("CreatedBy", "") for h in image.history())
    assert "/tmp/wheels" not in steps, "the wheelhouse reached a layer of the final image"
    big = [h for h in image.history() if h["Size"] > 100_000_000]
    # the base's root filesystem and the installed /opt/venv; a copied wheelhouse would be a third
    assert len(big) == 2, [(h["CreatedBy"][-60:], h["Size"]) for h in big]
