"""The halving stopping rule (`tuning.survivors`): its paired test against the cut on constructed figures, and by
simulation at 3 seeds how often it stops the truly best trial and how many trials it stops, beside plain top-k and
the overlap rule it replaced.

The simulation: 8 trials, 3 tuning seeds, η = 3, rungs of 5, 15 and 30 epochs (quick-tuned-halving): two
decisions, 8 trials then those left. A trial's figure at a rung and seed is its true mean + the seed's effect
(common random numbers: the same for every trial, N(0, τ²)) + noise N(0, 1), drawn afresh at each rung; the truly
best trial is the one with the highest true mean. Measured per rule: how often the best is stopped before the last
rung, the share of trials stopped, and the share of the full grid's epochs saved (a trial that goes on continues
from its checkpoint, so reaching rung r costs its epochs once). The README's "Tuned comparisons" quotes the
figures of `python tests/test_halving_rule.py` (20,000 repetitions); the test repeats fewer and asserts bounds.
"""

import math

import numpy as np
import pytest

from dropbench.tuning import Halving, seed_noise, survivors

TRIALS, SEEDS, ETA, RUNGS = 8, 3, 3, (5, 15, 30)


# ---------------------------------------------------------------- on constructed figures


def test_a_trial_worse_on_every_seed_is_stopped_though_the_seeds_spread_widely():
    """Seeds 0, 1, 2 are a bad, a middling and a good draw for every trial (their shared luck): trial 2 is below
    the cut on each of them, which its mean ± standard error alone cannot show (the overlap rule kept it)."""
    luck = [-0.2, 0.0, 0.15]
    figures = {
        t: [m + b + e for b, e in zip(luck, noise)]
        for t, (m, noise) in enumerate(
            [
                (0.80, (0.0, 0.01, -0.01)),
                (0.79, (0.02, -0.02, 0.0)),
                (0.70, (-0.01, 0.0, 0.01)),
                (0.78, (0.0, 0.0, 0.0)),
            ]
        )
    }
    assert survivors(figures, 1, higher=True) == [0, 1, 3]
    assert overlap_rule(figures, 1) == [0, 1, 2, 3]


def test_the_noise_is_the_two_way_residual_over_complete_trials():
    figures = {0: [1.0, 2.0, 3.0], 1: [2.0, 3.0, 4.0], 2: [0.0, 1.0, 2.5], 3: [5.0, math.nan, 1.0]}
    sigma, df = seed_noise(figures)
    x = np.array([figures[t] for t in (0, 1, 2)])
    residual = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    assert df == (3 - 1) * (3 - 1) and sigma == pytest.approx(math.sqrt((residual**2).sum() / df))
    assert seed_noise({0: [1.0], 1: [2.0]}) is None  # one seed: no noise estimate, plain top-k
    assert seed_noise({0: [1.0, 2.0], 1: [math.nan, 2.0]}) is None  # one complete trial


def test_a_failed_seed_leaves_the_comparison_to_the_seeds_both_have():
    figures = {0: [0.9, 0.9, 0.9], 1: [0.8, 0.8, 0.8], 2: [0.5, math.nan, 0.5], 3: [0.88, 0.89, 0.9]}
    assert survivors(figures, 1, higher=True) == [0, 3]  # trial 2, compared on seeds 0 and 2, is far below
    assert survivors({0: [0.9, 0.9], 1: [math.nan, 0.1], 2: [0.9, 0.8]}, 1, True) == [0, 2]
    # the cut's failed seed is the trial's only one: nothing to compare, it goes on
    assert survivors({0: [0.9, 0.9], 1: [0.8, math.nan], 2: [math.nan, 0.1], 3: [0.7, 0.7]}, 2, True) == [0, 1, 2]


def test_at_level_one_half_the_rule_is_plain_top_k():
    rng = np.random.default_rng(3)
    for _ in range(200):
        figures = {t: list(rng.normal(0, 1, SEEDS)) for t in range(TRIALS)}
        assert survivors(figures, 3, higher=True, alpha=0.5) == top_k(figures, 3)
        assert len(survivors(figures, 3, higher=True)) >= 3


def test_with_no_seed_noise_any_trial_below_the_cut_on_average_is_stopped():
    figures = {0: [1.0, 1.0, 1.0], 1: [0.97, 0.97, 0.97], 2: [1.0, 1.0, 1.0]}  # whole examples: no spread at all
    assert survivors(figures, 1, higher=True) == [0, 2]  # a tie with the cut goes on


# ---------------------------------------------------------------- by simulation


