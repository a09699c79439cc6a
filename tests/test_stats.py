import math

import pytest

from dropbench.report.stats import mean_ci


def test_mean_ci_matches_a_hand_computed_t_interval():
    est = mean_ci([1.0, 2.0, 3.0, 4.0])
    # mean 2.5; s = sqrt(5/3) = 1.2909944; t(0.975, 3) = 3.1824463; half = t * s / 2
    assert est.n == 4 and est.mean == 2.5
    assert est.sd == pytest.approx(1.2909944, abs=1e-7)
    assert est.half_width == pytest.approx(3.1824463 * 1.2909944 / 2, abs=1e-6)


def test_two_values():
    est = mean_ci([0.9, 0.7])
    # s = 0.1414214; t(0.975, 1) = 12.7062047
    assert est.half_width == pytest.approx(12.7062047 * 0.1414214 / math.sqrt(2), rel=1e-6)


def test_one_value_has_no_interval_and_nan_is_ignored():
    est = mean_ci([0.8, math.nan])
    assert est.n == 1 and est.mean == 0.8 and math.isnan(est.half_width)
    assert mean_ci([]).n == 0
