"""Statistics as pure functions: no I/O, no pandas, each checked against hand-computed numbers."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy_stats

from ..catalogue import DEFAULT_METHOD  # the marking tests are listed there, for the CLI to name without scipy


@dataclass(frozen=True)
class Estimate:
    """Mean over n values with the half-width of its two-sided t confidence interval (NaN for n < 2)."""

    n: int
    mean: float
    sd: float
    half_width: float


def mean_ci(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """Student-t interval: mean ± t_{(1+c)/2, n-1} · s / √n, with s the sample standard deviation."""
    finite = [v for v in values if not math.isnan(v)]
    n = len(finite)
    if n == 0:
        return Estimate(0, math.nan, math.nan, math.nan)
    mean = math.fsum(finite) / n
    if n == 1:
        return Estimate(1, mean, math.nan, math.nan)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in finite) / (n - 1))
    t = float(_scipy_stats.t.ppf((1 + confidence) / 2, n - 1))
    return Estimate(n, mean, sd, t * sd / math.sqrt(n))


@dataclass(frozen=True)
class PairedTest:
    """Mean of the paired differences b - a, its t confidence interval and a two-sided p-value; `min_p` is
    the smallest p-value the test could give at this n (a sign-flip test at 3 seeds can never go below 0.25)."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str
    min_p: float = math.nan


PAIRED_METHODS = ("sign-flip", "t", "wilcoxon")
TEST_NAMES = {"sign-flip": "exact sign-flip test", "t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test"}
EXACT_SIGN_FLIPS_UP_TO = 16  # 2^16 sign patterns enumerated; beyond, a fixed-seed Monte Carlo
MONTE_CARLO_FLIPS = 200_000
# Differences closer than this (relative to their scale) are the same number: accuracies in whole examples
# come out of floating-point sums a few ulps apart, and a test must not read that as spread.
RELATIVE_TOLERANCE = 1e-9


