"""Seeded, stratified train/validation/test splits and train-only feature scaling."""

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

REGRESSION_STRATA = 5  # quantile bins of the target, so each split sees the whole range of y


@dataclass(frozen=True)
class SplitSpec:
    """Sizes as fractions of all samples (float) or counts (int); `train` None means what is left."""

    val: float | int
    test: float | int
    train: int | None = None


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _strata(y: np.ndarray, classification: bool) -> np.ndarray:
    if classification:
        return y
    edges = np.quantile(y, np.linspace(0, 1, REGRESSION_STRATA + 1)[1:-1])
    return np.digitize(y, edges)


def _count(size: float | int, total: int) -> int:
    return size if isinstance(size, int) else round(size * total)


def split_dataset(x: np.ndarray, y: np.ndarray, spec: SplitSpec, *, classification: bool, seed: int) -> Split:
    """Split once per task with a fixed seed: a cell's seed never changes which rows are test rows."""
    n = len(y)
    n_test, n_val = _count(spec.test, n), _count(spec.val, n)
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=n_test, stratify=_strata(y, classification), random_state=seed % 2**32)
    n_train = len(rest) - n_val if spec.train is None else spec.train
    train, val = train_test_split(
        rest,
        train_size=n_train,
        test_size=n_val,
        stratify=_strata(y[rest], classification),
        random_state=(seed + 1) % 2**32,
    )
    return Split(x[train], y[train], x[val], y[val], x[test], y[test])


def standardize(split: Split, *, classification: bool) -> Split:
    """Scale features (and a regression target) with statistics of the training split alone."""
    scaler = StandardScaler().fit(split.x_train)
    ys = (split.y_train, split.y_val, split.y_test)
    if not classification:
        mean, std = split.y_train.mean(), split.y_train.std()
        ys = tuple((y - mean) / std for y in ys)
    return Split(
        scaler.transform(split.x_train),
        ys[0],
        scaler.transform(split.x_val),
        ys[1],
        scaler.transform(split.x_test),
        ys[2],
    )
