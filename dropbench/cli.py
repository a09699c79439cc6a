"""The command line: parse, call one library function, print. No logic lives here.

Heavy modules (torch, pandas) are imported inside the commands so that `--help` stays fast.
"""

import functools
import itertools
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .catalogue import (
    DROPOUT_KINDS,
    MARK_METHODS,
    METRIC_CHOICES,
    METRIC_HELP,
    METRICS,
    PLOT_DPI,
    PLOT_FORMATS,
    REFERENCES,
    plot_format,
    run_epilog,
)
from .errors import Terminated, UserError, stop_signal
from .keeprates import keep_rate_problem
from .options import Invocation, RunOptions
from .overrides import SET_HELP, parse_seeds
from .report.exporters import names as format_names

if TYPE_CHECKING:  # the executors import torch (and Ray): only when a run starts
    import pandas as pd

    from .executors import LocalExecutor, PoolExecutor
    from .ray_executor import RayExecutor

# The exporters' names (report/exporters/NAME.py), the default first, found without importing them.
FORMATS = format_names()
EXIT_OK, EXIT_FAILED_CELLS, EXIT_BAD_INPUT = 0, 1, 2
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # 128 + the signal's number, as a shell reports a death by it


class CommaList(click.ParamType):
    """'a,b,c' -> ('a', 'b', 'c'); with `keep_rates`, floats each a rate the masks realise (1/65536 to 1)."""

    def __init__(self, keep_rates: bool = False, integers: bool = False) -> None:
        self.keep_rates, self.integers = keep_rates, integers
        self.name = "P,P,..." if keep_rates else "N,N,..." if integers else "NAME,NAME,..."

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple:
        if isinstance(value, tuple):
            return value
        items = [item.strip() for item in str(value).split(",") if item.strip()]
        if not items:
            self.fail("expected a comma-separated list", param, ctx)
        if self.integers:
            try:
                numbers = tuple(int(item) for item in items)
            except ValueError:
                self.fail(f"{value!r} is not a list of whole numbers", param, ctx)
            if min(numbers) < 1:
                self.fail(f"{value!r}: sizes must be ≥ 1", param, ctx)
            return numbers
        if not self.keep_rates:
            return tuple(items)
        try:
            rates = tuple(float(item) for item in items)
        except ValueError:
            self.fail(f"{value!r} is not a list of numbers", param, ctx)
        for rate in rates:
            if not math.isfinite(rate):
                self.fail(f"{rate:g} is not a finite number", param, ctx)
            if problem := keep_rate_problem(rate):
                self.fail(problem, param, ctx)
        return rates


def join_lists(ctx: click.Context, param: click.Parameter, value: tuple[tuple, ...]) -> tuple | None:
    """A repeatable CommaList option: `--task a --task b,c` is `--task a,b,c`; an item named twice is refused
    (it would run a cell twice under one cell_id); None when the option is absent."""
    items = tuple(itertools.chain.from_iterable(value))
    seen: set[object] = set()
    for item in items:
        if item in seen:
            shown = format(item, "g") if isinstance(item, float) else repr(item)
            raise click.BadParameter(f"{shown} is listed twice", ctx, param)
        seen.add(item)
    return items or None


def list_option(*names: str, **kwargs: Any) -> Callable[[Callable], Callable]:
    """A comma-separated option that may also be repeated (each value adds to the list)."""
    kwargs["help"] += " Repeatable."
    return click.option(*names, multiple=True, callback=join_lists, **kwargs)


