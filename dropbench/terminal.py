"""Terminal output: a rich progress bar on a terminal, one line per cell elsewhere, nothing when quiet."""

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

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
from .runner import Plan, Reporter, RunSummary
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


class JsonLineReporter(Reporter):
    """One JSON object per line on stderr: each finished cell (its whole row), notes, and the end."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def _emit(self, record: dict) -> None:
        self.stream.write(json.dumps(record, default=str, allow_nan=False) + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        self._emit({"event": "note", "message": message})

    def start(self, suite: Suite, total: int, skipped: int, csv_path: Path) -> None:
        self._emit({"event": "start", "suite": suite.name, "cells": total, "skipped": skipped, "csv": str(csv_path)})

    def cell_done(self, cell: Cell, row: ResultRow) -> None:
        fields = {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(row).items()}
        self._emit({"event": "cell", **fields})

    def finish(self, summary: RunSummary) -> None:
        self._emit({"event": "finish", "counts": dict(summary.counts), "seconds": summary.seconds,
                    "csv": str(summary.csv_path)})  # fmt: skip


def make_reporter(quiet: bool, log_format: str = "text") -> Reporter:
    """Quiet: nothing. JSON: JSON lines. Text: a live bar on a terminal, else one line per cell."""
    if quiet:
        return Reporter()
    if log_format == "json":
        return JsonLineReporter(sys.stderr)
    console = stderr_console()
    return ProgressReporter(console) if console.is_terminal else LineReporter(console)


def print_plan(plan: Plan, executor: object) -> None:
    """--dry-run: per task, the cells of the grid (or shard), those done, those to run, a time estimate."""
    from rich.table import Table

    from .planning import calibration, estimate_seconds

    done_cells = [c for c in plan.cells if c.cell_id in plan.written and c.cell_id not in plan.rerun]
    scale = calibration(done_cells, [float(plan.written[c.cell_id]["fit_seconds"] or "nan") for c in done_cells])
    jobs = getattr(executor, "jobs", 1)
    table = Table(title=f"dry run -> {plan.csv_path}", title_justify="left")
    for column in ("task", "cells", "done", "to run", "estimated time"):
        table.add_column(column, justify="left" if column == "task" else "right")
    tasks = dict.fromkeys(c.task.name for c in plan.cells)
    for task in tasks:
        cells = [c for c in plan.cells if c.task.name == task]
        todo = [c for c in plan.todo if c.task.name == task]
        table.add_row(task, str(len(cells)), str(len(cells) - len(todo)), str(len(todo)),
                      _duration(estimate_seconds(todo, jobs, scale)))  # fmt: skip
    table.add_row("all", str(len(plan.cells)), str(len(plan.cells) - len(plan.todo)), str(len(plan.todo)),
                  _duration(estimate_seconds(plan.todo, jobs, scale)), style="bold")  # fmt: skip
    stdout_console().print(table)
    basis = "measured on the cells already done" if done_cells else "this project's 2-core CPU rates"
    stdout_console().print(f"estimate from {basis}, over {jobs} worker process(es)", highlight=False)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
