"""`dropbench.run`: train a suite and get its results as a DataFrame, where researchers work: a script with or
without an `if __name__ == "__main__":` guard, `python -` reading from stdin, a Jupyter notebook.

What makes that work lives in the executors: worker processes are spawned without the caller's `__main__`
(executors.SPAWN), so they never run the caller's code again; a process that cannot start workers trains in
itself. What is left here: the call's arguments as the command line's flags, a temporary results file when none
is given, and failures raised instead of returned as NaN figures.
"""

import multiprocessing
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .overrides import SetOverride, parse_seeds, resolve_suite

if TYPE_CHECKING:
    import pandas as pd

    from .executors import LocalExecutor, PoolExecutor
    from .ray_executor import RayExecutor
    from .runner import RunSummary
    from .suite import Overrides, Suite
    from .threads import Threads

    Executor = LocalExecutor | PoolExecutor | RayExecutor

# How a refusal names each grid argument (overrides.refuse_flag_clashes), as this function takes them.
API_FLAGS = {
    "keep_rates": "keep_rates=",
    "input_keep_rates": "input_keep_rates=",
    "regularizers": "regularizers=",
    "seeds": "seeds=",
    "epochs": "epochs=",
    "dropouts": "dropouts=",
    "train_sizes": "train_sizes=",
    "mc_samples": "mc_samples=",
}


class RunFailed(RuntimeError):
    """No cell of a run ended ok (every one failed or diverged), so there is no figure to summarize. The message
    names the first failed cell and its error; `results` holds every row, each with its `status` and `error`."""

    def __init__(self, message: str, results: "pd.DataFrame") -> None:
        super().__init__(message)
        self.results = results


class CellsFailedWarning(UserWarning):
    """Some cells of a run failed or diverged: their rows are in the results with `status` and `error`, and the
    summaries leave them out."""


def run(
    suite: "str | Path | Suite" = "quick",
    *,
    out: str | Path | None = None,
    tasks: str | Sequence[str] | None = None,
    regularizers: str | Sequence[str] | None = None,
    keep_rates: float | Sequence[float] | None = None,
    input_keep_rates: float | Sequence[float] | None = None,
    dropouts: str | Sequence[str] | None = None,
    train_sizes: int | Sequence[int] | None = None,
    epochs: int | None = None,
    seeds: int | str | Sequence[int] | None = None,
    mc_samples: int | None = None,
    precision: str | None = None,
    set: Mapping[str, object] | None = None,  # the name of `dropbench run --set`
    jobs: int | None = None,
    threads: "Threads | None" = None,
    device: str = "cpu",
    stack: bool = True,
    executor: "str | Executor" = "local",
    rerun_failed: bool = False,
    fresh: bool = False,
    quiet: bool = True,
) -> "pd.DataFrame":
    """Run a suite (a bundled name, a TOML path, or a loaded `Suite`) and return its results: one row per cell.

    The arguments are `dropbench run`'s flags: `tasks`, `regularizers`, `keep_rates`, `input_keep_rates`,
    `dropouts`, `train_sizes`, `epochs`, `mc_samples`, `precision`; `seeds` a count (5: seeds 0..4), a list
    ([0, 3, 7]) or a spec ("10..19", both ends included); `set` any suite key ({"optimizer.lr": 0.05,
    "model.hidden": [512, 512], "task.digits.epochs": 5}), checked as the file is. A flag and a `set` of the same
    key are refused.

    `out`: the results CSV, resumed when it exists (only cells it lacks are trained) and kept; None trains into a
    temporary folder, removed afterwards. `jobs`: worker processes (default one per core; 1 trains in this
    process, where a debugger can follow); `threads`: torch threads per process, "auto" by default (the cores shared
    among the cells in flight; figures do not depend on it) or a fixed number; `executor`: "local", "ray", or an
    executor object. `quiet=False` prints progress on stderr.

    The frame has the CSV's columns (README, "The CSV"): identity (`cell_id`, `task`, `regularizer`, `strength`,
    `keep_rate`, `seed`, ...), budget, figures (`train_acc`, `val_acc`, `test_acc`, `gap_acc`, `gap_loss`, ...,
    accuracies as fractions), cost, and `status` (ok, diverged, failed) with `error`, in the grid's order. With
    `out` it holds every row of that file, earlier ones included. Cells that failed or diverged are returned with
    the others and warned about (CellsFailedWarning); when no cell is ok, RunFailed is raised with the first
    cell's error. Bad input raises UserError with the one line `dropbench run` would print.
    """
    from .progress import make_reporter
    from .results import read_results
    from .runner import run_suite

    _refuse_while_bootstrapping()
    overrides = _overrides(
        tasks, regularizers, keep_rates, input_keep_rates, dropouts, train_sizes, epochs, seeds, mc_samples, precision
    )
    resolved = _resolve(suite, set, overrides)
    chosen = _executor(executor, jobs, threads, device, stack)
    with _results_file(out, resolved.name) as path:
        summary = run_suite(
            resolved,
            path,
            reporter=make_reporter(quiet),
            executor=chosen,
            rerun_failed=rerun_failed,
            fresh=fresh,
            command=_command(suite, set, overrides),
        )
        frame = _in_grid_order(read_results(path), resolved)
    if out is not None:
        frame.attrs["results"] = str(path)  # report_table reads the suite's order from the file's metadata
    return check_results(frame, summary, path if out is not None else None)


