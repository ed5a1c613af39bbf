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
    "audit_wall_ratio",
    "audit_seconds",
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

    # latest.md: one row per figure, with the figure's own median, verdict and repetitions
    table = (tmp_path / "latest.md").read_text()
    rows = [[c.strip() for c in r.strip("|").split("|")] for r in table.splitlines() if r.startswith("| ")]
    assert rows[0] == ["Measurement", "Median", "Goal", "Result", "Reps"]
    assert sorted(r[0] for r in rows[1:]) == sorted(f["title"] for f in figures.values())
    for title, median, _goal, result, reps in rows[1:]:
        f = next(f for f in figures.values() if f["title"] == title)
        assert median.endswith(f" {f['unit']}") and math.isclose(
            float(median.split()[0]), f["value"], rel_tol=0.06, abs_tol=1e-3
        ), (title, median, f["value"])
        assert result == {True: "pass", False: "**FAIL**", None: "—"}[f["passed"]] and reps == "1"
    assert "(--quick: tiny sizes, not for quoting)" in table


def test_the_results_table_says_each_figure_once_with_its_verdict():
    """``markdown`` of a hand-made document, line for line: what the README's table shows."""
    figure = Figure("launch", "Launch overhead", "s", [2.0, 1.0, 3.0], goal=Goal("<=", 1.5))
    recorded = Figure("rate", "Hash rate", "MB/s", [1234.5])
    machine = {"cpu_model": "CPU X", "cpu_count": 2, "memory_gib": 24, "docker_server": "27.0"}
    doc = {
        "finished_utc": "2026-12-06T05:00:00.123",
        "quick": False,
        "machine": {**machine, "os": "Debian 12", "kernel": "6.1", "python": "3.11", "torch": "2.13.0"},
        "figures": [figure.to_dict("CPU X"), recorded.to_dict("CPU X")],
    }
    lines = markdown(doc).splitlines()
    assert lines[:4] == [
        "| Measurement | Median | Goal | Result | Reps |",
        "|---|---|---|---|---|",
        "| Launch overhead | 2.00 s | <= 1.5 s | **FAIL** | 3 |",
        "| Hash rate | 1234 MB/s | recorded | — | 1 |",
    ]
    assert lines[5].startswith("Measured 2026-12-06 05:00 UTC by `make bench` on CPU X, 2 cores, 24 GiB")
    assert "--quick" not in lines[5] and "load average at start ? (1 min)" in lines[5]


def test_bad_repetitions_is_one_line_error(tmp_path):
    proc = run_runner("--reps", "0", "--out", str(tmp_path), module="bench.run")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["runner: error: --reps=0 must be at least 1"]
    assert not (tmp_path / "latest.json").exists()
