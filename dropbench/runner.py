"""`run`: expand a suite, skip what the results file already holds, fit the rest, write each row."""

import os
import platform
import shlex
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from time import perf_counter
from typing import TYPE_CHECKING, TypedDict

from .checkpoints import CheckpointStore, Start, check_folder
from .config import Cell
from .data import data_checksums, prepare_task
from .devices import describe
from .errors import UserError, stop_signal
from .executors import LocalExecutor, PoolExecutor, fixed_threads, make_executor
from .files import check_output, prepare_output, run_lock

if TYPE_CHECKING:
    from .ray_executor import RayExecutor
from .planning import Shard, shard_cells
from .provenance import command_line, git_commit, machine, package_version, utc_now, utc_stamp, versions
from .results import NO_TRIAL, SCHEMA_VERSION, ResultRow, ResultStore, stored_text
from .suite import Suite
from .threads import CBWR_ENV, Threads, cbwr_auto_branch, cbwr_in_effect
from .train import CellResult, EpochProgress
from .tuning import (
    EVAL,
    TUNE,
    HalvingOutlook,
    HalvingState,
    cell_count,
    describe_setting,
    eval_cells,
    halving_cells,
    halving_outlook,
    rung_setup_cells,
    suite_trials,
)
from .upgrade import suite_fill, upgrade_files

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

    def extend(self, cells: int, epochs: int) -> None:
        """More to run than `start` said: a halving run's next rung (`cells` cells training `epochs` epochs), known
        once the rung before is written."""

    def resumes(self, starts: Mapping[str, int]) -> None:
        """Cells (cell_id -> epochs) about to continue from a checkpoint after that many epochs: only the epochs
        after it are trained, and `epochs_done` reports them by their number in the whole training."""

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
        max_epochs=cell.epochs,
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
        **provenance_of(result, provenance),
    )


def provenance_of(result: CellResult, provenance: Provenance) -> Provenance:
    """The run's provenance, with the most threads the cell trained with where its executor records it (under
    --threads auto it varies from cell to cell)."""
    found = provenance.copy()
    found["threads"] = result.threads or provenance["threads"]
    return found


def _metadata(
    store: ResultStore,
    suite: Suite,
    executor: "LocalExecutor | PoolExecutor | RayExecutor",
    command: str,
    shard: Shard | None,
) -> dict:
    """The JSON sidecar: one entry per invocation that wrote into this file (resumes append)."""
    meta = store.read_metadata()
    runs = meta.get("runs", [])
    runs.append(
        {
            "command": command,
            "started_at": utc_now(),
            "executor": executor.name,
            "shard": f"{shard.index}/{shard.count}" if shard else None,
            **threads_record(executor),
            "versions": versions(),
            "git_commit": git_commit(),
            "machine": machine(),
        }
    )
    plugins = plugin_sources(suite)
    return {
        # A merged or upgraded file's record stays.
        **{key: meta[key] for key in ("merged_from", "upgraded_from") if key in meta},
        "csv": store.csv_path.name,
        "schema_version": SCHEMA_VERSION,
        "suite": suite.describe(),
        # Earlier runs' tasks stay (a run of some tasks only forgets no file): `plan_run` compares them.
        "data_files": {**meta.get("data_files", {}), **{task.name: data_checksums(task.key) for task in suite.tasks}},
        **({"plugins": plugins} if plugins else {}),
        "runs": runs,
    }


