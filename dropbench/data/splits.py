"""Seeded, stratified splits and normalization statistics taken from the training split alone."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

if TYPE_CHECKING:
    import pandas as pd

REGRESSION_STRATA = 5  # quantile bins of the target, so each split sees the whole range of y
# A task's inputs: an array, or an OpenML DataFrame until it is encoded (see openml.transform_splits).
Features: TypeAlias = "np.ndarray | pd.DataFrame"


@dataclass(frozen=True)
class SplitSpec:
    """Sizes as fractions of the rows (float) or counts (int); `train` None means what is left.
    `test` None means the data set's official test set is used and only `val` is carved out."""

    val: float | int
    test: float | int | None
    train: int | None = None


# How a task's DataFrame splits become arrays, fitted on the training rows: (train, val, test) -> arrays.
Transform: TypeAlias = "Callable[[Features, Features, Features], tuple[np.ndarray, np.ndarray, np.ndarray]]"


@dataclass(frozen=True)
class RawTask:
    """What a loader returns: every row, and an official test set if any. `x`: float features [N, F], images
    [N, C, H, W] (uint8: normalized per batch with the training split's channel statistics; other numbers
    standardized per channel once), or a DataFrame that `transform` (default: the OpenML encoding) turns into
    float arrays, fitted on the training rows. `y`: labels of any sortable kind (classification) or numbers."""

    x: Features
    y: np.ndarray
    x_test: "Features | None" = None
    y_test: np.ndarray | None = None
    classification: bool | None = None  # None: the registry's kind says
    transform: "Transform | None" = None


@dataclass(frozen=True)
class Split:
    x_train: Features
    y_train: np.ndarray
    x_val: Features
    y_val: np.ndarray
    x_test: Features
    y_test: np.ndarray


def _strata(y: np.ndarray, classification: bool) -> np.ndarray:
    if classification:
        return y
    edges = np.quantile(y, np.linspace(0, 1, REGRESSION_STRATA + 1)[1:-1])
    return np.digitize(y, edges)


def _count(size: float | int, total: int) -> int:
    return size if isinstance(size, int) else round(size * total)


def _rows(x: Features, idx: np.ndarray) -> Features:
    return x.iloc[idx] if hasattr(x, "iloc") else x[idx]


def split_task(raw: RawTask, spec: SplitSpec, *, classification: bool, seed: int) -> Split:
    """Split once per task with a fixed seed: a cell's seed never changes which rows are test rows."""
    y = raw.y
    idx = np.arange(len(y))
    if raw.x_test is None:
        if spec.test is None:
            raise ValueError("a task without an official test set needs a test size in its SplitSpec")
        idx, test = train_test_split(
            idx, test_size=_count(spec.test, len(y)), stratify=_strata(y, classification), random_state=seed % 2**32
        )
    n_val = _count(spec.val, len(y))  # fractions are of all rows, so 0.2/0.2 leaves 60% for training
    n_train = len(idx) - n_val if spec.train is None else spec.train
    train, val = train_test_split(
        idx,
        train_size=n_train,
        test_size=n_val,
        stratify=_strata(y[idx], classification),
        random_state=(seed + 1) % 2**32,
    )
    if raw.x_test is None:
        x_test, y_test = _rows(raw.x, test), y[test]
    else:
        x_test, y_test = raw.x_test, raw.y_test
    return Split(_rows(raw.x, train), y[train], _rows(raw.x, val), y[val], x_test, y_test)


def image_statistics(x_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images [N, C, H, W] on the 0..255 scale, in float64."""
    levels = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(x_train.shape[1]):
        # A histogram of the 256 byte values gives exact moments without a float copy of the images
        # (numpy's std would allocate 8 bytes per pixel: 345 MB for MNIST's training split).
        # bincount casts its input to int64, so count in chunks of 4,096 images (13 MB for MNIST).
        counts = sum(
            (
                np.bincount(x_train[start : start + 4096, c].ravel(), minlength=256)
                for start in range(0, len(x_train), 4096)
            ),
            start=np.zeros(256, dtype=np.int64),
        ).astype(np.float64)
        mean = counts @ levels / counts.sum()
        means.append(mean)
        stds.append(np.sqrt(counts @ (levels - mean) ** 2 / counts.sum()))
    return np.array(means), np.array(stds)


def standardize_features(split: Split) -> Split:
    """Scale numeric features with the training split's mean and std (sklearn's StandardScaler)."""
    scaler = StandardScaler().fit(split.x_train)
    return Split(
        scaler.transform(split.x_train),
        split.y_train,
        scaler.transform(split.x_val),
        split.y_val,
        scaler.transform(split.x_test),
        split.y_test,
    )


def standardize_images(split: Split) -> Split:
    """Float images [N, C, H, W] standardized per channel with the training split's mean and std, once."""
    mean = split.x_train.mean(axis=(0, 2, 3), dtype=np.float64, keepdims=True)
    std = np.maximum(split.x_train.std(axis=(0, 2, 3), dtype=np.float64, keepdims=True), 1e-6)

    def scaled(x: np.ndarray) -> np.ndarray:
        return ((x - mean) / std).astype(np.float32)

    return Split(
        scaled(split.x_train), split.y_train, scaled(split.x_val), split.y_val, scaled(split.x_test), split.y_test
    )


def standardize_target(split: Split) -> Split:
    """A regression target on the training split's scale: losses read as a fraction of its variance."""
    mean, std = split.y_train.mean(), split.y_train.std()
    return Split(
        split.x_train,
        (split.y_train - mean) / std,
        split.x_val,
        (split.y_val - mean) / std,
        split.x_test,
        (split.y_test - mean) / std,
    )
