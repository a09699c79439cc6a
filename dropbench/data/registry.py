"""The task registry: one entry per data set, with its split. Adding a task is one entry here."""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import UserError
from . import tabular
from .splits import SplitSpec


@dataclass(frozen=True)
class TaskInfo:
    name: str
    kind: str  # "classification" (cross-entropy, accuracy) or "regression" (MSE on a standardized target)
    summary: str
    source: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    split: SplitSpec

    @property
    def classification(self) -> bool:
        return self.kind == "classification"


# 20% validation and 20% test unless a task says otherwise: enough rows to measure a gap on small sets.
_DEFAULT_SPLIT = SplitSpec(val=0.2, test=0.2)

TASKS: dict[str, TaskInfo] = {
    info.name: info
    for info in [
        TaskInfo(
            "breast-cancer", "classification", "569 tumours, 30 features, 2 classes",
            "scikit-learn (Wisconsin diagnostic)", tabular.load_breast_cancer, _DEFAULT_SPLIT,
        ),
        TaskInfo(
            "diabetes", "regression", "442 patients, 10 features, disease progression",
            "scikit-learn (Efron et al. 2004)", tabular.load_diabetes, _DEFAULT_SPLIT,
        ),
        TaskInfo(
            "digits", "classification", "1,797 8x8 digit images, 64 features, 10 classes",
            "scikit-learn (UCI optdigits)", tabular.load_digits, _DEFAULT_SPLIT,
        ),
        TaskInfo(
            "synthetic", "classification",
            "300 training rows, 50 features (20 informative), 4 classes, 10% label noise",
            "scikit-learn make_classification, fixed seed", tabular.load_synthetic,
            # A small training set is the point; a large test set keeps its accuracy precise (±1.2 pp).
            SplitSpec(train=300, val=500, test=1500),
        ),
        TaskInfo(
            "wine", "classification", "178 wines, 13 features, 3 classes",
            "scikit-learn (UCI wine)", tabular.load_wine, _DEFAULT_SPLIT,
        ),
    ]
}  # fmt: skip


def task_names() -> str:
    return ", ".join(sorted(TASKS))


def get_task(name: str) -> TaskInfo:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task '{name}'; known: {task_names()}") from None