def plugin_sources(suite: Suite) -> dict[str, dict[str, str]]:
    """The tasks, model kinds and regularizers of the suite that are not dropbench's own, each with where it came
    from (a distribution and its version, or the module:object reference), for the run's provenance."""
    from .data.openml import parse_openml_name
    from .data.registry import REGISTRY as TASKS
    from .models import REGISTRY as MODELS
    from .plugins import Registry
    from .regularizers import REGISTRY as REGULARIZERS

    cells = suite.cells()
    used: dict[str, tuple[Registry, set[str]]] = {
        "tasks": (TASKS, {t.name for t in suite.tasks if t.data is None and parse_openml_name(t.name) is None}),
        "models": (MODELS, {t.model.kind for t in suite.tasks}),
        "regularizers": (REGULARIZERS, {name for cell in cells for name, _ in cell.regularizer.parts}),
    }
    found: dict[str, dict[str, str]] = {}
    for group, (registry, names) in used.items():
        sources = {name: registry.source(name) for name in sorted(names) if name not in registry.builtins}
        if sources:
            found[group] = sources
    return found


def data_changed(recorded: dict, written: Iterable[dict[str, str]], suite: Suite) -> str | None:
    """Why a file holding `written` rows may not be resumed: a task read from files whose files' checksums are not
    those the sidecar recorded when its rows were written (the same cells would mix two data sets); None if none.
    Moving a file changes nothing: contents are compared, not paths."""
    tasks = {row["task"] for row in written}
    for task in suite.tasks:
        before = recorded.get(task.name)
        if task.data is None or task.name not in tasks or not isinstance(before, dict) or not before:
            continue
        now = task.data.checksums()
        if sorted(before.values()) != sorted(now.values()):
            path, new = next((path, sha) for path, sha in now.items() if sha not in before.values())
            old = next((sha for sha in before.values() if sha not in now.values()), "?")
            return (
                f"the data of task '{task.name}' changed since its cells there were trained: {path} had sha256 "
                f"{old[:12]}…, now {new[:12]}…"
            )
    return None


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
        "max_epochs": cell.epochs,
        "precision": cell.precision,
        "mc_samples": cell.mc_samples,
    }
    return {column: stored_text(value) for column, value in values.items()}


def setup_conflict(written: Iterable[dict[str, str]], cells: list[Cell]) -> str | None:
    """Why these cells may not join a file holding `written` rows: a task trained with other settings there
    (one file, one setup per task, so reports never pool or pair different trainings); None when they may."""
    ours: dict[str, dict[str, Cell]] = {}  # task -> setup_id -> a cell (a tuned lr gives a task several setups)
    for cell in cells:
        ours.setdefault(cell.task.name, {}).setdefault(cell.setup_id, cell)
    for row in written:
        setups = ours.get(row["task"])
        if setups is None or row.get("setup_id") in setups:
            continue
        cell = next(iter(setups.values()))
        mine = setup_values(cell)
        for column in SETUP_COLUMNS:
            if row.get(column) != mine[column]:
                return (
                    f"its {row['task']} cells were trained with {column} = {row.get(column) or 'none'}, "
                    f"this run asks {column} = {mine[column] or 'none'}"
                )
        files = " (the setup of a task read from files includes their checksums: did a file change?)"
        return (
            f"its {row['task']} cells were trained with another setup (setup_id {row.get('setup_id')})"
            f"{files if cell.task.data is not None else ''}"
        )
    return None


@dataclass
class EvaluationPlan:
    """A tuned suite's evaluation phase as far as the file tells it: the chosen trials' cells at the evaluation
    seeds once every tune cell is written (the choice is read from the file), else trial 0's, which stand in for
    them in counts and time estimates (the choice changes neither)."""

    cells: list[Cell]
    written: dict[str, dict[str, str]]  # cell_id -> row, for these cells already in the file
    todo: list[Cell]
    rerun: set[str]  # eval cells written as failed or diverged that --rerun-failed runs again
    chosen: dict[tuple[str, str], int] | None  # (task, method) -> trial; None while tuning is not complete
    stale: set[str]  # eval rows of this grid's tasks and methods whose trial is no longer the chosen one
    unchosen: list[tuple[str, str]]  # (task, method) without an ok tune row: nothing to evaluate
    count: str  # "4 tasks × 7 methods × 5 evaluation seeds = 140 cells"
    deferred: str = ""  # why this invocation does not run it (a shard): "" when it does


