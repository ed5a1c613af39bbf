"""trainer_keys: a misspelt Trainer argument is refused on the host, before anything starts."""

from __future__ import annotations

import pytest

from runner.core.errors import RunnerError
from runner.host import trainer_keys
from tests.conftest import ROOT

LOCK = ROOT / "images" / "cpu.lock"


def test_installed_trainer_parameters_are_read_without_importing_lightning():
    params = trainer_keys.trainer_parameters()
    assert params is not None and {"max_steps", "max_epochs", "log_every_n_steps", "devices"} <= params
    assert "self" not in params


def test_the_lock_pins_the_hosts_lightning():
    assert trainer_keys.pinned_version(LOCK.read_text()) == trainer_keys.host_version()
    assert (
        trainer_keys.pinned_version("torch==2.1 \\\n    --hash=sha256:00\npytorch-lightning==9.9.9 \\\n")
        == "9.9.9"
    )
    assert trainer_keys.pinned_version("torch==2.1\n") is None


def test_known_keys_pass():
    trainer_keys.check({"max_steps": 3, "max_epochs": 1, "limit_val_batches": 0}, LOCK)
    trainer_keys.check(None, LOCK)


def test_unknown_keys_are_refused_with_a_suggestion():
    with pytest.raises(RunnerError, match=r"max_step \(did you mean max_steps\?\)") as info:
        trainer_keys.check({"max_step": 3, "max_epochs": 1}, LOCK)
    assert info.value.exit_code == 2
    with pytest.raises(RunnerError, match="bogus"):
        trainer_keys.check({"bogus": 1}, None)  # host backend: the host's Lightning is the one that trains


def test_a_different_lightning_in_the_image_skips_the_check(tmp_path):
    lock = tmp_path / "other.lock"
    lock.write_text("pytorch-lightning==0.0.1 \\\n    --hash=sha256:00\n")
    trainer_keys.check({"a_future_argument": 1}, lock)  # not ours to judge: that image's Lightning decides
