"""`run`: expand a suite, skip what the results file already holds, fit the rest, write each row."""

import platform
import shlex
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, TypedDict

from .config import Cell
from .data import data_checksums, prepare_task
from .devices import describe
from .errors import UserError, stop_signal
from .executors import LocalExecutor, PoolExecutor, make_executor
from .files import check_output, prepare_output, run_lock

if TYPE_CHECKING:
    from .ray_executor import RayExecutor
from .planning import Shard, shard_cells
from .provenance import command_line, git_commit, machine, package_version, utc_now, utc_stamp, versions
from .results import NO_TRIAL, SCHEMA_VERSION, ResultRow, ResultStore, stored_text
from .suite import Suite
from .train import CellResult, EpochProgress

RESULTS_DIR = Path("results")


@dataclass(frozen=True)
class Problem:
    """A cell written as failed or diverged, named again at the end of the run."""

    cell_id: str
    cell: str  # as Cell.describe() reads
    status: str
    error: str

    def __str__(self) -> str:
        return f"{self.cell}: {self.status}: {self.error}"


@dataclass
class RunSummary:
    csv_path: Path
    total: int  # this run's cells (its shard's), done before or now
    skipped: int
    counts: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)  # one per failed or diverged cell
    grid: int = 0  # cells of the whole grid, every shard together
    shard: str | None = None  # "I/N" when the run was one shard

    @property
    def failed(self) -> int:
        return self.counts["failed"] + self.counts["diverged"]


class Reporter:
    """What a run tells the user as it goes; the base class tells nothing."""

    def note(self, message: str) -> None:
        """A line about work outside the cells (a download, say)."""

    def start(self, suite: Suite, total: int, skipped: int, csv_path: Path, epochs: int = 0) -> None:
        """Before the first cell: `total` cells to run, with `epochs` training epochs at most among them."""

    def epochs_done(self, progress: EpochProgress) -> None:
        """Epochs that ended in a cell or stack still training (the local executors report them; Ray does not)."""

    def cell_done(self, cell: Cell, row: ResultRow) -> None: ...

    def finish(self, summary: RunSummary) -> None:
        """Called once at the end, also when the run was interrupted."""


def default_out_path(suite_name: str) -> Path:
    return RESULTS_DIR / f"{suite_name}-{utc_stamp()}.csv"


def _gap(train: float, test: float) -> float:
    return train - test


class Provenance(TypedDict):
    """The columns of ResultRow that say where and with what a cell ran (one value for the whole run)."""

    device: str
    threads: int
    host: str
    cpu: str
    dropbench_version: str
    torch_version: str
    sklearn_version: str
    python_version: str
    git_commit: str


def make_row(cell: Cell, result: CellResult, started_at: str, provenance: Provenance) -> ResultRow:
    task, reg = cell.task, cell.regularizer
    return ResultRow(
        cell_id=cell.cell_id,
        suite=cell.suite,
        task=task.name,
        model=task.model.label,
        regularizer=reg.name,
        strength=reg.strength_label,
        keep_rate=cell.mean_keep_rate,
        layer_keep_rates=cell.keep_label,
        input_keep_rate=cell.input_keep_rate,
        dropout=cell.dropout,
        train_size=cell.train_size,
        seed=cell.seed,
        method=cell.method,
        phase=cell.phase,
        trial=NO_TRIAL if cell.trial is None else cell.trial,
        max_epochs=task.epochs,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        batch_size=task.batch_size,
        optimizer=task.optimizer.label,
        lr=task.optimizer.lr,
        momentum=task.optimizer.momentum_value,
        precision=cell.precision,
        setup_id=cell.setup_id,
        train_loss=result.train_loss,
        train_acc=result.train_acc,
        val_loss=result.val_loss,
        val_acc=result.val_acc,
        test_loss=result.test_loss,
        test_acc=result.test_acc,
        gap_acc=_gap(result.train_acc, result.test_acc),
        gap_loss=_gap(result.test_loss, result.train_loss),
        test_ece=result.test_ece,
        mc_samples=cell.mc_samples,
        test_acc_mc=result.test_acc_mc,
        test_loss_mc=result.test_loss_mc,
        test_ece_mc=result.test_ece_mc,
        fit_seconds=result.fit_seconds,
        n_params=result.n_params,
        status=result.status,
        error=result.error,
        started_at=started_at,
        **provenance,
    )


