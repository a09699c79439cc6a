import numpy as np
import pytest
import torch

from dropbench.data import TASKS, load_task_data
from dropbench.data.splits import RawTask, SplitSpec, split_task, standardize_features


def test_splits_are_disjoint_cover_the_data_and_are_stratified():
    y = np.repeat([0, 1, 2], [100, 200, 300])
    x = np.arange(len(y), dtype=np.float32).reshape(-1, 1)
    split = split_task(RawTask(x, y), SplitSpec(val=0.2, test=0.2), classification=True, seed=1)
    ids = [set(part.ravel().tolist()) for part in (split.x_train, split.x_val, split.x_test)]
    assert sum(map(len, ids)) == len(y) and set.union(*ids) == set(range(len(y)))
    for labels in (split.y_train, split.y_val, split.y_test):
        np.testing.assert_allclose(np.bincount(labels) / len(labels), [1 / 6, 2 / 6, 3 / 6], atol=0.02)


def test_explicit_counts_are_honoured():
    y = np.repeat([0, 1], 500)
    x = np.zeros((1000, 2), dtype=np.float32)
    split = split_task(RawTask(x, y), SplitSpec(train=100, val=200, test=300), classification=True, seed=0)
    assert (len(split.y_train), len(split.y_val), len(split.y_test)) == (100, 200, 300)


def test_scaling_uses_the_training_split_only():
    rng = np.random.default_rng(0)
    x = rng.normal(5.0, 3.0, size=(600, 4)).astype(np.float32)
    y = rng.integers(0, 2, 600)
    split = standardize_features(split_task(RawTask(x, y), SplitSpec(0.2, 0.2), classification=True, seed=0))
    np.testing.assert_allclose(split.x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(split.x_train.std(axis=0), 1, atol=1e-4)
    assert np.abs(split.x_test.mean(axis=0)).max() > 1e-3  # other splits are not re-centred on themselves


BUNDLED = sorted(name for name, info in TASKS.items() if info.source is None)


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_task_loads_with_consistent_shapes(name):
    data = load_task_data(name)
    for which in ("train", "val", "test"):
        x, y = data.split(which)
        assert x.dtype == torch.float32 and x.shape == (len(y), data.n_features)
        assert torch.isfinite(x).all()
        if data.classification:
            assert y.dtype == torch.int64 and int(y.max()) < data.n_outputs
    assert load_task_data(name) is data  # loaded once per process


def test_the_split_of_a_task_is_fixed():
    load_task_data.cache_clear()
    first = load_task_data("wine").y_test.clone()
    load_task_data.cache_clear()
    assert torch.equal(load_task_data("wine").y_test, first)


def test_fractional_splits_are_fractions_of_all_rows():
    assert load_task_data("digits").sizes() == (1079, 359, 359)
    assert load_task_data("wine").sizes() == (106, 36, 36)