def _refuse_while_bootstrapping() -> None:
    """A process that multiprocessing is still starting (it runs the parent's main script again, as `__mp_main__`)
    must not start a run: that is the script's own run, repeated in every worker of a pool. dropbench's workers
    never get here (they do not run __main__); a pool of the caller's own does, when the script has no guard."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        raise RuntimeError(
            "dropbench.run was called while this process was starting as a worker of a multiprocessing pool, which "
            'runs the main script again; put the script\'s work under `if __name__ == "__main__":`'
        )


def _names(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """Names as the CLI's lists take them: "a,b" or ["a", "b"]."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else [str(item) for item in value]
    return tuple(item.strip() for item in items if item.strip())


def _numbers(value: float | Sequence[float] | None, kind: type) -> tuple | None:
    if value is None:
        return None
    items = [value] if isinstance(value, int | float) else list(value)
    try:
        return tuple(kind(item) for item in items)
    except (TypeError, ValueError):
        raise UserError(f"{value!r}: expected numbers") from None


def _seed_values(seeds: int | str | Sequence[int] | None) -> int | tuple[int, ...] | None:
    """A count, the seeds themselves, or a `--seeds` spec ("0,3,7", "10..19")."""
    if seeds is None or (isinstance(seeds, int) and not isinstance(seeds, bool)):
        return seeds
    if isinstance(seeds, bool):
        raise UserError(f"seeds={seeds!r}: give a count, a list of seeds, or a spec such as '10..19'")
    if isinstance(seeds, str):
        try:
            return parse_seeds(seeds)
        except ValueError as error:
            raise UserError(f"seeds={seeds!r}: {error}") from None
    values = list(seeds)
    if not all(isinstance(seed, int) and not isinstance(seed, bool) for seed in values):
        raise UserError(f"seeds={seeds!r}: seeds are whole numbers ≥ 0")
    return tuple(values)


def _overrides(
    tasks: str | Sequence[str] | None,
    regularizers: str | Sequence[str] | None,
    keep_rates: float | Sequence[float] | None,
    input_keep_rates: float | Sequence[float] | None,
    dropouts: str | Sequence[str] | None,
    train_sizes: int | Sequence[int] | None,
    epochs: int | None,
    seeds: int | str | Sequence[int] | None,
    mc_samples: int | None,
    precision: str | None,
) -> "Overrides":
    from .suite import Overrides

    return Overrides(
        tasks=_names(tasks),
        keep_rates=_numbers(keep_rates, float),
        input_keep_rates=_numbers(input_keep_rates, float),
        regularizers=_names(regularizers),
        seeds=_seed_values(seeds),
        epochs=epochs,
        dropouts=_names(dropouts),
        train_sizes=_numbers(train_sizes, int),
        mc_samples=mc_samples,
        precision=precision,
    )


def _resolve(
    suite: "str | Path | Suite", sets: Mapping[str, object] | Sequence[SetOverride] | None, overrides: "Overrides"
) -> "Suite":
    from .suite import Suite, apply_overrides

    if isinstance(suite, Suite):
        if sets:
            raise UserError("set= changes a suite's file before it is read: pass the suite's name or path")
        return apply_overrides(suite, overrides)
    return resolve_suite(str(suite), sets, overrides, API_FLAGS)


def _executor(
    executor: "str | Executor", jobs: int | None, threads: "Threads | None", device: str, stack: bool
) -> "Executor":
    """Where the cells train, as `dropbench run --executor/--jobs/--threads/--device/--no-stack` choose it."""
    if not isinstance(executor, str):
        return executor
    if executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor()
    if executor != "local":
        raise UserError(f"executor={executor!r}: allowed: 'local', 'ray', or an executor object")
    from .devices import resolve_device
    from .executors import make_executor, workers_unavailable

    if jobs is not None and jobs > 1 and (why := workers_unavailable()):
        warnings.warn(f"jobs={jobs}: training in this process, since {why}", RuntimeWarning, stacklevel=3)
    return make_executor(jobs, threads, resolve_device(device), stack=stack)