def _metadata(store: ResultStore, suite: Suite, executor_name: str, command: str, shard: Shard | None) -> dict:
    """The JSON sidecar: one entry per invocation that wrote into this file (resumes append)."""
    meta = store.read_metadata()
    runs = meta.get("runs", [])
    runs.append(
        {
            "command": command,
            "started_at": utc_now(),
            "executor": executor_name,
            "shard": f"{shard.index}/{shard.count}" if shard else None,
            "versions": versions(),
            "git_commit": git_commit(),
            "machine": machine(),
        }
    )
    return {
        **({"merged_from": meta["merged_from"]} if "merged_from" in meta else {}),  # a merged file's record stays
        "csv": store.csv_path.name,
        "schema_version": SCHEMA_VERSION,
        "suite": suite.describe(),
        "data_files": {task.name: data_checksums(task.name) for task in suite.tasks},
        "runs": runs,
    }


# The row's training-setup columns, named in a refusal; setup_id catches whatever has no column of its own.
SETUP_COLUMNS = ("model", "optimizer", "lr", "momentum", "batch_size", "max_epochs", "precision", "mc_samples")


def setup_values(cell: Cell) -> dict[str, str]:
    """The cell's SETUP_COLUMNS as reading its CSV row gives them back."""
    task = cell.task
    values = {
        "model": task.model.label,
        "optimizer": task.optimizer.label,
        "lr": task.optimizer.lr,
        "momentum": task.optimizer.momentum_value,
        "batch_size": task.batch_size,
        "max_epochs": task.epochs,
        "precision": cell.precision,
        "mc_samples": cell.mc_samples,
    }
    return {column: stored_text(value) for column, value in values.items()}


def setup_conflict(written: Iterable[dict[str, str]], cells: list[Cell]) -> str | None:
    """Why these cells may not join a file holding `written` rows: a task trained with other settings there
    (one file, one setup per task, so reports never pool or pair different trainings); None when they may."""
    ours = {cell.task.name: cell for cell in cells}
    for row in written:
        cell = ours.get(row["task"])
        if cell is None or row.get("setup_id") == cell.setup_id:
            continue
        mine = setup_values(cell)
        for column in SETUP_COLUMNS:
            if row.get(column) != mine[column]:
                return (
                    f"its {row['task']} cells were trained with {column} = {row.get(column) or 'none'}, "
                    f"this run asks {column} = {mine[column] or 'none'}"
                )
        return f"its {row['task']} cells were trained with another setup (setup_id {row.get('setup_id')})"
    return None


@dataclass
class Plan:
    """What a run into `csv_path` will do: this shard's cells, those already written, those to run."""

    csv_path: Path
    cells: list[Cell]
    written: dict[str, dict[str, str]]  # cell_id -> row, for this shard's cells already in the file
    todo: list[Cell]
    rerun: set[str]  # cells written as failed or diverged that --rerun-failed runs again
    grid: int = 0  # cells of the whole grid, every shard together


def plan_run(suite: Suite, csv_path: Path, *, shard: Shard | None = None, rerun_failed: bool = False) -> Plan:
    """Expand the grid, keep this shard's part, and subtract what the file already holds."""
    check_output(csv_path)
    store = ResultStore(csv_path)
    store.check_ours()
    written = store.written()
    others = sorted({row["suite"] for row in written.values()} - {suite.name})
    if others:
        raise UserError(
            f"{csv_path}: holds results of suite '{others[0]}', not '{suite.name}'; write to another --out, "
            "or pass --fresh to set the old file aside"
        )
    grid = suite.cells()
    conflict = setup_conflict(written.values(), grid)
    if conflict:
        raise UserError(f"{csv_path}: {conflict}; write to another --out, or pass --fresh to set the old file aside")
    cells = shard_cells(grid, shard)
    ours = {cell.cell_id for cell in cells}
    written = {cell_id: row for cell_id, row in written.items() if cell_id in ours}
    rerun = {cell_id for cell_id, row in written.items() if rerun_failed and row["status"] != "ok"}
    todo = [cell for cell in cells if cell.cell_id not in written or cell.cell_id in rerun]
    return Plan(csv_path, cells, written, todo, rerun, len(grid))


def resume_command(args: list[str], csv_path: Path) -> str:
    """The command line that continues an interrupted `run` with these arguments: the same, writing into the
    same file (--out added where the default path was used) and without --fresh, which would set it aside."""
    kept = [arg for arg in args if arg != "--fresh"]
    if not any(arg == "--out" or arg.startswith("--out=") for arg in kept):
        kept += ["--out", str(csv_path)]
    return shlex.join(["dropbench", *kept])


