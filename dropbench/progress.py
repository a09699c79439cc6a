"""A run's progress as it goes, and its last lines: a live bar on a terminal, one line (or one JSON object) per
finished cell elsewhere, nothing when quiet.

The bar counts training epochs, not cells: a stack finishes all its cells at once, so a bar of cells would sit
still while stacks train. Its total is every cell's epoch budget, less the epochs a cell's checkpoint holds already
(a halving rung's cell continues from the rung before), and it grows as a halving run's later rungs become known;
an epoch counts when it ends (executors send them from their workers), and a cell that stops early (early
stopping, divergence, failure) is credited its remaining epochs when it stops. The line and JSON reporters stay
one record per finished cell.
"""

import json
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .config import Cell
from .report.console import stderr_console
from .results import ResultRow
from .runner import Reporter, RunSummary
from .suite import Suite
from .train import EpochProgress


def _outcome(row: ResultRow) -> str:
    if row.status != "ok":
        return f"{row.status}: {row.error}"
    if row.test_acc == row.test_acc:  # not NaN: a classification task
        return f"test_acc={row.test_acc:.4f} gap_acc={row.gap_acc:+.4f}"
    return f"test_loss={row.test_loss:.4f} gap_loss={row.gap_loss:+.4f}"


class EpochTally:
    """Epochs counted per cell, each at most the cell's budget: an epoch that ended, all of a cell's budget
    once it stopped or finished. A report that comes twice (a cell retried after its worker died, a stack
    whose cells are refitted one by one) or late (after the cell's row) counts nothing more. A cell that
    continues from a checkpoint (`starts`: the epochs it holds) counts only the epochs after it."""

    def __init__(self) -> None:
        self.counted: dict[str, int] = {}
        self.starts: dict[str, int] = {}

    def _raise(self, cell_id: str, epochs: int) -> int:
        before = self.counted.get(cell_id, 0)
        if epochs <= before:
            return 0
        self.counted[cell_id] = epochs
        return epochs - before

    def epochs(self, progress: EpochProgress) -> int:
        """The epochs this report adds."""
        stopped = set(progress.stopped)
        return sum(
            self._raise(cell_id, (progress.max_epochs if cell_id in stopped else progress.epoch) - self._start(cell_id))
            for cell_id in progress.cell_ids
        )

    def cell_done(self, cell: Cell) -> int:
        """The epochs a finished cell adds: what remained of its budget."""
        return self._raise(cell.cell_id, cell.epochs - self._start(cell.cell_id))

    def _start(self, cell_id: str) -> int:
        return self.starts.get(cell_id, 0)


class LineReporter(Reporter):
    """One plain line per finished cell, for CI logs and pipes."""

    def __init__(self, console: Console) -> None:
        self.console, self.done, self.total = console, 0, 0

    def note(self, message: str) -> None:
        self.console.print(message, highlight=False, markup=False)

    def start(self, suite: Suite, total: int, skipped: int, csv_path: Path, epochs: int = 0) -> None:
        self.total = total
        skip = f", {skipped} already in the file" if skipped else ""
        self.console.print(f"{suite.name}: {total} cells to run{skip} -> {csv_path}", highlight=False)

    def extend(self, cells: int, epochs: int) -> None:
        self.total += cells

    def cell_done(self, cell: Cell, row: ResultRow) -> None:
        self.done += 1
        self.console.print(
            f"[{self.done}/{self.total}] {cell.describe()} {_outcome(row)} ({row.fit_seconds:.2f} s)",
            highlight=False,
            markup=False,
        )


