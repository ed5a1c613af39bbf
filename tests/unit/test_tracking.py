"""What a run becomes in a tracker (runner.core.tracking), pure: keys MLflow accepts, values cut to
its limits, one metric point per key and step from the three places a run records them."""

from __future__ import annotations

import math

from runner.core import tracking
from runner.core.tracking import Point


def test_keys_keep_what_mlflow_accepts_and_replace_the_rest():
    assert tracking.key("model.lr") == "model.lr"
    assert tracking.key("launch.slot/cpus x-y_z") == "launch.slot/cpus x-y_z"
    assert tracking.key("+extra=1,[2]") == "_extra_1__2_"
    assert len(tracking.key("k" * 300)) == 250 and tracking.key("") == "_"


def test_values_are_strings_or_json_cut_to_the_limit():
    assert tracking.text("abc") == "abc" and tracking.text(0.05) == "0.05" and tracking.text(None) == "null"
    assert tracking.text([1, "a"]) == '[1, "a"]' and tracking.text({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    long = tracking.text("x" * 7000)
    assert len(long) == tracking.MAX_PARAM_VALUE and long.endswith("…")


def test_params_are_the_flattened_config():
    cfg = {"seed": 3, "model": {"lr": 0.1, "layers": [1, 2]}, "launch": {"env": {}}}
    assert tracking.params(cfg) == {
        "seed": "3",
        "model.lr": "0.1",
        "model.layers": "[1, 2]",
        "launch.env": "{}",
    }


def test_metric_points_merge_fingerprints_logged_metrics_and_final_ones():
    rows = [{"step": 0, "params_sha256": "p"}, {"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}]
    rows.append({"step": 2, "loss": 1.4})  # a resumed run's later row for the same step wins
    logged = [
        {"epoch": "0", "step": "1", "train_loss": "2.1", "val_acc": ""},
        {"epoch": "0", "step": "2", "train_loss": "1.6", "val_acc": "0.5"},
        {"epoch": "0", "step": "", "train_loss": "9"},  # no step: not a point
    ]
    final = {"test_acc": 0.75, "train_loss": 1.6, "global_step": 2, "note": "text", "ok": True}
    points = tracking.metric_points(rows, logged, final)
    assert points == [
        Point("global_step", 2.0, 2),
        Point("loss", 2.0, 1),
        Point("loss", 1.4, 2),
        Point("test_acc", 0.75, 2),
        Point("train_loss", 2.1, 1),
        Point("train_loss", 1.6, 2),  # logged at step 2 already: the final value adds no second point
        Point("val_acc", 0.5, 2),
    ]


def test_metric_points_without_a_step_count_use_the_last_logged_step_and_keep_nan():
    points = tracking.metric_points(None, [{"step": "7", "x": "1"}], {"test_loss": float("nan")})
    nan = next(p for p in points if p.key == "test_loss")
    assert nan.step == 7 and math.isnan(nan.value)
