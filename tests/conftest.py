import os
from pathlib import Path

import pytest
import torch

from dropbench.config import Cell, ModelConfig, OptimizerConfig, TaskConfig
from dropbench.regularizers import parse_regularizer

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "tests" / "hooks"  # its sitecustomize.py patches dropbench in subprocesses (DROPBENCH_TEST_*)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a dropbench subprocess: this checkout on the path, and the test hooks."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(HOOKS)]), **extra}


# Every figure a result holds; a diverged cell holds none of them (epochs, best epoch and time stay).
FIGURES = (
    "train_loss",
    "train_acc",
    "val_loss",
    "val_acc",
    "test_loss",
    "test_acc",
    "test_ece",
    "test_acc_mc",
    "test_loss_mc",
    "test_ece_mc",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--slow",
        action="store_true",
        help="Also run the tests marked slow (subprocesses, kills, Ray, real data, simulations); CI runs them all.",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the slow tests unless --slow is given or -m names the marker itself (e.g. -m slow)."""
    if config.getoption("--slow") or "slow" in (config.option.markexpr or ""):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


@pytest.fixture(autouse=True)
def _one_thread():
    # Deterministic and not oversubscribed when pytest shares the machine with other work.
    torch.set_num_threads(1)


def make_cell(task="digits", reg="none", keep=1.0, seed=0, epochs=3, hidden=(32,), strengths=None, **task_kw):
    config = TaskConfig(
        name=task,
        model=ModelConfig(hidden=tuple(hidden)),
        optimizer=task_kw.pop("optimizer", OptimizerConfig(lr=0.01)),
        batch_size=task_kw.pop("batch_size", 64),
        epochs=epochs,
    )
    input_keep = task_kw.pop("input_keep", 1.0)
    return Cell("test", config, parse_regularizer(reg, strengths or {}), keep, input_keep, "bernoulli", seed)
