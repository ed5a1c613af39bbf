"""Experiment parameter schemas (runner.host.params): pure checks, no launch."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.core.errors import RunnerError
from runner.host import params

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = {"model": "experiments.mnist_params:ModelParams"}
GOOD = {
    "channels": 16,
    "hidden": 64,
    "lr": 0.05,
    "momentum": 0.9,
    "dropout": 0.0,
    "batch_size": 64,
    "train_samples": None,
}


def test_the_shipped_defaults_pass():
    import yaml

    conf = yaml.safe_load((ROOT / "conf" / "experiment" / "mnist_ddp.yaml").read_text())
    assert conf["experiment"]["schemas"] == SCHEMAS
    params.check(conf, conf["experiment"]["schemas"], ROOT)
    params.check({"model": GOOD}, SCHEMAS, ROOT)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"batch_size": 0}, "model.batch_size: Input should be greater than 0 (got 0)"),
        ({"momentum": 1.0}, "model.momentum: Input should be less than 1 (got 1.0)"),
        ({"train_samples": "all"}, "model.train_samples: Input should be a valid integer"),
    ],
)
def test_a_bad_value_is_named_with_what_was_given(change, message):
    with pytest.raises(RunnerError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        params.check({"model": {**GOOD, **change}}, SCHEMAS, ROOT)


def test_no_schemas_checks_nothing_and_a_malformed_reference_is_refused():
    params.check({"model": 3}, None, ROOT)
    params.check({"model": 3}, {}, ROOT)
    with pytest.raises(RunnerError, match="is not 'module:Class'"):
        params.check({"model": GOOD}, {"model": "experiments.mnist_params"}, ROOT)
    with pytest.raises(RunnerError, match="is not a schema"):
        params.check({"model": GOOD}, {"model": "runner.core.errors:EXIT_USAGE"}, ROOT)  # an int
    with pytest.raises(RunnerError, match="must map config sections"):
        params.check({"model": GOOD}, ["experiments.mnist_params:ModelParams"], ROOT)
