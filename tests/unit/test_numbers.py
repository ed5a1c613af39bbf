"""Numbers printed for people are rounded to what a reader compares; machines get every digit."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.core import compare, numbers
from tests.conftest import run_runner
from tests.run_records import make_run


@pytest.mark.parametrize(
    ("value", "key", "shown"),
    [
        (1457.879113820869, "samples_per_s", "1,457.9"),  # a rate: separators, 5 figures
        (1234567.89, "metrics.tokens_per_second", "1,234,568"),  # whole numbers are never cut
        (12345, "samples_per_s", "12,345"),
        (3.48744013671875, "test_loss", "3.4874"),
        (1457.879113820869, "test_loss", "1457.9"),  # not a rate: no separators
        (123456.7, None, "123457"),
        (0.00012345678, None, "0.00012346"),
        (1.5e-7, None, "1.5e-07"),
        (0.9187, "test_acc", "0.9187"),  # trailing zeros are not invented
        (30, "trainer.max_steps", "30"),
        (True, "dirty", "True"),  # a bool is not a number to a reader
        (float("nan"), "loss", "nan"),
        ("1457.879113820869", "version", "1457.879113820869"),  # strings are shown as they are
    ],
)
def test_numbers_are_rounded_for_reading(value, key, shown):
    assert numbers.human(value, key) == shown


def test_two_values_that_print_alike_say_where_they_part():
    note = numbers.hidden_difference(3.48744013671875, 3.487440136, "test_loss")
    assert note == "differs after the 5th significant figure, at the 10th"
    assert numbers.hidden_difference(1.0, 1.0) is None  # equal: nothing to say
    assert numbers.hidden_difference(3.4874, 3.9, "loss") is None  # the printed values already differ
    assert numbers.hidden_difference("a", "b") is None
    assert numbers.pair(1457.879113820869, 1457.87, "samples_per_s") == (
        "1,457.9 → 1,457.9 (differs after the 5th significant figure, at the 6th)"
    )


finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e30, max_value=1e30)


@given(finite, finite)
def test_different_numbers_never_look_equal_without_a_note(a, b):
    if a != b:
        assert numbers.human(a) != numbers.human(b) or numbers.hidden_difference(a, b) is not None


@given(finite)
def test_the_printed_number_is_within_rounding_of_the_value(v):
    shown = float(numbers.human(v, "x_per_s").replace(",", ""))
    assert math.isclose(shown, v, rel_tol=1e-4, abs_tol=1e-300)


def test_a_divergence_in_the_loss_names_the_figure_where_the_runs_part():
    d = compare.Divergence(4, "loss", 2.3025850929940455, 2.302585092994046)
    assert (
        d.describe()
        == "step 4: loss 2.3026 vs 2.3026 (differs after the 5th significant figure, at the 16th)"
    )


def test_diff_prints_rounded_numbers_and_its_json_keeps_every_digit(tmp_path):
    metrics_a = {"samples_per_s": 1457.879113820869, "test_loss": 3.48744013671875, "test_acc": 0.25}
    metrics_b = {"samples_per_s": 1502.3317770004272, "test_loss": 3.4874401367, "test_acc": 0.25}
    a = make_run(tmp_path / "a", metrics=metrics_a)
    b = make_run(tmp_path / "b", metrics=metrics_b)
    proc = run_runner(str(a), str(b), module="runner.diff")
    assert proc.returncode == 1, proc.stderr  # test_loss differs (samples_per_s is not compared)
    assert proc.stdout.strip().splitlines()[-1] == "differ: metrics (test_loss)"
    rows = {
        cells[0]: cells[1:3]
        for line in proc.stdout.splitlines()
        if len(cells := [c.strip() for c in line.split("│")[1:4]]) == 3
    }
    assert rows["samples_per_s"] == ["1,457.9", "1,502.3"], proc.stdout
    assert rows["test_loss"][0] == "3.4874" and rows["test_loss"][1].startswith(
        "3.4874 (differs after the 5th"
    )
    assert "1457.879113820869" not in proc.stdout

    proc = run_runner(str(a), str(b), "--json", module="runner.diff")
    got = {c["key"]: (c["a"], c["b"]) for c in json.loads(proc.stdout)["sections"]["metrics"]}
    assert got == {
        "samples_per_s": (1457.879113820869, 1502.3317770004272),
        "test_loss": (3.48744013671875, 3.4874401367),
    }