def sign_flip_p_value(diffs: Sequence[float]) -> float:
    """Two-sided exact paired permutation test: the share of the 2^n sign patterns whose |Σ ±d_i| is at least
    the observed |Σ d_i| (Fisher 1935; Good, Permutation Tests, 2005, §3). Zero differences flip to themselves."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        return math.nan
    scale = float(np.abs(d).sum())
    if scale == 0.0:
        return 1.0
    tolerance = RELATIVE_TOLERANCE * scale
    observed = abs(float(d.sum()))
    if n <= EXACT_SIGN_FLIPS_UP_TO:
        patterns = (np.arange(2**n)[:, None] >> np.arange(n)) & 1
        sums = (1 - 2 * patterns) @ d
        return float(np.mean(np.abs(sums) >= observed - tolerance))
    rng = np.random.default_rng(0)  # fixed: the same data always give the same p-value
    signs = 1 - 2 * rng.integers(0, 2, size=(MONTE_CARLO_FLIPS, n))
    hits = int(np.sum(np.abs(signs @ d) >= observed - tolerance))
    return (hits + 1) / (MONTE_CARLO_FLIPS + 1)  # the observed pattern counts itself: never p = 0


def signed_rank_p_value(diffs: Sequence[float]) -> float:
    """Two-sided exact Wilcoxon signed-rank test: the sign-flip test of sign(d_i)·rank(|d_i|), zeros dropped and
    tied magnitudes given their mean rank (Wilcoxon 1945; ties as in Pratt 1959). Exact with ties too, where
    scipy falls back to a slow permutation or an approximation."""
    d = np.asarray([x for x in diffs if x != 0.0], dtype=float)
    if len(d) == 0:
        return 1.0
    magnitude = np.abs(d)
    # Magnitudes equal to rounding are ties: whole-example accuracies come out a few ulps apart.
    rounded = np.round(magnitude / (RELATIVE_TOLERANCE * magnitude.max())) if magnitude.max() > 0 else magnitude
    ranks = _scipy_stats.rankdata(rounded)
    return sign_flip_p_value(np.sign(d) * ranks)


def smallest_p_value(n: int, method: str = DEFAULT_METHOD) -> float:
    """The smallest two-sided p-value `method` can give with n pairs (0 for the t-test: no floor)."""
    if n < 1:
        return math.nan
    if method == "t":
        return 0.0
    return min(1.0, 2.0 / 2**n)  # sign-flip and Wilcoxon: all differences of one sign


def _has_spread(diffs: Sequence[float]) -> bool:
    scale = max(abs(d) for d in diffs)
    return max(diffs) - min(diffs) > RELATIVE_TOLERANCE * scale


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, method: str = DEFAULT_METHOD, confidence: float = 0.95
) -> PairedTest:
    """d = b - a over the pairs where both are numbers: the t-interval of mean(d), and the two-sided p-value of
    the exact sign-flip test (default), the paired t-test or the Wilcoxon signed-rank test. n < 2: NaN.

    The t-test gives no p-value (NaN) when the differences have no spread beyond rounding: its statistic is
    then 0/0 or a ratio of rounding noise, not evidence (three differences of exactly one test example each
    gave p = 1e-29 before this rule)."""
    if method not in PAIRED_METHODS:
        raise ValueError(f"unknown paired test method {method!r}; use one of {', '.join(PAIRED_METHODS)}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} and {len(b)}")
    diffs = [float(y) - float(x) for x, y in zip(a, b) if not (math.isnan(x) or math.isnan(y))]
    estimate = mean_ci(diffs, confidence)
    n, mean = estimate.n, estimate.mean
    if n < 2:
        return PairedTest(n, mean, math.nan, math.nan, math.nan, method, smallest_p_value(n, method))
    ci_low, ci_high = mean - estimate.half_width, mean + estimate.half_width
    spread = _has_spread(diffs)
    if not spread:
        # Equal differences (to rounding): no spread, so the interval is the value itself.
        ci_low = ci_high = mean = diffs[0]
    if all(d == 0 for d in diffs):
        p = 1.0  # nothing differs (scipy's Wilcoxon would divide by zero)
    elif method == "sign-flip":
        p = sign_flip_p_value(diffs)
    elif method == "wilcoxon":
        p = signed_rank_p_value(diffs)
    elif not spread:
        p = math.nan
    else:
        t = mean / (estimate.sd / math.sqrt(n))
        p = float(2 * _scipy_stats.t.sf(abs(t), n - 1))
    return PairedTest(n, mean, ci_low, ci_high, p, method, smallest_p_value(n, method))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values in the input order; NaN stays NaN and does not count towards m."""
    adjusted = [math.nan] * len(p_values)
    ranked = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m = len(ranked)
    running = 0.0
    for rank, (p, i) in enumerate(ranked):
        # Step-down: the k-th smallest p is multiplied by (m - k + 1), and an adjusted p never falls below
        # the one before it, so the rejections stay a prefix of the sorted list.
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], bins: int = 15) -> float:
    """ECE (Guo et al. 2017): Σ_b (|B_b| / n)·|accuracy(B_b) − mean confidence(B_b)| over `bins` equal-width
    confidence bins (0, 1/bins], …, ((bins−1)/bins, 1]; a confidence of exactly 0 falls in the first."""
    n = len(confidences)
    if n == 0 or any(math.isnan(c) for c in confidences):
        return math.nan  # a diverged model: no calibration to speak of
    totals = [[0, 0.0, 0.0] for _ in range(bins)]  # count, sum of confidences, hits
    for confidence, hit in zip(confidences, correct):
        index = min(bins - 1, max(0, math.ceil(confidence * bins) - 1))
        totals[index][0] += 1
        totals[index][1] += confidence
        totals[index][2] += float(hit)
    return math.fsum(abs(hits - conf) / n for count, conf, hits in totals if count)
