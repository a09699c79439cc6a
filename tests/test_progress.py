"""Progress: epochs reach the reporter as they end, from a stack in this process and from pool workers, and the
bar counts each cell's epoch budget exactly once; line and JSON logs stay one record per cell."""

import io
import json
from pathlib import Path

import pytest
from conftest import make_cell
from rich.console import Console

from dropbench.executors import LocalExecutor, PoolExecutor
from dropbench.progress import EpochTally, JsonLineReporter, LineReporter, ProgressReporter
from dropbench.runner import Reporter, run_suite
from dropbench.suite import load_suite
from dropbench.train import EpochProgress

# 2 keep rates x 2 regularizers x 2 seeds, 6 epochs: 8 stackable cells, of which some stop early.
SUITE = """
name = "progress"
seeds = 2
keep_rates = [0.5, 1.0]
regularizers = ["none", "early-stopping"]
epochs = 6
model = { kind = "mlp", hidden = [64] }
optimizer = { name = "sgd", lr = 0.1, momentum = 0.9 }

[regularizer.early-stopping]
strength = 1

[[task]]
name = "synthetic"
"""


@pytest.fixture
def suite(tmp_path):
    path = tmp_path / "progress.toml"
    path.write_text(SUITE)
    return load_suite(str(path))


class Recorder(Reporter):
    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.tally = EpochTally()

    def start(self, suite, total, skipped, csv_path, epochs=0):
        self.events.append(("start", total, epochs))

    def epochs_done(self, progress):
        self.events.append(("epochs", progress, self.tally.epochs(progress)))

    def cell_done(self, cell, row):
        self.events.append(("cell", cell.cell_id, self.tally.cell_done(cell), row.epochs_run))


def check_events(events: list[tuple], cells: int, epochs: int) -> None:
    """Every cell's epochs are reported before its row; the tally ends at the planned epochs exactly."""
    assert events[0] == ("start", cells, cells * epochs)
    rows = [e for e in events if e[0] == "cell"]
    assert len(rows) == cells
    for position, event in enumerate(events):
        if event[0] == "cell":
            _, cell_id, _, epochs_run = event
            reported = [e[1].epoch for e in events[:position] if e[0] == "epochs" and cell_id in e[1].cell_ids]
            assert reported == list(range(1, epochs_run + 1))  # each epoch it trained, before its row
    assert sum(e[2] for e in events[1:]) == cells * epochs
    assert all(e[2] == 0 for e in rows if e[3] < epochs)  # a stopped cell was credited when it stopped


def test_epochs_of_a_stack_reach_the_reporter_before_its_cells_finish(suite, tmp_path):
    reporter = Recorder()
    summary = run_suite(suite, tmp_path / "r.csv", reporter=reporter, executor=LocalExecutor(threads=1))
    events = reporter.events
    assert summary.counts["ok"] == 8
    first_row = next(i for i, e in enumerate(events) if e[0] == "cell")
    assert [e[1].epoch for e in events[1:first_row]] == list(range(1, 7))  # one stack of 8: epoch by epoch
    stopped = {cell_id for e in events if e[0] == "epochs" for cell_id in e[1].stopped if e[1].epoch < 6}
    assert stopped  # early stopping took members out of the stack, and said so when it happened
    check_events(events, 8, 6)


@pytest.mark.slow
def test_epochs_reach_the_driver_from_pool_workers(suite, tmp_path):
    reporter = Recorder()
    run_suite(suite, tmp_path / "r.csv", reporter=reporter, executor=PoolExecutor(jobs=2, threads=1))
    check_events(reporter.events, 8, 6)
    senders = {e[1].cell_ids for e in reporter.events if e[0] == "epochs" and e[1].epoch == 1}
    assert len(senders) == 2  # two stacks of four, one per worker


def test_the_tally_counts_a_cell_once_whatever_repeats_or_comes_late():
    tally = EpochTally()
    cell = make_cell("wine", epochs=10)
    other = make_cell("wine", epochs=10, seed=1)
    ids = (cell.cell_id, other.cell_id)
    assert tally.epochs(EpochProgress(1, 10, ids)) == 2
    assert tally.epochs(EpochProgress(2, 10, ids, stopped=(cell.cell_id,))) == 10 - 1 + 1  # the rest of its budget
    assert tally.epochs(EpochProgress(1, 10, (cell.cell_id,))) == 0  # a retry starting over counts nothing
    assert tally.cell_done(cell) == 0
    assert tally.cell_done(other) == 8  # a cell whose epochs were never reported (Ray) counts when it ends
    assert tally.epochs(EpochProgress(3, 10, (other.cell_id,))) == 0  # late


