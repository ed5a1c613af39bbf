"""Summary statistics over seeds (pure): Student-t quantiles and the interval a sweep reports."""

from __future__ import annotations

import math
import statistics

import pytest
from hypothesis import given
from hypothesis import strategies as st

from runner.core.stats import describe, t_quantile, t_two_sided_prob

# Two-sided 95% critical values of Student's t, as printed in standard tables.
TABLE_975 = {
    1: 12.7062,
    2: 4.3027,
    3: 3.1824,
    4: 2.7764,
    5: 2.5706,
    6: 2.4469,
    7: 2.3646,
    9: 2.2622,
    10: 2.2281,
    19: 2.0930,
    30: 2.0423,
    60: 2.0003,
    120: 1.9799,
}


@pytest.mark.parametrize("df,expected", sorted(TABLE_975.items()))
def test_t_quantile_matches_published_tables(df, expected):
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=6e-5)


def test_t_quantile_other_levels_and_the_normal_limit():
    assert t_quantile(0.95, 10) == pytest.approx(1.8125, abs=6e-5)
    assert t_quantile(0.995, 4) == pytest.approx(4.6041, abs=6e-5)
    assert t_quantile(0.975, 5000) == pytest.approx(statistics.NormalDist().inv_cdf(0.975), abs=1e-3)


def test_t_prob_is_a_distribution_function():
    for df in (1, 2, 3, 8, 9):
        ps = [t_two_sided_prob(t, df) for t in (0.0, 0.5, 1.0, 2.0, 10.0, 1e6)]
        assert (
            ps[0] == 0.0
            and all(a < b for a, b in zip(ps, ps[1:], strict=False))
            and ps[-1] == pytest.approx(1.0)
        )
    assert t_two_sided_prob(1.0, 1) == pytest.approx(0.5)  # Cauchy: P(|T| <= 1) = 1/2


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        t_quantile(0.4, 3)
    with pytest.raises(ValueError):
        t_two_sided_prob(1.0, 0)
    with pytest.raises(ValueError):
        describe([])


def test_describe_four_seeds():
    s = describe([0.81, 0.83, 0.80, 0.84])
    assert s.n == 4 and s.mean == pytest.approx(0.82) and s.min == 0.80 and s.max == 0.84
    assert s.std == pytest.approx(statistics.stdev([0.81, 0.83, 0.80, 0.84]))
    half = 3.1824 * s.std / 2
    assert s.ci95_halfwidth == pytest.approx(half, rel=1e-4)
    assert s.ci95 == pytest.approx((0.82 - half, 0.82 + half), rel=1e-4)
    assert s.to_dict()["ci95"] == list(s.ci95)


def test_one_run_has_no_spread():
    s = describe([0.5])
    assert (s.n, s.mean, s.std, s.ci95, s.min, s.max) == (1, 0.5, None, None, 0.5, 0.5)


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=30))
def test_interval_contains_the_mean_and_matches_stdlib(values):
    s = describe(values)
    assert s.mean == pytest.approx(statistics.fmean(values), abs=1e-6)
    assert s.std == pytest.approx(statistics.stdev(values), rel=1e-9, abs=1e-9)
    lo, hi = s.ci95
    assert lo <= s.mean <= hi and s.min <= s.mean + 1e-6 and s.mean <= s.max + 1e-6
    assert math.isclose(hi - s.mean, s.mean - lo, rel_tol=1e-9, abs_tol=1e-9)
