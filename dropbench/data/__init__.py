"""Tasks and their data: one split per task, normalized with training statistics, held once per process.

Images stay uint8 in memory (MNIST's 55,000 training images: 43 MB instead of 172 MB as float32;
CIFAR-10's 45,000: 138 MB instead of 553 MB) and are normalized batch by batch, per channel, with the
training split's mean and std; the same tensors serve every cell a process runs. Tabular features are
standardized once (float32).
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cache, partial

import numpy as np
import torch

from ..errors import UserError
from ..seeding import derive_seed
from .fetch import ensure_source
from .filetask import FileTask, TaskKey
from .registry import TASKS, TaskInfo, get_task, task_names
from .splits import (
    RawTask,
    Split,
    SplitSpec,
    Transform,
    image_statistics,
    split_task,
    standardize_features,
    standardize_images,
    standardize_target,
)

__all__ = [
    "TASKS",
    "FileTask",
    "RawTask",
    "SplitSpec",
    "TaskData",
    "TaskInfo",
    "TaskKey",
    "get_task",
    "data_checksums",
    "load_task_data",
    "prepare_task",
    "task_names",
]


@dataclass(frozen=True)
class TaskData:
    """A task's three splits as tensors (uint8 images or float32 features; int64 labels or float32 targets)."""

    name: str
    classification: bool
    input_shape: tuple[int, ...]
    n_outputs: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_mean: torch.Tensor | None = None  # per channel, broadcastable to a batch; None: already scaled
    input_inv_std: torch.Tensor | None = None

    @property
    def n_features(self) -> int:
        return math.prod(self.input_shape)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """A batch as the network sees it: float32, normalized (a new tensor for uint8 images)."""
        if self.input_mean is None or self.input_inv_std is None:  # set together, by _normalize
            return x
        return x.float().sub_(self.input_mean).mul_(self.input_inv_std)

    def to(self, device: str | torch.device) -> "TaskData":
        """The same data on another device (every tensor moved once; the cells of a run share them)."""
        moved = {name: value.to(device) for name, value in self.__dict__.items() if isinstance(value, torch.Tensor)}
        return replace(self, **moved)  # type: ignore[arg-type]  # the Tensor fields by name, from a dict

    def split(self, which: str) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"x_{which}"), getattr(self, f"y_{which}")

    def sizes(self) -> tuple[int, int, int]:
        return len(self.y_train), len(self.y_val), len(self.y_test)


def _targets(y: np.ndarray, classification: bool) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y), dtype=torch.int64 if classification else torch.float32)


def _tensor(x: object) -> torch.Tensor:
    array = np.ascontiguousarray(x)
    if array.dtype != np.uint8:
        array = array.astype(np.float32, copy=False)
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _normalize(split: Split, transform: "Transform | None") -> tuple[Split, torch.Tensor | None, torch.Tensor | None]:
    """Features as the network will take them; statistics from the training split only."""
    if hasattr(split.x_train, "columns"):  # a DataFrame: encoded by a transform fitted on the training rows
        if transform is None:  # OpenML's: impute, scale, one-hot
            from .openml import transform_splits

            transform = transform_splits
        x_train, x_val, x_test = transform(split.x_train, split.x_val, split.x_test)
        return Split(x_train, split.y_train, x_val, split.y_val, x_test, split.y_test), None, None
    if split.x_train.dtype == np.uint8 and split.x_train.ndim == 4:  # images: normalized per batch
        mean, std = image_statistics(split.x_train)  # on the 0..255 scale of the stored bytes
        shape = (1, len(mean), 1, 1)
        as_tensor = partial(torch.tensor, dtype=torch.float32)
        return split, as_tensor(mean).view(shape), as_tensor(1.0 / np.maximum(std, 1e-6)).view(shape)
    if split.x_train.ndim == 4:  # images of other numbers: standardized per channel, once
        return standardize_images(split), None, None
    return standardize_features(split), None, None