class SeedsType(click.ParamType):
    """`--seeds`: a count (5: seeds 0..4), a list (0,3,7), an inclusive range (10..19), or a list with ranges."""

    name = "N|S,S,...|A..B"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if isinstance(value, int | tuple):
            return value
        try:
            return parse_seeds(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


class FiniteFloatRange(click.FloatRange):
    """click.FloatRange without inf and nan (nan passes any range check, since it compares false)."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)  # type: ignore[arg-type]  # click says float; argv gives str
        if not math.isfinite(number):
            self.fail(f"{number:g} is not a finite number", param, ctx)
        return number


class ThreadsType(click.ParamType):
    """`--threads`: auto, or a whole number of torch threads per process (at least 1)."""

    name = "auto|N"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if isinstance(value, int) or value == "auto":
            return value
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        try:
            number = int(text)
        except ValueError:
            self.fail(f"{value!r} is neither 'auto' nor a whole number", param, ctx)
        if number < 1:
            self.fail(f"{number} is not at least 1", param, ctx)
        return number


class FigureSize(click.ParamType):
    """'7x3.5' -> (7.0, 3.5): a figure's width and height in inches, each from 1 to 100."""

    name = "WxH"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> tuple[float, float]:
        if isinstance(value, tuple):
            return value
        parts = str(value).lower().replace("×", "x").split("x")
        try:
            width, height = (float(part) for part in parts)
        except ValueError:
            self.fail(f"{value!r} is not WIDTHxHEIGHT in inches, e.g. 7x3.5", param, ctx)
        if not all(math.isfinite(v) and 1 <= v <= 100 for v in (width, height)):
            self.fail(f"{value!r}: each side from 1 to 100 inches", param, ctx)
        return width, height


class _Stopped(Exception):
    """Carries a Ctrl-C or SIGTERM past click, which would print a blank line and turn it into Abort."""

    def __init__(self, stop: KeyboardInterrupt) -> None:
        super().__init__(stop_signal(stop))
        self.stop = stop


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as stop:
            raise _Stopped(stop) from None


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dropbench")
def cli() -> None:
    """Benchmark dropout and the regularizers it is weighed against.

    \b
    Exit codes: 0 done; 1 cells that failed or diverged, or a regression found by compare; 2 bad input
    (compare: nothing comparable), or a file dropbench cannot use (read-only, disk full, not its own,
    another run writing to it); 130 interrupted by Ctrl-C (SIGINT), 143 by SIGTERM: the finished
    cells are kept, and the line on stderr gives the command that resumes.
    """


OUT_OPTION = click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the output to this file instead of stdout (xlsx, a binary format, needs a file).",
)


def statistics_options(test_help: str) -> Callable[[Callable], Callable]:
    """--test and --alpha, shared by report and compare."""

    def decorate(command: Callable) -> Callable:
        command = click.option(
            "--alpha",
            type=FiniteFloatRange(0, 1, min_open=True, max_open=True),
            default=0.05,
            show_default=True,
            help="Significance level, after Holm's correction.",
        )(command)
        return click.option(
            "--test",
            "method",
            type=click.Choice(MARK_METHODS),
            default=MARK_METHODS[0],
            show_default=True,
            help=test_help,
        )(command)

    return decorate


def data_options(command: Callable) -> Callable:
    """--data-dir and --offline (or their environment variables), made this process's settings before the
    command runs, so that worker processes see them too."""

    @functools.wraps(command)
    def with_data_settings(*args: object, data_dir: Path | None, offline: bool, **kwargs: object) -> object:
        from .data.fetch import use_data_settings

        use_data_settings(data_dir, offline)
        return command(*args, **kwargs)

    with_data_settings = click.option(
        "--offline",
        is_flag=True,
        envvar="DROPBENCH_OFFLINE",
        show_envvar=True,
        help="Never touch the network; a missing file is an error.",
    )(with_data_settings)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        envvar="DROPBENCH_DATA",
        show_envvar=True,
        help="Where data sets are kept [default: the user cache dir].",
    )(with_data_settings)