@dataclass
class Plan:
    """What a run into `csv_path` will do: this shard's cells, those already written, those to run. For a tuned
    suite the cells are its tuning phase's, and `evaluation` is the phase that follows (None with evaluation
    'same', where the tuning seeds' figures are reported)."""

    csv_path: Path
    cells: list[Cell]
    written: dict[str, dict[str, str]]  # cell_id -> row, for this shard's cells already in the file
    todo: list[Cell]
    rerun: set[str]  # cells written as failed or diverged that --rerun-failed runs again
    grid: int = 0  # cells of the whole grid, every shard together
    evaluation: EvaluationPlan | None = None
    tuning_lines: list[str] = field(default_factory=list)  # the protocol in words, for a tuned suite
    halving: HalvingOutlook | None = None  # a halving suite's epochs beyond `todo`'s first rung (not in a shard)

    @property
    def total(self) -> int:
        """Cells of both phases this invocation is responsible for."""
        evaluation = self.evaluation
        return len(self.cells) + (len(evaluation.cells) if evaluation is not None and not evaluation.deferred else 0)

    @property
    def runs_evaluation(self) -> bool:
        return self.evaluation is not None and not self.evaluation.deferred


def _pending(cells: list[Cell], written: dict[str, dict[str, str]], rerun_failed: bool) -> tuple[list[Cell], set[str]]:
    """The cells still to run, and the written ones to run again (failed or diverged, with --rerun-failed)."""
    rerun = {c.cell_id for c in cells if rerun_failed and c.cell_id in written and written[c.cell_id]["status"] != "ok"}
    return [c for c in cells if c.cell_id not in written or c.cell_id in rerun], rerun


def choose_trials(suite: Suite, csv_path: Path, tune: list[Cell]) -> dict[tuple[str, str], int]:
    """Per (task, method), the trial chosen on validation figures (report.tuning.choose_on_validation) among the
    file's rows of these tune cells: rows of other trials (a changed space, say) never take part."""
    from .report.tuning import choose_on_validation
    from .results import read_results

    if suite.tuning is None:
        raise ValueError(f"suite {suite.name} has no [tuning] table")
    frame = read_results(csv_path)
    frame = frame[frame["cell_id"].isin({cell.cell_id for cell in tune})]
    if frame.empty:
        return {}
    chosen = choose_on_validation(frame, suite.tuning.metric)
    return {
        (str(row.task), str(row.method)): int(row.trial)
        for row in chosen.itertuples(index=False)
        if row.trial == row.trial
    }


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def plan_evaluation(
    suite: Suite,
    csv_path: Path,
    tune: list[Cell],
    written: dict[str, dict[str, str]],
    *,
    shard: Shard | None = None,
    rerun_failed: bool = False,
) -> EvaluationPlan | None:
    """The evaluation phase after the tune cells `tune` (the whole grid's), given the file's `written` rows."""
    tuning = suite.tuning
    if tuning is None or tuning.evaluation != "fresh":
        return None
    pairs = [(task.name, method.name) for task in suite.tasks for method in tuning.methods]
    seeds = len(tuning.evaluation_seed_list)
    count = (
        f"{_plural(len(suite.tasks), 'task')} × {_plural(len(tuning.methods), 'method')} × "
        f"{_plural(seeds, 'evaluation seed')} = {_plural(len(pairs) * seeds, 'cell')}"
    )
    deferred = ""
    if shard is not None and shard.count > 1:
        deferred = (
            f"shard {shard.index}/{shard.count} runs its share of the tune cells only; the evaluation phase "
            f"({count}) runs after `dropbench merge`: run the suite again with --out on the merged file"
        )
    chosen = None
    ready = all(cell.cell_id in written for cell in tune)
    if tuning.halving is not None:  # the choice is made on the last rung's cells, once every rung is written
        state = halving_cells(suite, written)
        ready = state.complete and all(cell.cell_id in written for cell in state.cells)
        tune = state.final
    if not deferred and ready:
        chosen = choose_trials(suite, csv_path, tune)
    cells = eval_cells(suite, chosen if chosen is not None else dict.fromkeys(pairs, 0))
    ids = {cell.cell_id for cell in cells}
    mine = {cell_id: row for cell_id, row in written.items() if cell_id in ids}
    todo, rerun = _pending(cells, mine, rerun_failed)
    stale: set[str] = set()
    if chosen is not None:
        names = set(pairs)
        stale = {
            cell_id
            for cell_id, row in written.items()
            if row.get("phase") == EVAL and (row["task"], row.get("method")) in names and cell_id not in ids
        }
    unchosen = [pair for pair in pairs if chosen is not None and pair not in chosen]
    return EvaluationPlan(cells, mine, todo, rerun, chosen, stale, unchosen, count, deferred)


