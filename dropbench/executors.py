"""Where cells run. The local executor fits them one after another in this process."""

import os
from collections.abc import Iterable, Iterator

import torch

from .config import Cell
from .data import load_task_data
from .errors import UserError
from .provenance import utc_now
from .train import CellResult, fit_cell


def default_threads() -> int:
    """All cores this process may use: one process training one cell owns the machine."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fit_safely(cell: Cell) -> CellResult:
    """Fit a cell; an exception in training is recorded as a failed cell, not a crashed run.

    Bad data (UserError) still stops the run: every other cell of that task would fail the same way.
    """
    data = load_task_data(cell.task.name)
    try:
        return fit_cell(cell, data)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of one cell is recorded and the run goes on
        return CellResult(status="failed", error=f"{type(error).__name__}: {error}")


class LocalExecutor:
    """Fit cells sequentially in this process with a deliberate thread count."""

    name = "local"

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or default_threads()

    def run(self, cells: Iterable[Cell]) -> Iterator[tuple[Cell, CellResult, str]]:
        """Yield (cell, result, started_at) as each cell finishes."""
        torch.set_num_threads(self.threads)
        for cell in cells:
            started_at = utc_now()
            yield cell, fit_safely(cell), started_at
