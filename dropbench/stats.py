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