def plan_run(suite: Suite, csv_path: Path, *, shard: Shard | None = None, rerun_failed: bool = False) -> Plan:
    """Expand the grid, keep this shard's part, and subtract what the file already holds; for a tuned suite, plan
    its evaluation phase too (`plan_evaluation`)."""
    check_output(csv_path)
    store = ResultStore(csv_path, suite_fill(csv_path, suite.cells, suite.name))
    store.check_ours(any_version=True)  # a file of an earlier schema is read as this one (a dry run writes nothing)
    written = store.written()
    everything = written
    others = sorted({row["suite"] for row in written.values()} - {suite.name})
    if others:
        raise UserError(
            f"{csv_path}: holds results of suite '{others[0]}', not '{suite.name}'; write to another --out, "
            "or pass --fresh to set the old file aside"
        )
    grid = suite.cells()
    conflict = data_changed(store.read_metadata().get("data_files", {}), written.values(), suite)
    conflict = conflict or setup_conflict(written.values(), grid + rung_setup_cells(suite))
    if conflict:
        raise UserError(f"{csv_path}: {conflict}; write to another --out, or pass --fresh to set the old file aside")
    cells = shard_cells(grid, shard)
    ours = {cell.cell_id for cell in cells}
    written = {cell_id: row for cell_id, row in written.items() if cell_id in ours}
    todo, rerun = _pending(cells, written, rerun_failed)
    plan = Plan(csv_path, cells, written, todo, rerun, len(grid))
    if suite.tuning is not None:
        plan.tuning_lines = suite.tuning.budget_lines()
        plan.evaluation = plan_evaluation(suite, csv_path, grid, everything, shard=shard, rerun_failed=rerun_failed)
        plan.grid += cell_count(suite) - len(grid)
        if suite.tuning.halving is not None and (shard is None or shard.count == 1):
            plan.halving = halving_outlook(suite, everything)
    return plan


def resume_command(args: list[str], csv_path: Path) -> str:
    """The command line that continues an interrupted `run` with these arguments: the same, writing into the
    same file (--out added where the default path was used) and without --fresh, which would set it aside."""
    kept = [arg for arg in args if arg != "--fresh"]
    if not any(arg == "--out" or arg.startswith("--out=") for arg in kept):
        kept += ["--out", str(csv_path)]
    return shlex.join(["dropbench", *kept])


def _threads_policy(executor: "LocalExecutor | PoolExecutor | RayExecutor") -> "Threads":
    """--threads as the executor took it: "auto" or a count per process (Ray, which has no policy: its threads)."""
    return getattr(executor, "policy", executor.threads)