@contextmanager
def _results_file(out: str | Path | None, suite_name: str) -> Iterator[Path]:
    """`out`, or a file in a temporary folder that is removed once its rows are read."""
    if out is not None:
        yield Path(out)
        return
    with tempfile.TemporaryDirectory(prefix="dropbench-") as folder:
        yield Path(folder) / f"{suite_name}.csv"


def _command(suite: object, sets: object, overrides: "Overrides") -> str:
    """The call as the results' provenance records it (`runs[].command` in the JSON), beside the script's name."""
    from dataclasses import asdict

    from .provenance import command_line

    given = {name: value for name, value in asdict(overrides).items() if value is not None}
    if sets:
        given["set"] = dict(sets) if isinstance(sets, Mapping) else sets
    arguments = ", ".join([repr(getattr(suite, "name", str(suite))), *(f"{k}={v!r}" for k, v in given.items())])
    return f"{command_line()}: dropbench.run({arguments})"


def _in_grid_order(frame: "pd.DataFrame", suite: "Suite") -> "pd.DataFrame":
    """The rows in the grid's order (task, regularizer, keep rate, ..., seed), not in the order cells finished,
    so the same call gives the same frame; rows outside the grid (a tuned suite's later phases, an earlier run's
    cells in `out`) follow in the file's order."""
    position = {cell.cell_id: index for index, cell in enumerate(suite.cells())}
    keys = frame["cell_id"].map(position).fillna(len(position))
    return frame.iloc[keys.argsort(kind="stable")].reset_index(drop=True)


def _cell_text(row: Mapping) -> str:
    return f"{row['task']} {row['regularizer']} keep={row['keep_rate']:g} seed={row['seed']}"


def check_results(frame: "pd.DataFrame", summary: "RunSummary", path: Path | None = None) -> "pd.DataFrame":
    """`frame` when some cell is ok; RunFailed when none is, or when every cell this run trained failed or
    diverged; a CellsFailedWarning when some did."""
    bad = frame[frame["status"] != "ok"]
    if bad.empty:
        return frame
    ran = sum(summary.counts.values())
    if summary.problems:  # this run's: the cell as it names cells, its status and error
        first = str(summary.problems[0])
    else:  # rows an earlier run wrote into `out`
        row = bad.iloc[0]
        error = row["error"] if isinstance(row["error"], str) and row["error"] else "no error recorded"
        first = f"{_cell_text(row)}: {row['status']}: {error}"
    where = f"; the rows are in {path}" if path is not None else ""
    if len(bad) == len(frame) or (ran and not summary.counts["ok"]):
        cells = f"all {ran} cells this run trained" if ran else f"all {len(frame)} cells"
        raise RunFailed(f"{cells} failed or diverged; the first: {first}{where}", frame)
    warnings.warn(
        f"{len(bad)} of {len(frame)} cells failed or diverged (status and error in their rows); the first: {first}",
        CellsFailedWarning,
        stacklevel=3,
    )
    return frame


def report_table(results: "pd.DataFrame | str | Path", *, metric: str = "gap", alpha: float = 0.05) -> "pd.DataFrame":
    """`dropbench report --format csv` as a DataFrame: one row per task × regularizer (and whatever else varies),
    per keep rate the metric's mean over seeds (`keep_0.5`), its 95% CI half-width (`keep_0.5_ci`), the seeds
    behind it and the test figure with its CI, in display units (percentage points, %); `metric` and
    `test_figure` name them. A tuned suite's results give `report --tuned`'s table instead."""
    from .report.data import build_report
    from .report.exporters.csv import wide_frame
    from .report.order import suite_order
    from .report.tuning import has_tuning_rows
    from .results import read_results, require_rows

    if isinstance(results, str | Path):
        paths = [Path(results)]
        frame = require_rows(read_results(results), paths)
    else:
        frame, paths = results, [Path(results.attrs["results"])] if "results" in results.attrs else []
    tuned = has_tuning_rows(frame)
    report = build_report(frame, metric=metric, alpha=alpha, tuned=tuned, failed=False, order=suite_order(paths))
    if tuned and report.tuned is not None:
        return report.tuned
    return wide_frame(report.grids)
