"""The task registry: one entry per data set, with its split. Adding a task is one entry here; a plugin adds one
through the entry-point group `dropbench.tasks`, or a suite names one as `module:object` (docs/plugins.md)."""

import difflib
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING

from ..errors import UserError
from ..plugins import registry
from . import tabular
from .fetch import DataSource
from .images import load_cifar10_task, load_idx_task
from .sources import CIFAR10, FASHION_MNIST, MNIST
from .splits import RawTask, SplitSpec

if TYPE_CHECKING:
    from .filetask import TaskKey


@dataclass(frozen=True)
class TaskInfo:
    """A task: its name, kind, a line on what it is and where it comes from, how to load every row (`load`, called
    in each process that trains it) and how to split them. What a plugin task registers (docs/plugins.md)."""

    name: str
    kind: str  # "classification" (cross-entropy, accuracy) or "regression" (MSE on a standardized target)
    summary: str
    origin: str
    load: Callable[[], RawTask]
    split: SplitSpec
    source: DataSource | None = None  # files to fetch; None for data that ships with scikit-learn
    # Size hints for planning (shards, --dry-run) before any data is loaded.
    train_rows: int = 10_000
    n_inputs: int = 100

    @property
    def classification(self) -> bool:
        return self.kind == "classification"


# 20% validation and 20% test unless a task says otherwise: enough rows to measure a gap on small sets.
_DEFAULT_SPLIT = SplitSpec(val=0.2, test=0.2)
# Image sets keep their official test set; 5,000 training images are held out for validation
# (early stopping, curves), as many dropout papers do (Srivastava et al. 2014 hold out 10,000).
_IMAGE_SPLIT = SplitSpec(val=5000, test=None)

TASKS: dict[str, TaskInfo] = {
    info.name: info
    for info in [
        TaskInfo(
            "breast-cancer",
            "classification",
            "569 tumours, 30 features, 2 classes",
            "scikit-learn (Wisconsin diagnostic)",
            tabular.load_breast_cancer,
            _DEFAULT_SPLIT,
            train_rows=341,
            n_inputs=30,
        ),
        TaskInfo(
            "cifar10",
            "classification",
            "60,000 32x32 colour images, 10 classes (50,000 + 10,000 test)",
            "CIFAR-10, binary version (Krizhevsky 2009)",
            partial(load_cifar10_task, CIFAR10),
            _IMAGE_SPLIT,
            CIFAR10,
            train_rows=45000,
            n_inputs=3072,
        ),
        TaskInfo(
            "diabetes",
            "regression",
            "442 patients, 10 features, disease progression",
            "scikit-learn (Efron et al. 2004)",
            tabular.load_diabetes,
            _DEFAULT_SPLIT,
            train_rows=266,
            n_inputs=10,
        ),
        TaskInfo(
            "digits",
            "classification",
            "1,797 8x8 digit images, 64 features, 10 classes",
            "scikit-learn (UCI optdigits)",
            tabular.load_digits,
            _DEFAULT_SPLIT,
            train_rows=1079,
            n_inputs=64,
        ),
        TaskInfo(
            "fashion-mnist",
            "classification",
            "70,000 28x28 grey clothing images, 10 classes (60,000 + 10,000 test)",
            "Fashion-MNIST (Xiao et al. 2017)",
            partial(load_idx_task, FASHION_MNIST),
            _IMAGE_SPLIT,
            FASHION_MNIST,
            train_rows=55000,
            n_inputs=784,
        ),
        TaskInfo(
            "mnist",
            "classification",
            "70,000 28x28 grey digits, 10 classes (60,000 + 10,000 test)",
            "MNIST (LeCun et al. 1998)",
            partial(load_idx_task, MNIST),
            _IMAGE_SPLIT,
            MNIST,
            train_rows=55000,
            n_inputs=784,
        ),
        TaskInfo(
            "synthetic",
            "classification",
            "300 training rows, 50 features (20 informative), 4 classes, 10% label noise",
            "scikit-learn make_classification, fixed seed",
            tabular.load_synthetic,
            # A small training set is the point; a large test set keeps its accuracy precise (±1.2 pp).
            SplitSpec(train=300, val=500, test=1500),
            train_rows=300,
            n_inputs=50,
        ),
        TaskInfo(
            "wine",
            "classification",
            "178 wines, 13 features, 3 classes",
            "scikit-learn (UCI wine)",
            tabular.load_wine,
            _DEFAULT_SPLIT,
            train_rows=106,
            n_inputs=13,
        ),
    ]
}


def _check_task(value: object, name: str) -> TaskInfo:
    """What a plugin registers: a TaskInfo, named as the suite names it (the entry point's name, or the reference)."""
    if not isinstance(value, TaskInfo):
        raise UserError(f"a task is a dropbench.data.TaskInfo, got {value!r}")
    if value.kind not in ("classification", "regression", "from its target"):
        raise UserError(f"task kind {value.kind!r}: expected 'classification' or 'regression'")
    return replace(value, name=name)


REGISTRY = registry("dropbench.tasks", "task", _check_task)
for _info in TASKS.values():
    REGISTRY.register(_info.name, _info)

# Names that look like a data file: the user meant a task read from it (a [[task]] with a path).
_FILE_LIKE = (".csv", ".tsv", ".parquet", ".pq", ".npz", ".gz", "/")


def task_names() -> str:
    return ", ".join([*sorted(TASKS), *REGISTRY.plugin_names(), "openml:<id>", "module:object"])


def load_openml_task(data_id: int) -> RawTask:
    """An OpenML table: features as a DataFrame (encoded later, on the training split), the target encoded."""
    from .fetch import data_dir, offline
    from .openml import encode_target, fetch_openml_frame, target_kind

    x, y = fetch_openml_frame(data_id, data_dir(), offline=offline())  # sklearn adds openml/
    kind = target_kind(y)
    return RawTask(x, encode_target(y, kind), classification=kind == "classification")


def get_task(key: "TaskKey") -> TaskInfo:
    """A task by name (a built-in, an OpenML one: `openml:<id>` or a shortcut such as `adult`, a plugin's, a
    `module:object` reference), or the task a suite declared on files (its FileTask)."""
    if not isinstance(key, str):
        return key.info()
    name = key
    if name in TASKS:
        return TASKS[name]
    from .openml import parse_openml_name

    data_id = parse_openml_name(name)
    if data_id is None:
        found = REGISTRY.get(name) if REGISTRY.known(name) else None
        if found is not None:
            return found
        close = difflib.get_close_matches(name, [*TASKS, *REGISTRY.plugin_names()], n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        if name.lower().endswith(_FILE_LIKE) or "/" in name:
            hint += f"; to read a file, declare a task with a name and path = '{name}' (a table also needs target)"
        raise UserError(f"unknown task '{name}'{hint}; known: {task_names()}")
    return TaskInfo(
        name,
        "from its target",
        f"OpenML data set {data_id}",
        f"OpenML (data id {data_id})",
        partial(load_openml_task, data_id),
        _DEFAULT_SPLIT,
    )
