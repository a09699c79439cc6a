"""Tabular and small image sets that scikit-learn ships (offline), and a synthetic set built to overfit."""

import numpy as np
from sklearn import datasets

from .splits import RawTask


def load_digits() -> RawTask:
    """1,797 8x8 grey images of digits (UCI optdigits test set), pixel values 0..16, 10 classes."""
    bunch = datasets.load_digits()
    return RawTask(bunch.data.astype(np.float32), bunch.target)


def load_breast_cancer() -> RawTask:
    """569 tumours (Wisconsin diagnostic), 30 features, malignant vs benign."""
    bunch = datasets.load_breast_cancer()
    return RawTask(bunch.data.astype(np.float32), bunch.target)


def load_wine() -> RawTask:
    """178 wines, 13 chemical features, 3 cultivars."""
    bunch = datasets.load_wine()
    return RawTask(bunch.data.astype(np.float32), bunch.target)


def load_diabetes() -> RawTask:
    """442 patients, 10 features, disease progression after one year (regression)."""
    bunch = datasets.load_diabetes()
    return RawTask(bunch.data.astype(np.float32), bunch.target.astype(np.float32))


def load_synthetic() -> RawTask:
    """A 4-class problem built to be overfit: 50 features (20 informative, 5 redundant), 10% noisy labels.

    The data are generated once with a fixed seed (the task is the same everywhere); the task's split
    keeps only 300 training rows, so an unregularized MLP memorizes the noise and its gap is large.
    """
    x, y = datasets.make_classification(
        n_samples=2300,
        n_features=50,
        n_informative=20,
        n_redundant=5,
        n_classes=4,
        n_clusters_per_class=1,
        flip_y=0.1,  # labels reassigned at random: what an unregularized net memorizes
        class_sep=1.5,
        random_state=20140601,  # any fixed value: the data must not depend on the cell's seed
    )
    return RawTask(x.astype(np.float32), y)
