"""Tasks and their data: one split per task, scaled on the training rows, held as tensors once per process."""

from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from ..seeding import derive_seed
from .registry import TASKS, TaskInfo, get_task, task_names
from .splits import split_dataset, standardize

__all__ = ["TASKS", "TaskData", "TaskInfo", "get_task", "load_task_data", "task_names"]


@dataclass(frozen=True)
class TaskData:
    """A task's three splits as tensors: float32 features, int64 labels or float32 targets."""

    name: str
    classification: bool
    n_features: int
    n_outputs: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def sizes(self) -> tuple[int, int, int]:
        return len(self.y_train), len(self.y_val), len(self.y_test)


def _targets(y: np.ndarray, classification: bool) -> torch.Tensor:
    return torch.as_tensor(y, dtype=torch.int64 if classification else torch.float32)


@cache
def load_task_data(name: str) -> TaskData:
    """Load, split and scale a task once per process; every cell of the run shares these tensors."""
    info = get_task(name)
    x, y = info.load()
    if info.classification:
        _, y = np.unique(y, return_inverse=True)  # labels 0..K-1 whatever the source used
    split = split_dataset(x, y, info.split, classification=info.classification, seed=derive_seed(name, "split"))
    split = standardize(split, classification=info.classification)

    def features(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a, dtype=np.float32))

    return TaskData(
        name=name,
        classification=info.classification,
        n_features=x.shape[1],
        n_outputs=int(y.max()) + 1 if info.classification else 1,
        x_train=features(split.x_train),
        y_train=_targets(split.y_train, info.classification),
        x_val=features(split.x_val),
        y_val=_targets(split.y_val, info.classification),
        x_test=features(split.x_test),
        y_test=_targets(split.y_test, info.classification),
    )