def prepare_task(key: TaskKey, log: Callable[[str], None] | None = None) -> None:
    """Make a task's files present and verified (downloading them unless offline), before any cell runs,
    so that worker processes only ever read and a missing file stops the run before it starts. A task of
    the user's (files, a plugin) is loaded here once, so that bad data stops the run before any cell starts."""
    info = get_task(key)
    if info.source is not None:
        ensure_source(info.source, log=log)
    elif isinstance(key, FileTask) or info.name not in TASKS:
        load_task_data(key)  # OpenML: fetching also fills scikit-learn's cache in the data dir


def data_checksums(key: TaskKey) -> dict[str, str]:
    """The content SHA-256 of each file a task reads, by file (empty for data that ships with scikit-learn or
    comes from a plugin): the bundled sets' by file name, a suite's files by path."""
    if isinstance(key, FileTask):
        return key.checksums()
    info = get_task(key)
    return {} if info.source is None else {f.name: f.content_sha256 for f in info.source.files}


@cache
def load_task_data_on(key: TaskKey, device: str) -> TaskData:
    """A task's data on a device, moved there once per process."""
    data = load_task_data(key)
    return data if device == "cpu" else data.to(device)


def _split(raw: RawTask, info: TaskInfo, classification: bool) -> Split:
    """The task's one split; for the user's data (files, plugins, OpenML), too few rows is one line, not a
    traceback from scikit-learn."""
    try:
        return split_task(raw, info.split, classification=classification, seed=derive_seed(info.name, "split"))
    except ValueError as error:
        if info.name in TASKS and TASKS[info.name] is info:
            raise
        rows, sizes = len(raw.y), info.split
        classes = f", {len(np.unique(raw.y))} classes" if classification else ""
        wanted = f"validation {sizes.val}" + ("" if sizes.test is None else f", test {sizes.test}")
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"{info.origin}: too few rows for the split ({rows} rows{classes}; {wanted}): {reason}"
        ) from None


def _load(info: TaskInfo) -> RawTask:
    """Every row of a task. A plugin's load() that fails is one line naming the task, not a traceback (the
    package's own loaders raise UserError for bad input, and anything else is a bug to see whole)."""
    if info.name in TASKS and TASKS[info.name] is info:
        return info.load()
    try:
        return info.load()
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - the user's code: its failure is reported, the run stops
        lines = str(error).strip().splitlines()
        raise UserError(
            f"task '{info.name}' ({info.origin}): load() failed: {type(error).__name__}: {lines[0] if lines else ''}"
        ) from None


@cache
def load_task_data(key: TaskKey) -> TaskData:
    """Load, split and normalize a task once per process; every cell of the run shares these tensors."""
    info = get_task(key)
    name = info.name
    raw = _load(info)
    if not isinstance(raw, RawTask):
        raise UserError(f"task '{name}': its load() returned {type(raw).__name__}, not a dropbench.data.RawTask")
    classification = info.classification if raw.classification is None else raw.classification
    n_outputs = 1
    if classification:
        y_all = raw.y if raw.y_test is None else np.concatenate([raw.y, raw.y_test])
        classes, codes = np.unique(y_all, return_inverse=True)  # labels 0..K-1 whatever the source used
        n_outputs = len(classes)
        y_test = None if raw.y_test is None else codes[len(raw.y) :]
        raw = RawTask(raw.x, codes[: len(raw.y)], raw.x_test, y_test, classification, raw.transform)
    split = _split(raw, info, classification)
    if not classification:
        split = standardize_target(split)
    split, mean, inv_std = _normalize(split, raw.transform)
    return TaskData(
        name=name,
        classification=classification,
        input_shape=tuple(np.shape(split.x_train)[1:]),
        n_outputs=n_outputs,
        x_train=_tensor(split.x_train),
        y_train=_targets(split.y_train, classification),
        x_val=_tensor(split.x_val),
        y_val=_targets(split.y_val, classification),
        x_test=_tensor(split.x_test),
        y_test=_targets(split.y_test, classification),
        input_mean=mean,
        input_inv_std=inv_std,
    )