def _errors_as_json_lines(command: Callable[..., int]) -> Callable[..., int]:
    """With --log-format json, bad input found by the command is an `error` object, so stderr stays JSON lines."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> int:
        try:
            return command(*args, **kwargs)
        except UserError as error:
            if kwargs.get("log_format") != "json":
                raise
            from .progress import print_json_error

            print_json_error(str(error))
            return EXIT_BAD_INPUT

    return wrapper


@cli.command(epilog=run_epilog())
@click.argument("suite", required=False)
@list_option("--task", "tasks", type=CommaList(), help="Run these tasks (from the suite or the registry).")
@list_option("--keep", "keep_rates", type=CommaList(keep_rates=True), help="Hidden-unit keep rates, e.g. 0.5,1.0.")
@list_option("--input-keep", "input_keep_rates", type=CommaList(keep_rates=True), help="Input keep rates.")
@list_option("--reg", "regularizers", type=CommaList(), help="Regularizers, e.g. none,l2,max-norm+early-stopping.")
@list_option(
    "--dropout",
    "dropouts",
    type=CommaList(),
    help=f"Dropout kinds: {', '.join(DROPOUT_KINDS)} (see below).",
)
@list_option(
    "--train-size",
    "train_sizes",
    type=CommaList(integers=True),
    help="Training-set sizes (stratified subsamples of the training split), e.g. 100,1000.",
)
@click.option("--mc-samples", type=click.IntRange(min=0), help="MC dropout at evaluation: T stochastic passes.")
@click.option(
    "--seeds",
    type=SeedsType(),
    help="Seeds: a count (5: seeds 0..4), a list (0,3,7), an inclusive range (10..19: both ends run), or a mix "
    "(0,10..12). A seed is the same cell whichever way it is named.",
)
@click.option(
    "--set",
    "sets",
    metavar="KEY=VALUE",
    multiple=True,
    help=f"{SET_HELP} The value is TOML (one word may go unquoted); checked as the suite file is. A task of "
    "[[task]] by name or index (task.0.batch_size=32). Repeatable; a flag and a --set of the same key are refused.",
)
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs for every task.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Results CSV [default: results/SUITE-<UTC time>.csv]. An existing file is resumed, by one run at a time.",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    help="Worker processes [default: one per usable core]; 1 runs in this process.",
)
@click.option(
    "--device",
    type=click.Choice(["auto", "cpu", "cuda"]),
    default="cpu",
    show_default=True,
    help="Where cells train; auto picks CUDA when a GPU is visible (one worker per GPU by default).",
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "bf16"]),
    help="bf16: autocast of the training forward pass (weights and optimizer stay fp32) [default: fp32].",
)
@click.option(
    "--threads",
    type=ThreadsType(),
    help="Torch threads per process. auto [the default]: the cores shared among the cells in flight (all of them "
    "for a one-cell run or --jobs 1; the last cells of a grid take the cores of those done, at their next epoch) "
    "where a probe of its training shows the same bits at that count as at one (README, Threads), else 1, as for "
    "plugins' models and regularizers. N: N per process for every cell. Ray: --cpus-per-cell; CUDA: every core.",
)
@click.option(
    "--executor",
    "executor_kind",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: this machine (a process pool); ray: every cell a Ray task (pip install 'dropbench[ray]').",
)
@click.option(
    "--no-stack",
    is_flag=True,
    help="Train every cell alone (by default compatible small cells train as one stacked model); the same figures.",
)
@click.option("--address", help="Ray cluster to use (auto, HOST:PORT, ray://HOST:10001) [default: start one].")
@click.option(
    "--cpus-per-cell",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Ray: CPUs per cell, which are its torch threads (--threads is for the local executor).",
)
@click.option(
    "--gpus-per-cell",
    type=FiniteFloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Ray: GPUs per cell; fractions let small models share a card.",
)
@click.option("--shard", help="Run only part I of N of the grid (e.g. 2/3), balanced by estimated cost.")
@click.option("--rerun-failed", is_flag=True, help="Run again the cells the file holds as failed or diverged.")
@click.option("--fresh", is_flag=True, help="Move an existing --out aside (NAME.<time>.bak.csv) and start over.")
@click.option("--dry-run", is_flag=True, help="Show the cells that would run, those done, and a time estimate.")
@click.option("-q", "--quiet", is_flag=True, help="No progress output.")
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    help="Off a terminal: one text line per finished cell, or one JSON object per line.",
)
@data_options
@click.pass_obj
@_errors_as_json_lines
def run(invocation: Invocation, **params: object) -> int:
    """Run a suite and print its gap tables.

    SUITE is a bundled name ('quick', the default) or a path to a TOML file. Flags override the
    suite file, and --set any key of it (--set optimizer.lr=0.05 --set model.hidden=[512,512]). Running
    into an existing --out skips the cells it already holds.
    """
    from click.core import ParameterSource

    context = click.get_current_context()
    typed = {ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT}
    options = RunOptions.from_cli(params, {name for name in params if context.get_parameter_source(name) in typed})
    if problem := options.clash():
        raise click.UsageError(problem)
    return _run(options, invocation)


def _run(options: RunOptions, invocation: Invocation) -> int:
    from .overrides import resolve_suite
    from .planning import Shard
    from .progress import make_reporter, print_run_end, print_stopped
    from .runner import default_out_path, plan_run, resume_command, run_suite
    from .suite import Overrides

    overrides = Overrides(**options.grid)  # type: ignore[arg-type]  # the given fields by name, as click typed them
    resolved = resolve_suite(options.suite, options.sets, overrides)
    part = Shard.parse(options.shard) if options.shard else None
    executor = _executor(options)
    out = options.out or default_out_path(resolved.name)
    if options.dry_run:
        from .report.console import print_plan

        print_plan(plan_run(resolved, out, shard=part, rerun_failed=options.rerun_failed), executor)
        return EXIT_OK
    try:
        summary = run_suite(
            resolved,
            out,
            reporter=make_reporter(options.quiet, options.log_format),
            executor=executor,
            shard=part,
            rerun_failed=options.rerun_failed,
            fresh=options.fresh,
            command=invocation.command,
        )
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM (see main)
        resume = resume_command(list(invocation.args) or ["run"], out)
        print_stopped(stop_signal(stop), out, resume, options.log_format)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    if summary.total and not (resolved.tuning is not None and part is not None and part.count > 1):
        # An empty shard has no table to show, and a tuned suite's shard no chosen trial yet.
        _print_report([out], tuned_on=resolved.tuning.metric if resolved.tuning is not None else None)
    print_run_end(summary, options.log_format)
    return EXIT_FAILED_CELLS if summary.failed else EXIT_OK


def _executor(options: RunOptions) -> "LocalExecutor | PoolExecutor | RayExecutor":
    """Where the cells train: Ray tasks, or this machine (this process or a pool)."""
    if options.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(options.address, cpus_per_cell=options.cpus_per_cell, gpus_per_cell=options.gpus_per_cell)
    from .devices import resolve_device
    from .executors import make_executor

    return make_executor(options.jobs, options.threads, resolve_device(options.device), stack=options.stack)


def _print_report(paths: list[Path], tuned_on: str | None = None) -> None:
    """The run's closing tables: each task's gap, with significance against the baseline; for a tuned suite (its
    selection metric `tuned_on`), `report --tuned`'s: each method's chosen setting, its test figures and gap, and
    its test against tuned none."""
    from .report.console import write
    from .report.data import build_report
    from .report.exporters import get
    from .report.order import suite_order
    from .results import read_results

    tuned = tuned_on is not None
    frame = read_results(*paths)
    data = build_report(frame, metric=tuned_on or "gap", failed=False, tuned=tuned, order=suite_order(paths))
    write(get("table").export(data))


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="The merged results CSV (its .epochs.csv and .json are written beside it).",
)
def merge(inputs: tuple[Path, ...], out: Path) -> int:
    """Join results CSVs (shards of one grid) into one: exact duplicates dropped, conflicts refused."""
    from .merge import merge_results
    from .results import results_files

    files = results_files(inputs, _note)
    merged = merge_results(files, out)
    click.echo(f"{merged.rows} cells ({merged.duplicates} duplicates dropped) from {len(files)} files -> {out}")
    return EXIT_OK


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--suite",
    help="The suite files of schema 3 were run from (a bundled name or a TOML path): it gives their momentum, "
    "precision and setup_id, which schema 3 did not write.",
)
def migrate(results: tuple[Path, ...], suite: str | None) -> int:
    """Rewrite results CSVs of an earlier schema (4 to 6; 3 with --suite) in this one, in place, with their sidecars.

    Ids get their letter (c..., s...) and text a spreadsheet would read as a number or date its apostrophe;
    every figure keeps its bytes. Runs and merges do the same by themselves; this is for files you open elsewhere.
    """
    from .results import SCHEMA_VERSION, results_files
    from .upgrade import migrate as migrate_files

    for path, old in migrate_files(results_files(results, _note), suite):
        done = f"schema {old} -> {SCHEMA_VERSION}" if old else f"already schema {SCHEMA_VERSION}"
        click.echo(f"{path}: {done}")
    return EXIT_OK


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--metric",
    type=click.Choice(METRIC_CHOICES),
    default="gap",
    show_default=True,
    help=f"What the cells show and the paired tests test. {METRIC_HELP}",
)
@list_option("--task", "tasks", type=CommaList(), help="Only these tasks.")
@click.option("--best", is_flag=True, help="Only the configuration of each task chosen on validation, with its gain.")
@click.option("--paired", is_flag=True, help="Also the paired difference to the baseline behind every mark.")
@click.option(
    "--tuned",
    is_flag=True,
    help="Results of a suite with a [tuning] table: per task and method the setting chosen on validation, its "
    "test figure and gap, and its paired test against tuned none (--metric val_acc or val_loss: what to choose on).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=FORMATS[0],
    show_default=True,
    help="csv is one table: wide by default (a row per task × regularizer; per keep rate the figure, its CI, the "
    "seeds and the test figure with its CI bounds); with --paired the tests, long; with --best, --tuned or "
    "--reference those.",
)
@statistics_options("Paired test against the baseline, per task, Holm-corrected.")
@click.option("--reference", type=click.Choice(REFERENCES), help="Published numbers beside matching rows.")
@click.option(
    "--compare",
    "base",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also compare these results against BASE, as `compare BASE RESULTS` does: its verdict after the tables.",
)
@click.option(
    "--history",
    "earlier",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Earlier runs (results files or folders of them): also these results' history after them, as `history` "
    "shows it. Repeatable.",
)
@click.option(
    "--max-drop",
    type=FiniteFloatRange(min=0),
    default=0.5,
    show_default=True,
    help="With --compare or --history: the tolerated worsening, as compare's.",
)
@OUT_OPTION
def report(
    results: tuple[Path, ...],
    metric: str,
    tasks: tuple[str, ...] | None,
    best: bool,
    paired: bool,
    tuned: bool,
    fmt: str,
    method: str,
    alpha: float,
    reference: str | None,
    base: Path | None,
    earlier: tuple[Path, ...],
    max_drop: float,
    out: Path | None,
) -> int:
    """Summarize results CSVs (partial or resumed ones too): mean ± CI over seeds, tests against the baseline.

    Every choice (★, --best, --tuned, --reference) is made on the validation split; test figures only report it.
    --format html writes one self-contained page (tables, figures, provenance): --out report.html (or > report.html).

    \b
    With --compare or --history the verdicts follow the tables, in --metric (test_acc where --metric is gap,
    which holds no single unit for --max-drop), and the exit code is theirs: 1 on a regression in the
    newest run, 2 when one of them compared nothing (after printing), else 0.
    """
    from .report.console import write
    from .report.data import build_report
    from .report.exporters import get
    from .report.order import suite_order
    from .results import read_results, require_rows, results_files

    results = tuple(results_files(results, _note))
    frame = require_rows(read_results(*results), results)
    if tasks:
        unknown = sorted(set(tasks) - set(frame["task"]))
        if unknown:
            raise UserError(
                f"--task: {', '.join(unknown)} not in these results; present: {', '.join(dict.fromkeys(frame['task']))}"
            )
        frame = frame[frame["task"].isin(tasks)]
    views = {"--best": best, "--paired": paired, "--reference": reference, "--compare": base, "--history": earlier}
    tuned = tuned or _tuned_by_default(frame, results, views)
    if tuned:
        _check_tuned(frame, results, metric=metric, views=views)
    statistics = {"metric": metric, "max_drop": max_drop, "alpha": alpha, "method": method}
    verdicts = _verdicts(frame, results, base, earlier, tasks, **statistics)
    data = build_report(
        frame,
        metric=metric,
        method=method,
        alpha=alpha,
        paired=paired,
        best=best,
        tuned=tuned,
        reference=reference,
        order=suite_order(results),
        sources=results,
        **verdicts,
    )
    write(get(fmt).export(data), out)
    if data.verdicts_exit_code == EXIT_BAD_INPUT:
        # Printed first (the report and the verdict lines); then the one line on stderr that CI logs show.
        raise UserError(next(v.reason for v in (data.comparison, data.history) if v is not None and v.reason))
    return data.verdicts_exit_code


def _tuned_by_default(frame: "pd.DataFrame", results: tuple[Path, ...], views: Mapping[str, object]) -> bool:
    """Whether a report without --tuned shows the tuned view: results of a tuned suite hold many trials of each
    method, which the grid views would pool into one configuration, so they get --tuned's view (with a note), and
    a grid view asked for by name is refused."""
    from .report.tuning import has_tuning_rows

    if not has_tuning_rows(frame):
        return False
    asked = [name for name, given in views.items() if given]
    if asked:
        raise UserError(
            f"{', '.join(map(str, results))}: a tuned comparison's results (phase tune/eval); {', '.join(asked)} "
            "would pool its trials: use report --tuned"
        )
    _note("a tuned comparison's results: showing report --tuned (each method's setting chosen on validation)")
    return True


def _verdicts(
    frame: "pd.DataFrame",
    results: tuple[Path, ...],
    base: Path | None,
    earlier: tuple[Path, ...],
    tasks: tuple[str, ...] | None,
    **statistics: Any,
) -> dict[str, Any]:
    """report --compare BASE and --history EARLIER...: compare's and history's results for the report's files and
    tasks, in the report's --metric (compare's default test_acc where that is gap, which has no one unit for
    --max-drop)."""
    if statistics["metric"] not in METRICS:
        statistics["metric"] = "test_acc"
    verdicts: dict[str, Any] = {}
    if base is not None:
        from .report.compare import compare as compare_results
        from .report.order import suite_order
        from .results import read_results

        before = read_results(base)
        before = before[before["task"].isin(tasks)] if tasks else before
        verdicts["comparison"] = compare_results(before, frame, order=suite_order([base]), **statistics)
    if earlier:
        from .report.history import history as line_up
        from .report.history import read_runs, results_in
        from .report.order import suite_order
        from .results import results_files

        files = results_files(results_in(earlier), _note)
        runs = read_runs([*([path] for path in files), list(results)], _note)
        verdicts["history"] = line_up(runs, tasks=tasks, order=suite_order([*results, *files]), **statistics)
    return verdicts


def _check_tuned(frame: "pd.DataFrame", results: tuple[Path, ...], *, metric: str, views: Mapping[str, object]) -> None:
    """report --tuned's options and input: alone among the views, chosen on a validation metric, and results that
    hold tuning rows."""
    from .report.tuning import SELECTION_METRICS, has_tuning_rows

    others = [name for name, given in views.items() if given]
    if others:
        raise UserError(f"--tuned is a report of its own: drop {', '.join(others)}")
    if metric not in ("gap", *SELECTION_METRICS):
        raise UserError(f"--tuned chooses on validation: --metric {' or '.join(SELECTION_METRICS)}, not {metric}")
    if not has_tuning_rows(frame):
        raise UserError(
            f"{', '.join(map(str, results))}: the results hold no tuning rows (run a suite with a [tuning] table)"
        )


@cli.command()
@click.argument("base", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("new", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--metric", type=click.Choice(METRIC_CHOICES), default="test_acc", show_default=True, help=METRIC_HELP)
@click.option(
    "--max-drop",
    type=FiniteFloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Tolerated worsening: percentage points for accuracies/errors, the metric's units otherwise.",
)
@statistics_options("Paired test over seeds; both need 6+ seeds to ever reach p < 0.05 (2/2^n at n seeds).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=FORMATS[0], show_default=True)
@OUT_OPTION
def compare(
    base: Path, new: Path, metric: str, max_drop: float, alpha: float, method: str, fmt: str, out: Path | None
) -> int:
    """Compare NEW results against BASE, cell by cell over seeds.

    Exits 1 only where a worsening is both significant (Holm-corrected) and beyond --max-drop;
    'inconclusive' where a worsening beyond --max-drop is not ruled out (the interval reaches past it, or
    too few seeds to be significant); cells missing on one side are listed.
    Exits 2 when nothing is comparable: no cell in common, or no matched pair ok on both sides. A
    configuration without an ok pair beside comparable ones is listed as 'not comparable'.
    """
    from .report.compare import compare as compare_results
    from .report.console import write
    from .report.exporters import get
    from .report.order import suite_order
    from .results import read_results

    result = compare_results(
        read_results(base),
        read_results(new),
        metric=metric,
        max_drop=max_drop,
        alpha=alpha,
        method=method,
        order=suite_order([base]),
    )
    write(get(fmt).export_comparison(result), out)
    if result.exit_code == EXIT_BAD_INPUT:
        # Printed first (the report and its verdict line); then the one line on stderr that CI logs show.
        raise UserError(result.reason)
    return result.exit_code


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--metric",
    type=click.Choice(tuple(METRICS)),
    default="test_acc",
    show_default=True,
    help="Higher is better for test_acc, val_acc and train_acc, lower for the others (not gap: the newest run is "
    "held to one --max-drop, as compare holds it).",
)
@click.option(
    "--max-drop",
    type=FiniteFloatRange(min=0),
    default=0.5,
    show_default=True,
    help="Tolerated worsening in the newest run: percentage points for accuracies/errors, the metric's units "
    "otherwise (as compare's).",
)
@statistics_options("Paired test of each run against the run before, over seeds (as compare's).")
@list_option("--task", "tasks", type=CommaList(), help="Only these tasks.")
@click.option("--last", type=click.IntRange(min=2), help="Only the newest N runs.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=FORMATS[0], show_default=True)
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also draw each configuration's trend with its interval into this .png or .svg file.",
)
@OUT_OPTION
def history(
    results: tuple[Path, ...],
    metric: str,
    max_drop: float,
    alpha: float,
    method: str,
    tasks: tuple[str, ...] | None,
    last: int | None,
    fmt: str,
    plot_path: Path | None,
    out: Path | None,
) -> int:
    """Line up runs (results files, or folders of them) by configuration, oldest first, and flag the runs where a
    figure moved significantly from the run before.

    Each file is one run (merge a run's shards first), dated by its first cell and described by the provenance
    its rows record (commit, versions, machine); cells trained with other settings are other configurations.
    Each run is compared as `compare` would with the run before that holds the configuration: paired by seed,
    Holm per task.

    \b
    Exit codes (the newest run against the run before, as compare decides): 0 no regression; 1 a
    configuration worse, significantly and beyond --max-drop; 2 bad input (a file that is not results, fewer
    than two runs, a run without dates) or nothing comparable in the newest step (after printing).
    """
    from .report.console import write
    from .report.exporters import get
    from .report.history import history as line_up
    from .report.history import read_runs, results_in
    from .report.order import suite_order
    from .results import results_files

    if plot_path is not None and not plot_format(plot_path.name):  # before the work, not after it
        raise UserError(f"--plot {plot_path}: name a .png or .svg file")
    files = results_files(results_in(results), _note)
    runs = read_runs([[path] for path in files], _note)
    found = line_up(
        runs,
        metric=metric,
        max_drop=max_drop,
        alpha=alpha,
        method=method,
        tasks=tasks,
        last=last,
        order=suite_order(files),
    )
    if plot_path is not None:
        from .report.plots import write_history_plot

        _note(f"trends drawn into {write_history_plot(found, plot_path)}")
    write(get(fmt).export_history(found), out)
    if found.exit_code == EXIT_BAD_INPUT:
        raise UserError(found.reason)  # after the history: the one line on stderr that CI logs show
    return found.exit_code


@cli.command()
@click.argument("results", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("plots"),
    show_default=True,
    help="Folder for the figures.",
)
@click.option("--format", "fmt", type=click.Choice(PLOT_FORMATS), default="png", show_default=True)
@list_option("--task", "tasks", type=CommaList(), help="Only these tasks.")
@click.option(
    "--reference",
    type=click.Choice(REFERENCES),
    help="Published test errors as crosses on the keep-rate plot, beside the configurations they match (refused "
    "where none matches).",
)
@click.option(
    "--metric",
    type=click.Choice(METRIC_CHOICES),
    help="What the keep-rate plot (a tuned run's: its per-method plot) shows, alone [default: test and training "
    "error, MSE for regression]. gap: gap_acc or gap_loss, each task its own. Refused for a task without such "
    "figures.",
)
@click.option(
    "--size",
    type=FigureSize(),
    metavar="WIDTHxHEIGHT",
    help="Every figure's size in inches, WIDTHxHEIGHT (e.g. 7x3.5) [default: fitted to its panels and legend].",
)
@click.option(
    "--dpi", type=click.IntRange(10, 2400), default=PLOT_DPI, show_default=True, help="Resolution of png files."
)
@click.option(
    "--style",
    help="A matplotlib style: default, a style that ships with matplotlib (seaborn-v0_8-paper, grayscale, ...; "
    "an unknown name lists them), or a .mplstyle file.",
)
@click.option(
    "--font-size", type=FiniteFloatRange(4, 72), help="Base font size in points (titles, legends scale with it)."
)
def plot(
    results: tuple[Path, ...],
    out_dir: Path,
    fmt: str,
    tasks: tuple[str, ...] | None,
    reference: str | None,
    metric: str | None,
    size: tuple[float, float] | None,
    dpi: int,
    style: str | None,
    font_size: float | None,
) -> int:
    """Draw per task error against keep rate (CI bands clipped to what is possible), gap heatmaps and learning
    curves; for a tuned suite's results each method's chosen setting and every tuning trial instead.

    More than 6 lines are split into panels (each with its baseline's line); identical lines are drawn once and
    named together; a point that dwarfs the rest is drawn at the axis' edge with its value (README: Reports,
    comparisons, plots).
    """
    from .report.order import suite_order
    from .report.plots import write_plots
    from .results import read_epochs, read_results, require_rows, results_files

    results = tuple(results_files(results, _note))
    frame = require_rows(read_results(*results), results)
    written = write_plots(
        frame,
        read_epochs(*results),
        out_dir,
        fmt=fmt,
        tasks=tasks,
        reference=reference,
        order=suite_order(results),
        metric=metric,
        size=size,
        dpi=dpi,
        style=style,
        font_size=font_size,
    )
    for path in written:
        click.echo(str(path))
    return EXIT_OK


@cli.command()
@data_options
def tasks() -> int:
    """List the registered tasks, their size and whether their data is here."""
    from rich.table import Table

    from .data import TASKS
    from .data.fetch import data_dir, source_status
    from .data.registry import REGISTRY
    from .report.console import stdout_console

    table = Table(title=f"tasks (data dir: {data_dir()})", title_justify="left")
    for column in ("name", "kind", "size", "data", "source"):
        table.add_column(column)
    for name, info in sorted(TASKS.items()):
        status = "bundled" if info.source is None else source_status(info.source)
        table.add_row(name, info.kind, info.summary, status, info.origin)
    for entry in REGISTRY.entries():
        if entry.builtin:
            continue
        plugin = f"plugin: {entry.source}"
        if entry.value is None:
            table.add_row(entry.name, "", entry.problem, plugin, "")
        else:
            table.add_row(entry.name, entry.value.kind, entry.value.summary, plugin, entry.value.origin)
    table.add_row(
        "openml:<id>",
        "from its target",
        "any OpenML table (shortcuts: adult, covertype, higgs, california-housing)",
        "cached on first use",
        "OpenML via scikit-learn",
    )
    stdout_console().print(table)
    stdout_console().print(
        "Your own data: a [[task]] with path = a CSV, Parquet or .npz file or a folder of images; "
        "a plugin's task: its name, or module:object (docs/plugins.md)",
        markup=False,
    )
    return EXIT_OK


@cli.command()
@click.argument("names", nargs=-1)
@data_options
def download(names: tuple[str, ...]) -> int:
    """Fetch and verify data sets ahead of time (default: mnist, fashion-mnist, cifar10).

    NAMES are tasks with files to fetch, or OpenML tasks (openml:<id>, adult, ...).
    """
    from .data import prepare_task
    from .data.fetch import data_dir
    from .data.sources import SOURCES

    for name in names or tuple(SOURCES):
        prepare_task(name, log=lambda message: click.echo(message, err=True))
        click.echo(f"{name}: verified in {data_dir()}")
    return EXIT_OK


@cli.command()
def regularizers() -> int:
    """List the regularizers and their default strengths.

    Combine them with '+', e.g. max-norm+early-stopping; set a strength in a suite with
    [regularizer.l2] strength = 1e-4.
    """
    from rich.table import Table

    from .catalogue import REGULARIZERS
    from .plugins import BUILTIN, declared
    from .report.console import stdout_console

    table = Table(title="regularizers (combine with +, e.g. max-norm+early-stopping)", title_justify="left")
    for column in ("name", "strength", "default", "what it does", "from"):
        table.add_column(column)
    for info in REGULARIZERS.values():  # the built-ins from the torch-free catalogue: the listing stays fast
        default = "" if info.default_strength is None else format(info.default_strength, "g")
        strength = info.strength_meaning if info.default_strength is not None else ""
        table.add_row(info.name, strength, default, info.summary, BUILTIN)
    entries = []
    if declared("dropbench.regularizers"):  # loading a plugin imports what it needs (torch): only when one is installed
        from .regularizers import REGISTRY

        entries = [entry for entry in REGISTRY.entries() if entry.source != BUILTIN]
    for entry in entries:
        kind = entry.value
        if kind is None:
            table.add_row(entry.name, "", "", entry.problem, entry.source)
            continue
        default = "" if kind.default_strength is None else format(kind.default_strength, "g")
        strength = kind.strength_meaning if kind.default_strength is not None else ""
        table.add_row(entry.name, strength, default, kind.summary, entry.source)
    stdout_console().print(table)
    stdout_console().print("Set a strength in a suite: [regularizer.l2] strength = 1e-4", markup=False)
    return EXIT_OK


def _note(message: str) -> None:
    """A line on stderr about the input that does not stop the command."""
    click.echo(f"dropbench: {message}", err=True)


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


@contextmanager
def _sigterm_stops_like_ctrl_c() -> Iterator[None]:
    """While a command runs, SIGTERM raises errors.Terminated (a KeyboardInterrupt) in the main thread, so a
    `kill` or a cancelled CI job stops it as Ctrl-C does, instead of killing it mid-write without a word."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set a handler; there SIGTERM keeps its default
        return
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; bad input is one line on stderr and code 2."""
    try:
        args = sys.argv[1:] if argv is None else argv
        invocation = Invocation(tuple(args))
        with _sigterm_stops_like_ctrl_c():
            code = cli.main(args=args, prog_name="dropbench", standalone_mode=False, obj=invocation)
    except click.UsageError as error:
        hint = f" (see 'dropbench {error.ctx.info_name} --help')" if error.ctx and error.ctx.parent else ""
        click.echo(f"dropbench: error: {error.format_message()}{hint}", err=True)
        return EXIT_BAD_INPUT
    except UserError as error:
        click.echo(f"dropbench: error: {error}", err=True)
        return EXIT_BAD_INPUT
    except (_Stopped, KeyboardInterrupt, click.Abort) as error:
        stop = error.stop if isinstance(error, _Stopped) else error
        click.echo(f"dropbench: interrupted ({stop_signal(stop)})", err=True)
        return EXIT_TERMINATED if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    return code if isinstance(code, int) else EXIT_OK


def entry() -> None:
    sys.exit(main())
