"""Which keep rates the dropout masks realise; no torch here, so the CLI can check its flags with it.

A mask keeps a unit when its 16-bit lane of random bits falls below a threshold, so a keep rate is
realised to the nearest 1/65536 (`dropout.effective_keep_rate`). No threshold keeps a unit less often
than 1/65536: smaller rates are refused rather than silently run at 1/65536.
"""

LANE_BITS = 16  # the widest lane: keep rates are realised to 1/65536
LANE_LEVELS = 1 << LANE_BITS
MIN_KEEP_RATE = 1 / LANE_LEVELS


def keep_rate_problem(rate: float) -> str | None:
    """Why `rate` cannot be a keep rate, in one line naming it and what is allowed; None when it can.

    The lower bound is the Bernoulli masks' resolution; Gaussian dropout draws no lanes but is held to it
    too, so that every kind accepts the same rates.
    """
    if not 0.0 < rate <= 1.0:  # also NaN
        return f"keep rate {rate:g} is outside (0, 1] (1.0 means no dropout)"
    if rate < MIN_KEEP_RATE:
        return (
            f"keep rate {rate:g} is below 1/{LANE_LEVELS} ≈ {MIN_KEEP_RATE:.1e}, the smallest rate the masks "
            f"realise; allowed: 1/{LANE_LEVELS} to 1, for every dropout kind"
        )
    return None