class ProgressReporter(Reporter):
    """A live bar of training epochs (see the module docstring) with the cells done, elapsed time, ETA and the
    cell that just finished."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[cells]} cells"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[last]}", markup=False),
            console=console,
            transient=True,
        )
        self.bar: TaskID | None = None  # the bar's task, from start()
        self.tally = EpochTally()
        self.done, self.total = 0, 0

    def note(self, message: str) -> None:
        self.progress.console.print(message, highlight=False, markup=False)

    def start(self, suite: Suite, total: int, skipped: int, csv_path: Path, epochs: int = 0) -> None:
        self.total = total
        self.progress.start()
        self.bar = self.progress.add_task(suite.name, total=epochs, cells=f"0/{total}", last="")
        if skipped:
            self.progress.console.print(f"{skipped} cells already in {csv_path}: skipped")

    def _bar(self) -> TaskID:
        if self.bar is None:
            raise RuntimeError("ProgressReporter: start() was not called")
        return self.bar

    def epochs_done(self, progress: EpochProgress) -> None:
        self.progress.update(self._bar(), advance=self.tally.epochs(progress))

    def extend(self, cells: int, epochs: int) -> None:
        self.total += cells
        bar = self._bar()
        total = next(task.total or 0 for task in self.progress.tasks if task.id == bar)
        self.progress.update(bar, total=total + epochs, cells=f"{self.done}/{self.total}")

    def resumes(self, starts: Mapping[str, int]) -> None:
        self.tally.starts.update(starts)

    def cell_done(self, cell: Cell, row: ResultRow) -> None:
        self.done += 1
        advance = self.tally.cell_done(cell)
        self.progress.update(self._bar(), advance=advance, cells=f"{self.done}/{self.total}", last=cell.describe())
        if row.status != "ok":
            self.progress.console.print(f"[red]{cell.describe()}: {_outcome(row)}[/red]", highlight=False)

    def finish(self, summary: RunSummary) -> None:
        self.progress.stop()


class JsonLineReporter(Reporter):
    """One JSON object per line on stderr: each finished cell (its whole row), notes, and the end: a `problem`
    per failed or diverged cell, then `finish` (also after an interrupt). With `progress` off (-q), only the end.
    Every line of the stream is JSON; the command adds an `interrupted` object when a run was stopped."""

    def __init__(self, stream: TextIO, progress: bool = True) -> None:
        self.stream, self.progress = stream, progress

    def _emit(self, record: dict) -> None:
        self.stream.write(json.dumps(record, default=str, allow_nan=False) + "\n")
        self.stream.flush()

    def note(self, message: str) -> None:
        if self.progress:
            self._emit({"event": "note", "message": message})

    def start(self, suite: Suite, total: int, skipped: int, csv_path: Path, epochs: int = 0) -> None:
        if self.progress:
            self._emit(
                {"event": "start", "suite": suite.name, "cells": total, "skipped": skipped, "csv": str(csv_path)}
            )

    def cell_done(self, cell: Cell, row: ResultRow) -> None:
        if self.progress:
            fields = {k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(row).items()}
            self._emit({"event": "cell", **fields})

    def finish(self, summary: RunSummary) -> None:
        for problem in summary.problems:
            self._emit({"event": "problem", **asdict(problem)})
        self._emit(
            {
                "event": "finish",
                "counts": dict(summary.counts),
                "seconds": summary.seconds,
                "csv": str(summary.csv_path),
                "cells": summary.total,
                "skipped": summary.skipped,
                "grid": summary.grid,
                "shard": summary.shard,
            }
        )


def make_reporter(quiet: bool, log_format: str = "text") -> Reporter:
    """JSON: JSON lines (quiet: only the end). Text: nothing when quiet; a live bar on a terminal, else one line
    per cell."""
    if log_format == "json":
        return JsonLineReporter(sys.stderr, progress=not quiet)
    if quiet:
        return Reporter()
    console = stderr_console()
    return ProgressReporter(console) if console.is_terminal else LineReporter(console)


def run_tally(summary: RunSummary) -> str:
    """The run's last line: '8 ok (4 already done) in 3.1 s -> r.csv', or why there was nothing to run."""
    if summary.total == 0:
        where = f"shard {summary.shard} holds none of the grid's {summary.grid} cells" if summary.shard else "no cells"
        return f"{where}: nothing to run -> {summary.csv_path} (header only)"
    counts = ", ".join(f"{n} {status}" for status, n in sorted(summary.counts.items())) or "nothing to run"
    skipped = f" ({summary.skipped} already done)" if summary.skipped else ""
    return f"{counts}{skipped} in {summary.seconds:.1f} s -> {summary.csv_path}"


def print_run_end(summary: RunSummary, log_format: str) -> None:
    """On stderr, each failed or diverged cell and the tally; with JSON lines the reporter has said both."""
    if log_format == "json":
        return
    console = stderr_console()  # soft_wrap: one line each however long the path, for logs and greps
    for problem in summary.problems:
        console.print(str(problem), style="red", highlight=False, markup=False, soft_wrap=True)
    console.print(run_tally(summary), highlight=False, markup=False, soft_wrap=True)


def print_stopped(signal_name: str, csv_path: Path, resume: str, log_format: str) -> None:
    """One line on stderr for a run stopped by Ctrl-C or SIGTERM: where its cells are, how to go on."""
    if log_format == "json":
        line = json.dumps({"event": "interrupted", "signal": signal_name, "csv": str(csv_path), "resume": resume})
    else:
        line = f"dropbench: interrupted ({signal_name}): the finished cells are in {csv_path}; to resume: {resume}"
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def print_json_error(message: str) -> None:
    """Bad input as an `error` object on stderr, where --log-format json asks every line to be JSON."""
    sys.stderr.write(json.dumps({"event": "error", "message": message}) + "\n")
    sys.stderr.flush()