def threads_record(executor: "LocalExecutor | PoolExecutor | RayExecutor") -> dict[str, object]:
    """How the run set torch threads, for its JSON: `threads`, the policy ("auto", or the count per process; Ray:
    --cpus-per-cell); MKL's reproducibility setting, `mkl_cbwr` as the environment gives it to the workers (null:
    unset), `mkl_cbwr_in_effect` as MKL in this process reads it and `mkl_cbwr_auto_branch` the code branch AUTO picks
    on this CPU (null where torch's MKL does not tell)."""
    return {
        "threads": _threads_policy(executor),
        "mkl_cbwr": os.environ.get(CBWR_ENV),
        "mkl_cbwr_in_effect": cbwr_in_effect(),
        "mkl_cbwr_auto_branch": cbwr_auto_branch(),
    }


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

    A tuned suite ([tuning]) runs in two phases: its tune cells; then, chosen per task and method on the file's
    validation figures (`choose_trials`), the chosen trials at the evaluation seeds. A resumed run rebuilds the
    same trials and reads the same choice from the file; a shard runs tune cells only (`plan_evaluation`).
    """
    reporter = reporter or Reporter()
    executor = executor or make_executor()
    csv_path = Path(out) if out else default_out_path(suite.name)
    prepare_output(csv_path)
    with run_lock(csv_path):  # a second run into the same file would run every cell again
        store = ResultStore(csv_path, suite_fill(csv_path, suite.cells, suite.name))
        # Nothing is written, moved or overwritten unless every file there is dropbench's own.
        store.check_ours(any_version=True)
        if fresh and (moved := store.set_aside()) is not None:
            reporter.note(f"moved the earlier results aside to {moved}")
        checkpoints = _checkpoint_store(suite, csv_path, executor, shard, reporter)

        for task in suite.tasks:
            prepare_task(task.key, log=reporter.note)
        plan = plan_run(suite, csv_path, shard=shard, rerun_failed=rerun_failed)
        # Only once the plan accepts the file (its suite, its setups): a refused run leaves it as it was.
        if (old := upgrade_files(store)) is not None:
            reporter.note(
                f"{csv_path}: rewritten from schema {old} to {SCHEMA_VERSION} (ids behind a letter); resuming"
            )
        if plan.rerun:
            store.forget(plan.rerun)
        store.drop_orphan_epochs(set(store.written()))
        metadata = _metadata(store, suite, executor, command or command_line(), shard)
        store.write_metadata(metadata)
        provenance = _provenance(executor)
        evaluation = plan.evaluation if plan.runs_evaluation else None
        summary = RunSummary(
            csv_path=csv_path,
            total=plan.total,
            skipped=plan.total - len(plan.todo) - (len(evaluation.todo) if evaluation else 0),
            grid=plan.grid,
            shard=f"{shard.index}/{shard.count}" if shard else None,
        )
        if not plan.todo and not csv_path.exists():
            # An empty shard (more shards than cells, a normal event in a CI matrix) still leaves its file, header
            # only, for `merge` to find; a run with cells to do writes the header with its first row.
            store.rows.append([])
        ahead = plan.todo + (evaluation.todo if evaluation else [])
        _note_tuning(reporter, plan)
        first = _starts(checkpoints, plan.todo)
        reporter.start(suite, len(ahead), summary.skipped, csv_path, _epochs_ahead(ahead, first))
        # Epochs are sent from workers only to a reporter that shows them (the live bar), not to the quiet one.
        on_epoch = reporter.epochs_done if type(reporter).epochs_done is not Reporter.epochs_done else None

        def train(cells: list[Cell], starts: dict[str, Start] | None = None) -> None:
            """Fit `cells` and write their rows; with a checkpoint store, each continues from its training's
            checkpoint where one is usable (`starts`: found already), and leaves its own for the next rung."""
            starts = _starts(checkpoints, cells) if starts is None else starts
            if starts:
                reporter.resumes({cell_id: start.epoch for cell_id, start in starts.items()})
            for cell, result, started_at in executor.run(cells, on_epoch=on_epoch, starts=starts):
                row = make_row(cell, result, started_at, provenance)
                curves = [{"cell_id": cell.cell_id, **asdict(point)} for point in result.curves]
                if checkpoints is not None and result.state is not None:  # before the row: the row marks it done
                    checkpoints.save(cell, result.state)
                store.append(row, curves)
                if checkpoints is not None and cell.phase == TUNE and not cell.continues:  # its training is over
                    checkpoints.drop([cell.training_id])
                summary.counts[row.status] += 1
                if row.status != "ok":
                    summary.problems.append(Problem(cell.cell_id, cell.describe(), row.status, row.error))
                reporter.cell_done(cell, row)
                if on_row is not None:
                    on_row(row)

        started, completed, stopped_by = perf_counter(), False, None
        try:
            train(plan.todo, first)
            tuned, ran = len(plan.cells), len(plan.todo)
            if checkpoints is not None:  # a halving suite, all of it in this run (not a shard)

                def train_rung(cells: list[Cell]) -> None:
                    starts = _starts(checkpoints, cells)
                    reporter.extend(len(cells), _epochs_ahead(cells, starts))
                    train(cells, starts)

                state, later = _halving_rungs(suite, store, summary, reporter, rerun_failed, train_rung, checkpoints)
                tuned, ran = len(state.cells), ran + later
            if evaluation is not None:
                # Planned again now that every tune cell is written: the choice is read from the file.
                evaluation = _evaluation_phase(suite, store, plan, reporter, metadata, rerun_failed)
                summary.total = tuned + len(evaluation.cells)
                summary.skipped = summary.total - ran - len(evaluation.todo)
                train(evaluation.todo)
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


def _checkpoint_store(
    suite: Suite,
    csv_path: Path,
    executor: "LocalExecutor | PoolExecutor | RayExecutor",
    shard: Shard | None,
    reporter: Reporter,
) -> CheckpointStore | None:
    """Where a halving run keeps its trainings' states between rungs (dropbench.checkpoints); None for any other
    run, and for a shard: its later rungs run after `merge`, into another file, which would never find them."""
    tuning = suite.tuning
    if tuning is None or tuning.halving is None or (shard is not None and shard.count > 1):
        return None
    check_folder(csv_path)
    # A training's numbers are those of the count given, or of one thread under auto (Ray: its --cpus-per-cell).
    threads = fixed_threads(_threads_policy(executor))
    return CheckpointStore(csv_path, executor.device, threads, reporter.note)


def _starts(checkpoints: CheckpointStore | None, cells: list[Cell]) -> dict[str, Start]:
    """cell_id -> the checkpoint each tune cell continues from, for those that have a usable one."""
    if checkpoints is None:
        return {}
    found = {cell.cell_id: checkpoints.start(cell) for cell in cells if cell.phase == TUNE}
    return {cell_id: start for cell_id, start in found.items() if start is not None}


def _epochs_ahead(cells: list[Cell], starts: Mapping[str, Start]) -> int:
    """The epochs `cells` will train at most: each its budget, less what its checkpoint holds already."""
    total = 0
    for cell in cells:
        start = starts.get(cell.cell_id)
        total += cell.epochs if start is None else 0 if start.stopped else cell.epochs - start.epoch
    return total


def _halving_rungs(
    suite: Suite,
    store: ResultStore,
    summary: RunSummary,
    reporter: Reporter,
    rerun_failed: bool,
    train: Callable[[list[Cell]], None],
    checkpoints: CheckpointStore,
) -> tuple[HalvingState, int]:
    """Run a halving suite's later rungs: each time, the cells the file's rows now determine (`halving_cells`)
    and not yet written, until every (task, method) has its last rung written. Tune rows of this grid's tasks
    and methods that no rung asks for any more (a rerun changed a rung's figures) are removed, so that the choice
    and `report --tuned` never read them. Checkpoints of trainings no rung can continue any more (a trial stopped)
    are removed as the rungs go, and the folder once the last rung is written."""
    retried: set[str] = set()
    rung, ran = 1, 0
    while True:
        written = store.written()
        state = halving_cells(suite, written)
        checkpoints.keep_only(state.needed(written))
        again = (
            {
                c.cell_id
                for c in state.cells
                if rerun_failed and c.cell_id in written and written[c.cell_id]["status"] != "ok"
            }
            - retried
            - {c.cell_id for c in suite.cells()}
        )
        todo = [c for c in state.cells if c.cell_id not in written or c.cell_id in again]
        if not todo:
            break
        if again:
            store.forget(again)
            retried |= again
        reporter.note(f"halving: {len(todo)} tune cells of later rungs to run (pass {rung})")
        summary.total += len(todo)
        train(todo)
        rung, ran = rung + 1, ran + len(todo)
    if not state.complete:  # every rung's cells are written, so the last rung's were determined: cannot happen
        raise RuntimeError("successive halving stopped before the last rung")
    checkpoints.clear()
    ids = {c.cell_id for c in state.cells}
    methods = suite.tuning.methods if suite.tuning is not None else ()
    names = {(task.name, method.name) for task in suite.tasks for method in methods}
    stale = {
        cell_id
        for cell_id, row in store.written().items()
        if row.get("phase") == TUNE and (row["task"], row.get("method")) in names and cell_id not in ids
    }
    if stale:
        reporter.note(f"halving: removed {len(stale)} tune rows no rung asks for any more (their rung changed)")
        store.forget(stale)
    return state, ran


def _note_tuning(reporter: Reporter, plan: Plan) -> None:
    """A tuned run's protocol in a few lines before its first cell: trials per method, and the phase after."""
    if not plan.tuning_lines:
        return
    for line in plan.tuning_lines:
        reporter.note(f"tuning: {line}")
    todo = f", {len(plan.todo)} to run" if len(plan.todo) != len(plan.cells) else ""
    reporter.note(f"tuning phase: {len(plan.cells)} tune cells{todo}")
    if plan.evaluation is None:
        reporter.note("evaluation 'same': the tuning seeds' figures of each chosen trial are reported")
    elif plan.evaluation.deferred:
        reporter.note(plan.evaluation.deferred)
    else:
        reporter.note(f"then the evaluation phase: {plan.evaluation.count}, of the trials chosen on validation")


def _evaluation_phase(
    suite: Suite, store: ResultStore, plan: Plan, reporter: Reporter, metadata: dict, rerun_failed: bool
) -> EvaluationPlan:
    """Choose on the file's tune rows, say what was chosen, clear eval rows the choice no longer covers."""
    evaluation = plan_evaluation(suite, store.csv_path, suite.cells(), store.written(), rerun_failed=rerun_failed)
    if evaluation is None or evaluation.chosen is None:  # every tune cell was just written: it cannot be
        raise RuntimeError("the evaluation phase was planned before every tune cell was written")
    choices = []
    for task in suite.tasks:
        for method in suite.tuning.methods if suite.tuning else ():
            trial = evaluation.chosen.get((task.name, method.name))
            if trial is None:
                reporter.note(f"chosen: {task.name} {method.name}: no trial with an ok tune cell, nothing to evaluate")
                continue
            setting = suite_trials(suite, task.name, method)[trial]
            choices.append({"task": task.name, "method": method.name, "trial": trial, "setting": setting})
            reporter.note(f"chosen: {task.name} {method.name}: trial {trial} ({describe_setting(setting)})")
    metadata["runs"][-1]["tuning_choices"] = choices
    store.write_metadata(metadata)
    if evaluation.stale:
        reporter.note(f"removed {len(evaluation.stale)} eval rows of trials no longer chosen (their tune rows changed)")
        store.forget(evaluation.stale)
    if evaluation.rerun:
        store.forget(evaluation.rerun)
    todo = f", {len(evaluation.todo)} to run" if len(evaluation.todo) != len(evaluation.cells) else ""
    reporter.note(f"evaluation phase: {len(evaluation.cells)} eval cells{todo}")
    return evaluation