def _provenance(executor: "LocalExecutor | PoolExecutor | RayExecutor") -> Provenance:
    import torch

    found = machine()
    return {
        "device": describe(getattr(executor, "device", "cpu")),
        "threads": executor.threads,
        "host": found["host"],
        "cpu": found["cpu"],
        "dropbench_version": package_version("dropbench"),
        "torch_version": torch.__version__,
        "sklearn_version": package_version("scikit-learn"),
        "python_version": platform.python_version(),
        "git_commit": git_commit(),
    }


def run_suite(
    suite: Suite,
    out: str | Path | None = None,
    *,
    reporter: Reporter | None = None,
    executor: "LocalExecutor | PoolExecutor | RayExecutor | None" = None,
    shard: Shard | None = None,
    rerun_failed: bool = False,
    fresh: bool = False,
    on_row: Callable[[ResultRow], None] | None = None,
    command: str | None = None,
) -> RunSummary:
    """Run every cell of `suite` (of its `shard`) not yet in `out`, appending one row per cell.

    `fresh` first moves an existing file aside (never deletes it); `rerun_failed` retries cells written
    as failed or diverged, replacing their rows. Returns the tally.
    """
    reporter = reporter or Reporter()
    executor = executor or make_executor()
    csv_path = Path(out) if out else default_out_path(suite.name)
    prepare_output(csv_path)
    with run_lock(csv_path):  # a second run into the same file would run every cell again
        store = ResultStore(csv_path)
        # Nothing is written, moved or overwritten unless every file there is dropbench's own.
        store.check_ours(any_version=fresh)
        if fresh and (moved := store.set_aside()) is not None:
            reporter.note(f"moved the earlier results aside to {moved}")

        for task in suite.tasks:
            prepare_task(task.name, log=reporter.note)
        plan = plan_run(suite, csv_path, shard=shard, rerun_failed=rerun_failed)
        if plan.rerun:
            store.forget(plan.rerun)
        store.drop_orphan_epochs(set(store.written()))
        metadata = _metadata(store, suite, executor.name, command or command_line(), shard)
        store.write_metadata(metadata)
        provenance = _provenance(executor)
        summary = RunSummary(
            csv_path=csv_path,
            total=len(plan.cells),
            skipped=len(plan.cells) - len(plan.todo),
            grid=plan.grid,
            shard=f"{shard.index}/{shard.count}" if shard else None,
        )
        if not plan.todo and not csv_path.exists():
            # An empty shard (more shards than cells, a normal event in a CI matrix) still leaves its file, header
            # only, for `merge` to find; a run with cells to do writes the header with its first row.
            store.rows.append([])
        reporter.start(suite, len(plan.todo), summary.skipped, csv_path, sum(cell.task.epochs for cell in plan.todo))
        # Epochs are sent from workers only to a reporter that shows them (the live bar), not to the quiet one.
        on_epoch = reporter.epochs_done if type(reporter).epochs_done is not Reporter.epochs_done else None
        started, completed, stopped_by = perf_counter(), False, None
        try:
            for cell, result, started_at in executor.run(plan.todo, on_epoch=on_epoch):
                row = make_row(cell, result, started_at, provenance)
                curves = [{"cell_id": cell.cell_id, **asdict(point)} for point in result.curves]
                store.append(row, curves)
                summary.counts[row.status] += 1
                if row.status != "ok":
                    summary.problems.append(Problem(cell.cell_id, cell.describe(), row.status, row.error))
                reporter.cell_done(cell, row)
                if on_row is not None:
                    on_row(row)
            completed = True
        except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (errors.Terminated): the caller says what to rerun
            stopped_by = stop_signal(stop)
            raise
        finally:
            summary.seconds = perf_counter() - started
            metadata["runs"][-1].update(
                finished_at=utc_now(), completed=completed, cells=dict(summary.counts), seconds=summary.seconds
            )
            if stopped_by:
                metadata["runs"][-1]["stopped_by"] = stopped_by
            # After a failure (a full disk, say) a metadata write that fails too must not hide the first error.
            with nullcontext() if completed else suppress(UserError):
                store.write_metadata(metadata)
            reporter.finish(summary)  # also on Ctrl-C, so a live progress bar is torn down cleanly
    return summary
