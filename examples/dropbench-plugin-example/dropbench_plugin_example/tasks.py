"""A task: what `dropbench.tasks` entry points name is a TaskInfo, whose `load` returns every row as a RawTask."""

import numpy as np
from sklearn.datasets import make_moons

from dropbench.data import RawTask, SplitSpec, TaskInfo


def load_two_moons() -> RawTask:
    """1,000 points on two interleaving half circles, plus 8 features of pure noise (so there is something to
    overfit); the same rows everywhere (a fixed seed), never depending on the cell."""
    x, y = make_moons(n_samples=1000, noise=0.25, random_state=7)
    noise = np.random.default_rng(7).normal(size=(len(x), 8))
    return RawTask(np.hstack([x, noise]).astype(np.float32), y)


two_moons = TaskInfo(
    name="two-moons",  # the entry point's name is the one a suite uses
    kind="classification",
    summary="1,000 points, 2 informative + 8 noise features, 2 classes",
    origin="scikit-learn make_moons, fixed seed (dropbench-plugin-example)",
    load=load_two_moons,
    split=SplitSpec(val=0.2, test=0.2),  # fractions of the rows, stratified; train is what is left
    train_rows=600,  # size hints for shards and --dry-run estimates
    n_inputs=10,
)
