"""Terminal output: a rich progress bar on a terminal, one line per cell elsewhere, nothing when quiet."""

import sys
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .config import Cell
from .results import ResultRow
from .runner import Reporter, RunSummary
from .suite import Suite

WIDE = 140  # off a terminal rich would assume 80 columns and wrap the tables


def stdout_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else WIDE)


def stderr_console() -> Console:
    return Console(stderr=True, width=None if sys.stderr.isatty() else WIDE)


def _outcome(row: ResultRow) -> str:
    if row.status != "ok":
        return f"{row.status}: {row.error}"
    if row.test_acc == row.test_acc:  # not NaN: a classification task
        return f"test_acc={row.test_acc:.4f} gap_acc={row.gap_acc:+.4f}"
    return f"test_loss={row.test_loss:.4f} gap_loss={row.gap_loss:+.4f}"


class LineReporter(Reporter):
    """One plain line per finished cell, for CI logs and pipes."""

    def __init__(self, console: Console) -> None:
        self.console, self.done, self.total = console, 0, 0

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def start(self, suite: Suite, total: int, skipped: int, csv_path: Path) -> None:
        self.total = total
        skip = f", {skipped} already in the file" if skipped else ""
        self.console.print(f"{suite.name}: {total} cells to run{skip} -> {csv_path}", highlight=False)

    def cell_done(self, cell: Cell, row: ResultRow) -> None:
        self.done += 1
        self.console.print(
            f"[{self.done}/{self.total}] {cell.describe()} {_outcome(row)} ({row.fit_seconds:.2f} s)",
            highlight=False,
            markup=False,
        )


class ProgressReporter(Reporter):
    """A live bar with the count, elapsed time, ETA and the cell that just finished."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[last]}", markup=False),
            console=console,
            transient=True,
        )
        self.bar = None

    def note(self, message: str) -> None:
        self.progress.console.print(message, highlight=False, markup=False)

    def start(self, suite: Suite, total: int, skipped: int, csv_path: Path) -> None:
        self.progress.start()
        self.bar = self.progress.add_task(suite.name, total=total, last="")
        if skipped:
            self.progress.console.print(f"{skipped} cells already in {csv_path}: skipped")

    def cell_done(self, cell: Cell, row: ResultRow) -> None:
        self.progress.update(self.bar, advance=1, last=cell.describe())
        if row.status != "ok":
            self.progress.console.print(f"[red]{cell.describe()}: {_outcome(row)}[/red]", highlight=False)

    def finish(self, summary: RunSummary) -> None:
        self.progress.stop()


def make_reporter(quiet: bool) -> Reporter:
    if quiet:
        return Reporter()
    console = stderr_console()
    return ProgressReporter(console) if console.is_terminal else LineReporter(console)
