"""The marks' false-positive rate, checked by simulation where dropbench measures: few seeds, accuracies in
whole test examples (so ties and equal differences are common), and common random numbers (the cells of one
task and seed share initialization and batch order, so they move together).

Under the null every configuration of a task is drawn from one distribution; a task "has a mark" when any of
its configurations is significant against the baseline after Holm. That share must stay at or below α.
"""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from dropbench.catalogue import MARK_METHODS
from dropbench.report.stats import holm, paired_difference
from dropbench.report.summary import baseline_tests
from dropbench.results import COLUMNS

ALPHA = 0.05
TASKS = 1000
# Three standard errors of a share of α over TASKS tasks: a valid test stays below this but by chance.
LIMIT = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / TASKS)


def simulate(
    seeds: int,
    noise_examples: float,
    *,
    tasks: int = TASKS,
    configs: int = 8,
    test_size: int = 100,
    effect_examples: float = 0.0,
    rng_seed: int = 0,
) -> np.ndarray:
    """Accuracies [task, configuration, seed] in whole examples of `test_size`. Configuration 0 is the
    baseline. A seed's shared effect (sd 3 points) stands for common random numbers; each configuration adds
    noise of `noise_examples` examples (sd); configuration 1 is shifted by `effect_examples` (0: the null)."""
    rng = np.random.default_rng(rng_seed)
    shared = rng.normal(0.0, 0.03, size=(tasks, 1, seeds))
    own = rng.normal(0.0, noise_examples / test_size, size=(tasks, configs, seeds))
    own[:, 1, :] += effect_examples / test_size
    return np.round(np.clip(0.8 + shared + own, 0.0, 1.0) * test_size) / test_size


def marked_tasks(accuracies: np.ndarray, p_value) -> np.ndarray:
    """Per task, whether any configuration is significant against the baseline after Holm."""
    marked = []
    for task in accuracies:
        p = [p_value(task[0].tolist(), task[c].tolist()) for c in range(1, len(task))]
        marked.append(any(q == q and q < ALPHA for q in holm(p)))
    return np.array(marked)


def dropbench_test(method: str):
    return lambda base, mine: paired_difference(base, mine, method=method).p_value


def naive_t_test(base: list[float], mine: list[float]) -> float:
    """The paired t-test as dropbench had it: equal differences gave p = 0, and differences equal but for
    rounding gave a huge t. The negative control: the simulation must catch it."""
    d = [b - a for a, b in zip(base, mine)]
    if all(x == d[0] for x in d):
        return 1.0 if d[0] == 0 else 0.0
    n, mean = len(d), sum(d) / len(d)
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return float(2 * scipy_stats.t.sf(abs(mean / (sd / math.sqrt(n))), n - 1))


# Seeds where marks are possible at all (2/2^n times 7 comparisons below α needs n >= 9 for the sign-flip test),
# and differences of mostly ties (0.3 examples), about one example, and several.
NULL_CASES = [
    ("sign-flip", 6, 1.0),
    ("sign-flip", 9, 0.3),
    ("sign-flip", 9, 1.0),
    ("sign-flip", 9, 3.0),
    ("sign-flip", 12, 1.0),
    ("wilcoxon", 9, 0.3),
    ("wilcoxon", 9, 1.0),
    ("wilcoxon", 12, 3.0),
]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "seeds", "noise_examples"), NULL_CASES)
def test_the_share_of_tasks_with_any_mark_stays_at_alpha_under_the_null(method, seeds, noise_examples):
    accuracies = simulate(seeds, noise_examples, rng_seed=seeds * 10 + int(noise_examples * 10))
    assert marked_tasks(accuracies, dropbench_test(method)).mean() <= LIMIT


@pytest.mark.slow
def test_the_simulation_catches_the_t_test_dropbench_used_to_mark_with():
    """At 3 seeds with differences of about one example, the old t-test marked 12-14% of null tasks."""
    accuracies = simulate(3, 0.5)
    assert marked_tasks(accuracies, naive_t_test).mean() > 2 * ALPHA
    assert marked_tasks(accuracies, dropbench_test("sign-flip")).mean() == 0.0  # 2/2^3 can never pass


@pytest.mark.slow
@pytest.mark.parametrize("method", MARK_METHODS)
def test_a_real_effect_is_marked_at_the_default_suites_seeds(method):
    """Power where it matters: 9 seeds (the quick suite's), 7 comparisons, an effect of 5 test examples against
    noise of 1: nearly every task marks it."""
    accuracies = simulate(9, 1.0, tasks=300, effect_examples=5.0)
    assert marked_tasks(accuracies, dropbench_test(method)).mean() > 0.9


def as_results(accuracies: np.ndarray) -> pd.DataFrame:
    """Simulated accuracies as a results table: task t<i>, configuration c as keep rate 1 - c/100."""
    rows = []
    for t, task in enumerate(accuracies):
        for c, config in enumerate(task):
            for seed, acc in enumerate(config):
                keep = 1.0 - c / 100
                rows.append(
                    {
                        **dict.fromkeys(COLUMNS, ""),
                        "cell_id": f"{t}-{c}-{seed}",
                        "task": f"t{t}",
                        "model": "mlp-8",
                        "regularizer": "none",
                        "strength": "",
                        "keep_rate": keep,
                        "input_keep_rate": 1.0,
                        "dropout": "bernoulli",
                        "train_size": 0,
                        "seed": seed,
                        "setup_id": "s",
                        "status": "ok",
                        "test_acc": acc,
                    }
                )
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_report_marks_exactly_the_tasks_the_simulation_marks():
    """The same simulated tasks through report.baseline_tests: its marks are the direct computation's."""
    accuracies = simulate(9, 1.0, tasks=60, effect_examples=2.0, rng_seed=7)
    tests = baseline_tests(as_results(accuracies), "test_acc", alpha=ALPHA)
    marked = tests.groupby("task", sort=False)["significant"].any()
    expected = marked_tasks(accuracies, dropbench_test("sign-flip"))
    assert list(marked.loc[[f"t{i}" for i in range(len(accuracies))]]) == list(expected)
    assert 0 < expected.sum() < len(expected)  # some tasks marked and some not: the comparison means something
    assert set(tests["family"]) == {7} and set(tests["method"]) == {"sign-flip"}
