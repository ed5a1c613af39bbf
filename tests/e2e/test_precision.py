"""The precision group: composed apart from determinism, checked before a run, applied and read back
in training, and held against the record by a replay."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from runner.core import compare, precision, settings
from runner.core.errors import RunnerError
from tests.conftest import FAST, ROOT, manifest, run_runner


def group(kind: str, name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / kind / f"{name}.yaml"))


def test_the_default_is_full_fp32_and_determinism_carries_no_precision():
    defaults = OmegaConf.load(ROOT / "conf" / "config.yaml")["defaults"]
    assert {"precision": "fp32"} in defaults
    for profile in ("strict", "fast"):
        assert "allow_tf32" not in group("determinism", profile)
    fp32 = group("precision", "fp32")
    assert fp32["lightning"] == "32-true" and fp32["float32_matmul_precision"] == "highest"
    assert fp32["cudnn_allow_tf32"] is False
    assert group("determinism", "strict")["fill_uninitialized_memory"] is False


@pytest.mark.parametrize(
    "name, lightning, matmul",
    [("fp32", "32-true", "highest"), ("tf32", "32-true", "high"), ("bf16", "bf16-mixed", "high")],
)
def test_each_option_resolves(name, lightning, matmul):
    cfg = {"precision": group("precision", name), "determinism": group("determinism", "strict")}
    out = precision.resolve(cfg)
    assert out["lightning"] == lightning and out["float32_matmul_precision"] == matmul


def test_a_record_from_before_the_group_resolves_to_none():
    legacy = {"determinism": {**group("determinism", "strict"), "allow_tf32": False}}
    assert precision.resolve(legacy) is None


@pytest.mark.parametrize(
    "cfg, match",
    [
        ({"determinism": {"allow_tf32": True}}, "determinism.allow_tf32"),
        ({"trainer": {"precision": "16-mixed"}}, "trainer.precision"),
        ({"precision_patch": {"lightning": "8-bit"}}, "precision.lightning"),
        ({"precision_patch": {"float32_matmul_precision": "low"}}, "float32_matmul_precision"),
        ({"precision_patch": {"cudnn_allow_tf32": "yes"}}, "cudnn_allow_tf32"),
    ],
)
def test_precision_set_twice_or_wrongly_is_refused(cfg, match):
    cfg = dict(cfg)
    full = {"precision": {**group("precision", "fp32"), **cfg.pop("precision_patch", {})}, **cfg}
    with pytest.raises(RunnerError, match=match):
        precision.resolve(full)


def _verdict(**kw) -> compare.Verdict:
    base = dict(
        bit_identical=True,
        status="completed",
        outputs_compared=1,
        outputs=[],
        fingerprints_identical=True,
        divergence=None,
        metrics=[],
        environment=[],
        packages=[],
        drift=[],
    )
    return compare.Verdict(**{**base, **kw})


def test_a_replay_under_other_switches_is_not_identical():
    rec = {"matmul_allow_tf32": False, "lightning_precision": "32-true", "num_threads": 1}
    same = settings.hold_to_switches(_verdict(), settings.flag_drift(rec, {**rec, "num_threads": 8}))
    assert same.bit_identical  # host facts are not switches
    other = settings.hold_to_switches(
        _verdict(), settings.flag_drift(rec, {**rec, "matmul_allow_tf32": True})
    )
    assert not other.bit_identical and [d.what for d in other.switches] == ["flag matmul_allow_tf32"]
    assert "matmul_allow_tf32" in other.headline()
    assert other.to_json()["switches"][0]["recorded"] == "False"


def test_switches_a_record_never_read_back_are_not_held_against_it():
    old = {
        "matmul_allow_tf32": False
    }  # recorded before fill_uninitialized_memory or Lightning's precision were read
    new = {"matmul_allow_tf32": False, "fill_uninitialized_memory": False, "lightning_precision": "32-true"}
    assert settings.flag_drift(old, new) == []
    assert settings.flag_drift(None, new) == []
    held = settings.hold_to_switches(_verdict(), settings.flag_drift(None, new))
    assert dataclasses.asdict(held) == dataclasses.asdict(_verdict())


@pytest.mark.parametrize(
    "name, expect",
    [
        (
            "fp32",
            {"float32_matmul_precision": "highest", "matmul_allow_tf32": False, "cudnn_allow_tf32": False},
        ),
        ("tf32", {"float32_matmul_precision": "high", "matmul_allow_tf32": True, "cudnn_allow_tf32": True}),
    ],
)
def test_the_worker_applies_and_reads_back(name, expect):
    import torch

    from runner.worker import determinism

    saved = (
        torch.get_float32_matmul_precision(),
        torch.backends.cudnn.allow_tf32,
        torch.utils.deterministic.fill_uninitialized_memory,
        torch.get_num_threads(),
    )
    try:
        flags = determinism.apply({"fill_uninitialized_memory": False}, 0, group("precision", name))
        assert {k: flags[k] for k in expect} == expect and flags["fill_uninitialized_memory"] is False
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]
        torch.utils.deterministic.fill_uninitialized_memory = saved[2]
        torch.set_num_threads(saved[3])


def test_the_worker_applies_a_legacy_profile_as_it_was_run():
    import torch

    from runner.worker import determinism

    saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
    try:
        flags = determinism.apply({"allow_tf32": True}, 0, None)
        assert flags["float32_matmul_precision"] == "medium" and flags["cudnn_allow_tf32"] is True
    finally:
        torch.set_float32_matmul_precision(saved[0])
        torch.backends.cudnn.allow_tf32 = saved[1]


@pytest.mark.docker
def test_bf16_reaches_the_container_and_is_recorded(tmp_path: Path):
    run_dir = tmp_path / "bf16"
    proc = run_runner(f"hydra.run.dir={run_dir}", "precision=bf16", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    m = manifest(run_dir)
    assert m["config"]["precision"]["name"] == "bf16"
    flags = m["determinism"]["flags"]
    assert flags["lightning_precision"] == "bf16-mixed" and flags["autocast_dtype"] == "torch.bfloat16"
    assert flags["float32_matmul_precision"] == "high" and flags["fill_uninitialized_memory"] is False
    assert flags["sigterm_broadcast_per_step"] is False  # FAST trains with 2 processes: DDP
