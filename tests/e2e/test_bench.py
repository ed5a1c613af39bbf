"""The benchmark suite runs and writes well-formed results. Its figures are judged from the
results file (``make bench``), never here: these tests check shape, not speed."""

from __future__ import annotations

import json
import math

import pytest

from bench.results import Figure, Goal, markdown
from tests.conftest import run_runner

FIGURES = {
    "script_overhead",
    "script_runner_own_seconds",
    "launch_overhead",
    "image_up_to_date_s",
    "cache_hit_build_s",
    "hash_first_gbps",
    "hash_cold_gbps",
    "hash_cache_hit_ms",
    "train_throughput_ratio",
    "strict_vs_fast_throughput",
}
FIGURE_KEYS = {
    "id",
    "title",
    "value",
    "unit",
    "goal",
    "passed",
    "repetitions",
    "samples",
    "checks",
    "details",
    "machine",
    "load_average",
}


def test_goal_and_checks_decide_pass():
    assert Figure("a", "A", "s", [3.0, 1.0, 2.0], goal=Goal("<=", 2.0)).passed is True
    assert Figure("a", "A", "s", [3.0, 2.5, 2.0], goal=Goal("<=", 2.0)).passed is False
    assert Figure("a", "A", "s", [1.0], goal=Goal("<=", 2.0), checks={"no_build": False}).passed is False
    assert Figure("a", "A", "s", [1.0]).passed is None  # recorded, not judged
    assert Figure("a", "A", "s", [1.0], checks={"hit": False}).passed is False
    with pytest.raises(ValueError):
        Goal("=<", 1.0)


@pytest.mark.docker
def test_quick_bench_writes_well_formed_results(tmp_path):
    proc = run_runner("--quick", "--out", str(tmp_path), module="bench.run", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    doc = json.loads((tmp_path / "latest.json").read_text())
    assert doc["schema_version"] == 1 and doc["quick"] is True and doc["sizes"]["reps"] == 1

    m = doc["machine"]
    assert m["cpu_model"] and m["cpu_count"] >= 1 and m["docker_server"] and m["python"]
    assert len(m["load_average_start"]) == 3 and len(m["load_average_end"]) == 3

    figures = {f["id"]: f for f in doc["figures"]}
    assert set(figures) == FIGURES
    for f in figures.values():
        assert set(f) == FIGURE_KEYS, f["id"]
        assert f["repetitions"] == len(f["samples"]) == 1
        assert all(math.isfinite(x) for x in f["samples"]) and f["value"] == f["samples"][0]
        assert m["cpu_model"] in f["machine"] and len(f["load_average"]) == 3
        assert all(f["checks"].values()), (f["id"], f["checks"])
        if f["goal"] is None:
            assert f["passed"] is None
        else:
            assert f["passed"] is Goal(**f["goal"]).met(f["value"])
        # differences of two wall times can come out below zero in one noisy repetition; every other
        # figure is a rate, ratio or duration
        if f["id"] not in ("launch_overhead", "script_overhead"):
            assert f["value"] > 0, f["id"]

    overhead = figures["launch_overhead"]["details"]
    assert overhead["docker_wall_seconds"][0] > 0 and overhead["host_wall_seconds"][0] > 0
    image = figures["image_up_to_date_s"]["details"]
    assert (
        image["engine_build_calls"] == 0 and image["padded_wheelhouse_bytes"] > image["real_wheelhouse_bytes"]
    )

    table = (tmp_path / "latest.md").read_text()
    assert table == markdown(doc)
    for f in figures.values():
        assert f["title"] in table


def test_bad_repetitions_is_one_line_error(tmp_path):
    proc = run_runner("--reps", "0", "--out", str(tmp_path), module="bench.run")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["runner: error: --reps=0 must be at least 1"]
    assert not (tmp_path / "latest.json").exists()