def overlap_rule(figures, keep):
    """The rule `survivors` replaced: a trial goes on if it ranks in the first `keep` or its mean + standard error
    reaches the cut's mean − standard error (each trial's own sample s.d. / √seeds)."""
    stats = {t: (float(np.mean(v)), float(np.std(v, ddof=1)) / math.sqrt(len(v))) for t, v in figures.items()}
    ranked = sorted(stats, key=lambda t: (-stats[t][0], t))
    cut_mean, cut_se = stats[ranked[keep - 1]]
    return sorted(ranked[:keep] + [t for t in ranked[keep:] if sum(stats[t]) >= cut_mean - cut_se])


def top_k(figures, keep):
    return sorted(sorted(figures, key=lambda t: (-float(np.mean(figures[t])), t))[:keep])


RULES = {"paired t": lambda f, k: survivors(f, k, higher=True), "overlap": overlap_rule, "top-k": top_k}
SCENARIOS = {  # true means of the 8 trials, in units of the seed noise's s.d.
    "best +0.5": [0.5] + [0.0] * 7,
    "best +1": [1.0] + [0.0] * 7,
    "spread 0.25": [-0.25 * t for t in range(TRIALS)],
    "spread 0.5": [-0.5 * t for t in range(TRIALS)],
    "all tied": [0.0] * TRIALS,
}


def simulate(rule, means, tau, reps, seed=0):
    """(share of repetitions that stopped the truly best trial, share of trials stopped, share of epochs saved)."""
    rng = np.random.default_rng(seed)
    means = np.asarray(means, dtype=float)
    best, halving = int(np.argmax(means)), Halving(RUNGS[0], ETA)
    lost = stopped = epochs = 0
    for _ in range(reps):
        trials, before, spent = list(range(TRIALS)), 0, 0
        for epochs_at in RUNGS[:-1]:
            spent += len(trials) * (epochs_at - before)
            x = means[trials, None] + rng.normal(0, tau, SEEDS)[None, :] + rng.normal(0, 1, (len(trials), SEEDS))
            kept = rule({i: list(row) for i, row in enumerate(x)}, halving.keep_count(len(trials)))
            trials, before = [trials[i] for i in kept], epochs_at
        spent += len(trials) * (RUNGS[-1] - before)
        lost += best not in trials
        stopped += TRIALS - len(trials)
        epochs += spent
    return lost / reps, stopped / (reps * TRIALS), 1 - epochs / (reps * TRIALS * RUNGS[-1])


@pytest.mark.slow
@pytest.mark.parametrize("tau", [0.0, 1.5], ids=["no seed effect", "seed effect 1.5"])
def test_the_rule_rarely_stops_the_truly_best_and_stops_the_clearly_worse(tau):
    reps = 1000
    rates = {(r, s): simulate(RULES[r], SCENARIOS[s], tau, reps) for r in RULES for s in SCENARIOS}
    for scenario in ("best +0.5", "best +1", "spread 0.25", "spread 0.5"):
        lost, _, _ = rates["paired t", scenario]
        assert lost <= 0.04, scenario  # measured ≤ 2.1% at 20,000 repetitions
        assert rates["top-k", scenario][0] >= 0.15  # plain top-k loses the best 18-58% of the time here
    assert rates["paired t", "all tied"][1] <= 0.08  # trials within noise mostly go on (measured 4%)
    assert rates["paired t", "spread 0.5"][1] >= 0.25  # trials that truly differ are stopped (measured 30%)
    assert rates["paired t", "spread 0.5"][2] >= 0.15  # and that saves epochs
    if tau:  # seeds' shared luck makes each trial's own spread wide: the overlap rule grows timid, pairing does not
        assert rates["paired t", "spread 0.5"][1] > rates["overlap", "spread 0.5"][1] + 0.05


def at_level(alpha):
    return lambda f, k: survivors(f, k, higher=True, alpha=alpha)


def table(rules=None, taus=(0.0, 1.5), reps=20_000):
    """The figures the README quotes: per seed effect, scenario and rule, the three rates in percent. The paired
    rule's do not depend on the seed effect (it cancels exactly in the paired differences and the two-way fit)."""
    rules = rules or {**RULES, "paired t 0.1": at_level(0.1), "paired t 0.2": at_level(0.2)}
    lines = []
    for tau in taus:
        for scenario, means in SCENARIOS.items():
            cells = [
                "{}: best stopped {:.1%}, trials stopped {:.0%}, epochs saved {:.0%}".format(
                    name, *simulate(rule, means, tau, reps)
                )
                for name, rule in rules.items()
            ]
            lines.append(f"τ={tau:g} {scenario:12} " + " | ".join(cells))
    return lines


if __name__ == "__main__":
    print("\n".join(table()))
