"""Statistics as pure functions: no I/O, no pandas, each checked against hand-computed numbers."""

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as _scipy_stats


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
    """Mean of the paired differences b - a, its t confidence interval and a two-sided p-value."""

    n: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    method: str


PAIRED_METHODS = ("t", "wilcoxon")


def paired_difference(
    a: Sequence[float], b: Sequence[float], *, method: str = "t", confidence: float = 0.95
) -> PairedTest:
    """d = b - a over the pairs where both are numbers; t-interval of mean(d) and the p-value of the paired
    t-test (method "t") or of the Wilcoxon signed-rank test (method "wilcoxon"). n < 2: NaN interval and p."""
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
        return PairedTest(n, mean, math.nan, math.nan, math.nan, method)
    ci_low, ci_high = mean - estimate.half_width, mean + estimate.half_width
    constant = all(d == diffs[0] for d in diffs)
    if method == "wilcoxon" and all(d == 0 for d in diffs):
        # scipy warns and divides by zero when every difference is zero; nothing differs, so p = 1.
        p = 1.0
    elif method == "wilcoxon":
        p = float(_scipy_stats.wilcoxon(diffs, alternative="two-sided").pvalue)
    elif constant:
        # The t statistic is 0/0 or ±inf: no spread means no doubt about the sign.
        p = 1.0 if diffs[0] == 0 else 0.0
    else:
        t = mean / (estimate.sd / math.sqrt(n))
        p = float(2 * _scipy_stats.t.sf(abs(t), n - 1))
    if constant:
        # fsum rounding can leave a spread of a few ulps; equal differences have none.
        ci_low = ci_high = mean = diffs[0]
    return PairedTest(n, mean, ci_low, ci_high, p, method)


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
