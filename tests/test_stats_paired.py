import math

import pytest
from scipy import stats as scipy_stats

from dropbench.report.stats import PairedTest, holm, paired_difference, sign_flip_p_value, smallest_p_value


def test_paired_t_matches_a_hand_computed_example_and_scipy():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 6.0]
    result = paired_difference(a, b, method="t")
    # d = b - a = [1, 0, 2, 2]; mean = 5/4 = 1.25
    # s² = (0.0625 + 1.5625 + 0.5625 + 0.5625) / 3 = 2.75 / 3 = 0.916667; s = 0.957427
    # t = 1.25 / (0.957427 / 2) = 2.611165 on 3 dof; two-sided p = 0.079605
    # t(0.975, 3) = 3.182446; half-width = 3.182446 · 0.478714 = 1.523480 → CI [-0.273480, 2.773480]
    assert result.n == 4 and result.method == "t"
    assert result.mean_diff == pytest.approx(1.25)
    assert result.p_value == pytest.approx(0.079605, abs=1e-6)
    assert result.ci_low == pytest.approx(1.25 - 1.523480, abs=1e-6)
    assert result.ci_high == pytest.approx(1.25 + 1.523480, abs=1e-6)
    # Independently: scipy's paired t-test (its sign is a - b, the p-value is symmetric).
    reference = scipy_stats.ttest_rel(a, b)
    assert result.p_value == pytest.approx(float(reference.pvalue), rel=1e-12)
    assert reference.statistic == pytest.approx(-2.611165, abs=1e-6)


def test_confidence_level_changes_only_the_interval():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 6.0]
    wide, narrow = paired_difference(a, b, method="t"), paired_difference(a, b, method="t", confidence=0.80)
    # t(0.90, 3) = 1.637744; half-width = 1.637744 · 0.478714 = 0.784011
    assert narrow.ci_high - narrow.mean_diff == pytest.approx(0.784011, abs=1e-6)
    assert narrow.p_value == wide.p_value


def test_wilcoxon_matches_a_hand_count_and_scipy():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 5.0, 6.0]
    result = paired_difference(a, b, method="wilcoxon")
    # d = [1, 0, 2, 2]: the zero is dropped, the three others are all positive, so W- = 0; the exact
    # two-sided p is 2 · P(W- = 0) = 2 · 1/2³ = 0.25. The interval is still the t-interval.
    assert result.method == "wilcoxon" and result.n == 4
    assert result.p_value == pytest.approx(0.25)
    assert result.p_value == pytest.approx(float(scipy_stats.wilcoxon([1, 0, 2, 2]).pvalue))
    t_result = paired_difference(a, b, method="t")
    assert (result.ci_low, result.ci_high) == (t_result.ci_low, t_result.ci_high)


def test_wilcoxon_larger_sample_agrees_with_scipy():
    a = [0.91, 0.90, 0.92, 0.89, 0.93, 0.90, 0.91, 0.88]
    b = [0.90, 0.88, 0.925, 0.87, 0.90, 0.91, 0.895, 0.86]
    diffs = [y - x for x, y in zip(a, b)]
    expected = float(scipy_stats.wilcoxon(diffs, alternative="two-sided").pvalue)
    assert paired_difference(a, b, method="wilcoxon").p_value == pytest.approx(expected)


def test_pairs_with_a_nan_are_dropped():
    result = paired_difference([1.0, math.nan, 2.0, 3.0, 4.0], [2.0, 7.0, 2.0, 5.0, math.nan], method="t")
    # Kept pairs: (1, 2), (2, 2), (3, 5) → d = [1, 0, 2]
    reference = scipy_stats.ttest_rel([1.0, 2.0, 3.0], [2.0, 2.0, 5.0])
    assert result.n == 3 and result.mean_diff == pytest.approx(1.0)
    assert result.p_value == pytest.approx(float(reference.pvalue))


def test_fewer_than_two_pairs_give_no_interval_and_no_p():
    one = paired_difference([1.0, math.nan], [3.0, 4.0])
    assert one.n == 1 and one.mean_diff == 2.0
    assert math.isnan(one.ci_low) and math.isnan(one.ci_high) and math.isnan(one.p_value)
    none = paired_difference([], [], method="wilcoxon")
    assert none.n == 0 and math.isnan(none.mean_diff) and math.isnan(none.p_value)