def test_the_bar_counts_epochs_and_shows_the_cells_done():
    reporter = ProgressReporter(Console(file=io.StringIO(), force_terminal=True, width=120))
    cells = [make_cell("wine", epochs=5, seed=seed) for seed in range(2)]
    reporter.start(load_suite("quick"), 2, 0, Path("r.csv"), epochs=10)
    bar = reporter.progress.tasks[0]
    assert (bar.total, bar.completed, bar.fields["cells"]) == (10, 0, "0/2")
    reporter.epochs_done(EpochProgress(1, 5, tuple(c.cell_id for c in cells)))
    reporter.epochs_done(EpochProgress(2, 5, tuple(c.cell_id for c in cells), stopped=(cells[0].cell_id,)))
    assert bar.completed == 5 + 2
    reporter.cell_done(cells[0], row_for(cells[0]))
    assert (bar.completed, bar.fields["cells"]) == (7, "1/2")
    reporter.cell_done(cells[1], row_for(cells[1]))
    assert (bar.completed, bar.fields["cells"]) == (10, "2/2")
    reporter.progress.stop()


def test_the_bar_grows_by_each_later_rung_and_counts_only_the_epochs_after_a_checkpoint():
    """A halving run's later rung: 2 cells continuing from checkpoints after 4 of their 10 epochs add 12 epochs;
    their epochs 5..10 count, from 1 each, and a cell that stops counts what was left after its checkpoint."""
    from dataclasses import replace

    reporter = ProgressReporter(Console(file=io.StringIO(), force_terminal=True, width=120))
    reporter.start(load_suite("quick"), 2, 0, Path("r.csv"), epochs=8)
    bar = reporter.progress.tasks[0]
    cells = [replace(make_cell("wine", epochs=12, seed=seed), epoch_limit=10) for seed in range(2)]
    reporter.extend(2, 12)
    reporter.resumes({c.cell_id: 4 for c in cells})
    assert (bar.total, bar.fields["cells"]) == (20, "0/4")
    reporter.epochs_done(EpochProgress(5, 10, tuple(c.cell_id for c in cells)))
    assert bar.completed == 2
    reporter.epochs_done(EpochProgress(6, 10, (cells[0].cell_id,), stopped=(cells[0].cell_id,)))
    assert bar.completed == 2 + 5  # its epochs 6 to 10: the rest of its budget after the checkpoint
    reporter.cell_done(cells[1], row_for(cells[1]))  # never reported further (Ray): counted when it ends
    assert bar.completed == 7 + 5
    reporter.progress.stop()


@pytest.mark.parametrize("kind", ["line", "json"])
def test_logs_stay_one_record_per_cell(kind):
    stream = io.StringIO()
    reporter = JsonLineReporter(stream) if kind == "json" else LineReporter(Console(file=stream, width=200))
    cell = make_cell("wine", epochs=5)
    reporter.start(load_suite("quick"), 1, 0, Path("r.csv"), epochs=5)
    for epoch in range(1, 6):
        reporter.epochs_done(EpochProgress(epoch, 5, (cell.cell_id,)))
    reporter.cell_done(cell, row_for(cell))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2  # the start and the cell
    if kind == "json":
        assert [json.loads(line)["event"] for line in lines] == ["start", "cell"]


def row_for(cell):
    from dropbench.runner import make_row
    from dropbench.train import CellResult

    result = CellResult(status="ok", epochs_run=cell.task.epochs, test_acc=0.9, train_acc=1.0, fit_seconds=0.1)
    return make_row(
        cell,
        result,
        "2026-01-01T00:00:00Z",
        {
            "device": "cpu",
            "threads": 1,
            "host": "h",
            "cpu": "c",
            "dropbench_version": "0",
            "torch_version": "0",
            "sklearn_version": "0",
            "python_version": "3",
            "git_commit": "x",
        },
    )