def test_differences_equal_to_rounding_are_no_evidence():
    # d is 0.05 up to rounding of b - a. The t statistic of rounding noise was huge (p < 1e-6 before): now the
    # t-test gives no p-value, the interval collapses onto the value, and the sign-flip test gives 2/2^3.
    shifted_t = paired_difference([0.1, 0.2, 0.3], [0.15, 0.25, 0.35], method="t")
    assert math.isnan(shifted_t.p_value) and shifted_t.ci_low == shifted_t.ci_high == shifted_t.mean_diff
    assert paired_difference([0.1, 0.2, 0.3], [0.15, 0.25, 0.35]).p_value == 0.25
    # The quick suite's breast-cancer case: one test example of 114 worse on each of 3 seeds, a few ulps apart.
    base = [0.9824561403508771, 0.9736842105263158, 0.9649122807017544]
    worse = [b - 1 / 114 for b in base]
    assert paired_difference(base, worse).p_value == 0.25
    assert math.isnan(paired_difference(base, worse, method="t").p_value)
    exact = paired_difference([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])  # d = 0.5 exactly
    assert exact == PairedTest(3, 0.5, 0.5, 0.5, 0.25, "sign-flip", 0.25)
    same = paired_difference([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert same == PairedTest(3, 0.0, 0.0, 0.0, 1.0, "sign-flip", 0.25)
    assert paired_difference([1.0, 2.0], [1.0, 2.0], method="wilcoxon").p_value == 1.0
    assert paired_difference([1.0, 2.0], [1.0, 2.0], method="t").p_value == 1.0


def test_sign_flip_counts_sign_patterns_by_hand():
    # d = [1, 0, 2, 2]: 16 patterns; |sum| >= 5 needs 1, 2, 2 of one sign (2 ways) times the zero's 2 "signs".
    assert sign_flip_p_value([1.0, 0.0, 2.0, 2.0]) == 4 / 16
    # d = [1, -1, 3]: observed |3| ; sums ±1 ±1 ±3 with |s| >= 3: all but (+1 -1 ... ) -> count by hand:
    # (+,+,+)=3 (+,-,+)=3 (-,+,+)=3 (-,-,+)=1 and the mirror images: 6 of 8.
    assert sign_flip_p_value([1.0, -1.0, 3.0]) == 6 / 8
    assert sign_flip_p_value([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) == 2 / 64
    assert sign_flip_p_value([0.0, 0.0]) == 1.0
    assert smallest_p_value(9) == 2 / 512 and smallest_p_value(3) == 0.25 and smallest_p_value(4, "t") == 0.0


def test_sign_flip_beyond_exact_enumeration_is_a_stable_monte_carlo():
    diffs = [float(i % 5 - 1.5) for i in range(20)]  # mixed signs, 20 pairs: Monte Carlo
    p = sign_flip_p_value(diffs)
    assert p == sign_flip_p_value(diffs)  # a fixed generator: the same data, the same p
    # Against the normal approximation of the permutation distribution: sum ~ N(0, sum d^2).
    z = abs(sum(diffs)) / math.sqrt(sum(d * d for d in diffs))
    assert p == pytest.approx(math.erfc(z / math.sqrt(2)), abs=0.03)
    assert 0 < sign_flip_p_value([1.0] * 20) <= 3 / 200_001  # never 0: the observed pattern counts itself


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown paired test method"):
        paired_difference([1.0, 2.0], [1.0, 2.0], method="z")
    with pytest.raises(ValueError, match="length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="confidence"):
        paired_difference([1.0, 2.0], [1.0, 2.0], confidence=1.0)


def test_holm_hand_worked():
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → raised to 0.06 (monotone).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_nan_out_of_m():
    adjusted = holm([0.02, math.nan, 0.4, 0.03])
    # m = 3: 0.02·3 = 0.06, 0.03·2 = 0.06, 0.4·1 = 0.4
    assert adjusted[0] == pytest.approx(0.06) and adjusted[3] == pytest.approx(0.06)
    assert adjusted[2] == pytest.approx(0.4) and math.isnan(adjusted[1])
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([]) == [] and math.isnan(holm([math.nan])[0])
    assert holm([0.03]) == [0.03]
