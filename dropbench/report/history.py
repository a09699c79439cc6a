"""`dropbench history`: each configuration's figure across runs (a scheduled job's weekly results files), and the
runs where it moved significantly from the run before.

Runs are ordered by when they ran (their first cell's `started_at`) and described by the provenance their rows
record (report.runs: commit, versions, machine). A configuration is everything that changes training
(CONFIG_COLUMNS, the setup included), so a run trained with other settings lines up with nothing: its
configurations are rows of their own, never pooled with or compared to the others.

Each step is `dropbench compare` of run k against the run before: for each of run k's configurations, the
latest earlier run that holds it (run k − 1, unless that run lacks it). Cells pair by cell_id seed by seed, the
exact sign-flip test (or Wilcoxon) tests each configuration, Holm across each task's configurations of the step.
A flag (▲/▼) is a significant move in that comparison, so each step's flags hold compare's error rate (at most α
per task when nothing changed); steps are separate families, so a long history holds more false flags than one
step, as a weekly gate does over the weeks. The exit code reads the newest step only, as compare would: 1 when a
configuration regressed there (worse, significant, beyond --max-drop), 2 when nothing in it was comparable.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..catalogue import DEFAULT_METHOD, HIGHER_IS_BETTER
from ..errors import UserError
from ..results import read_results, require_rows
from .compare import OVERALL_VERDICTS, CompareResult, Comparison, check_verdict_options, compare
from .labels import SETUP_COLUMNS, config_label, varying
from .order import SuiteOrder, in_suite_order
from .runs import RunInfo, run_info
from .stats import mean_ci
from .summary import CONFIG_COLUMNS, latest_rows, with_config_defaults, with_metric

MIN_RUNS = 2  # a history tells what moved: it needs a run before


@dataclass(frozen=True)
class Run:
    """One run: its provenance and its rows."""

    info: RunInfo
    frame: pd.DataFrame


@dataclass(frozen=True)
class Point:
    """A configuration in one run: the metric's mean over the ok seeds and the half-width of its 95% t-interval
    (NaN below 2 seeds); `not_ok` cells failed or diverged and are not in it."""

    n: int
    mean: float
    ci: float
    not_ok: int


@dataclass(frozen=True)
class Trend:
    """One configuration across the runs. Per run: its point (None where the run does not hold it), its
    comparison with the run before that holds it (None where no earlier run does, or this one does not) and its
    `change`: 'improvement' or 'degradation' where that comparison is significant (Holm), else ''."""

    config: dict[str, object]
    label: str  # within its task: 'l2 0.01 keep 0.5', plus whatever else sets it apart ('· epochs 3')
    points: tuple[Point | None, ...]
    steps: tuple[Comparison | None, ...]
    changes: tuple[str, ...]

    @property
    def task(self) -> str:
        return str(self.config["task"])


@dataclass(frozen=True)
class History:
    """Runs oldest first, one trend per configuration (in the suite's order), and each step's comparison:
    `steps[k - 1]` is run k against the runs before it (each configuration against the latest that holds it), the
    runs `bases[k - 1]`."""

    runs: tuple[RunInfo, ...]
    trends: tuple[Trend, ...]
    steps: tuple[CompareResult, ...]
    bases: tuple[tuple[int, ...], ...]  # per step, the runs (indices) its configurations were compared with
    metric: str
    max_drop: float
    alpha: float
    method: str = DEFAULT_METHOD

    @property
    def newest(self) -> CompareResult:
        return self.steps[-1]

    @property
    def exit_code(self) -> int:
        """compare's code for the newest step: 2 nothing comparable, 1 a regression, else 0."""
        return self.newest.exit_code

    @property
    def verdict(self) -> str:
        return OVERALL_VERDICTS[self.exit_code]

    @property
    def reason(self) -> str:
        """Why the newest step compared nothing ('' when it compared something)."""
        if self.newest.reason == "":
            return ""
        return f"the newest run ({self.runs[-1].name}) against the runs before it: {self.newest.reason}"

    def tasks(self) -> list[str]:
        return list(dict.fromkeys(trend.task for trend in self.trends))


def results_in(paths: Sequence[Path]) -> list[Path]:
    """The CSVs the arguments name: a file as it is, a folder as every *.csv under it (sorted), so that a
    scheduled job's downloaded artifacts can be given as their folder."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.rglob("*.csv") if p.is_file())
            if not inside:
                raise UserError(f"{path}: a folder without any results CSV")
            found += inside
        else:
            found.append(path)
    return found


def read_runs(groups: Sequence[Sequence[Path]], note: Callable[[str], None]) -> list[Run]:
    """Each group of files read as one run (a file alone, or the shards `report` was given). A run whose cells
    another run holds all (a shard beside its merged file, a copy of a file) is skipped with a note: it is that
    run again, and lining it up would read a run against itself."""
    runs = []
    for paths in groups:
        frame = require_rows(read_results(*paths), paths)
        runs.append(Run(run_info(paths, frame), frame))
    cells = [
        set(zip(run.frame["cell_id"], run.frame.get("started_at", pd.Series("", run.frame.index)).fillna("")))
        for run in runs
    ]
    kept = []
    for i, run in enumerate(runs):
        holder = next(
            (j for j in range(len(runs)) if j != i and cells[i] <= cells[j] and (cells[i] < cells[j] or j < i)), None
        )
        if holder is None:
            kept.append(run)
        else:
            note(f"{run.info.name}: skipped, its cells are all in {runs[holder].info.name} (a shard or a copy of it)")
    return kept


def in_time_order(runs: Sequence[Run]) -> list[Run]:
    """Oldest first, by each run's first cell; runs that started together keep the order given."""
    for run in runs:
        if not run.info.started:
            raise UserError(f"{run.info.name}: no started_at in its rows; history orders runs by when they ran")
    return sorted(runs, key=lambda run: run.info.started)


def row_keys(frame: pd.DataFrame) -> list[tuple]:
    """Each row's configuration key (CONFIG_COLUMNS, `setup` included: see with_config_defaults)."""
    return list(zip(*([_as_key(column, value) for value in frame[column]] for column in CONFIG_COLUMNS)))


def config_key(config: Mapping[str, object]) -> tuple:
    """A configuration's key, as row_keys gives it: alike across files and types (a keep rate is a float, a
    training-set size an int, the rest text)."""
    return tuple(_as_key(column, config[column]) for column in CONFIG_COLUMNS)


def _as_key(column: str, value: object) -> object:
    if column.endswith("keep_rate"):
        return float(str(value))
    return int(str(value)) if column == "train_size" else str(value)


def _points(frame: pd.DataFrame, metric: str) -> dict[tuple, tuple[dict[str, object], Point]]:
    """Per configuration (its key): its columns (CONFIG_COLUMNS and the setup's) and its point."""
    frame = with_metric(frame, metric)
    found = {}
    for key, group in frame.groupby("_key", sort=False):
        config = {column: group[column].iloc[0] for column in (*CONFIG_COLUMNS, *SETUP_COLUMNS) if column in group}
        ok = group[group["status"] == "ok"]
        estimate = mean_ci(pd.to_numeric(ok[metric], errors="coerce").astype(float).tolist())
        found[key] = (config, Point(estimate.n, estimate.mean, estimate.half_width, len(group) - len(ok)))
    return found


def _keyed(frame: pd.DataFrame) -> pd.DataFrame:
    """The run's latest row per cell with its configuration's key in `_key`."""
    frame = with_config_defaults(latest_rows(frame))
    return frame.assign(_key=row_keys(frame))


def _before(k: int, frames: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, tuple[int, ...]]:
    """What run k is compared with: for each of its configurations, the cells of the latest earlier run holding it
    (an empty frame where none does); and which runs those are (their indices, newest first)."""
    wanted = set(frames[k]["_key"])
    parts, used = [], []
    for j in range(k - 1, -1, -1):
        held = frames[j]["_key"].isin(wanted)
        if held.any():
            parts.append(frames[j][held])
            used.append(j)
            wanted -= set(frames[j].loc[held, "_key"])
    return (pd.concat(parts, ignore_index=True) if parts else frames[k].iloc[0:0]), tuple(used)


def _change(comparison: Comparison | None, metric: str, alpha: float) -> str:
    """'improvement' or 'degradation' where the step's Holm-adjusted p is below alpha; '' otherwise."""
    if comparison is None or not comparison.p_value < alpha:  # NaN p: not tested
        return ""
    better = comparison.delta > 0 if metric in HIGHER_IS_BETTER else comparison.delta < 0
    return "improvement" if better else "degradation"


def _labelled(configs: pd.DataFrame) -> list[str]:
    """Each configuration's label within its task, naming what sets it apart from the task's other rows."""
    labels = []
    for _, rows in configs.groupby("task", sort=False):
        differs = varying(rows)
        labels += [config_label(row, differs, keep=True) for _, row in rows.iterrows()]
    return labels


def _check(runs: Sequence[Run], metric: str, method: str, alpha: float, max_drop: float) -> None:
    check_verdict_options("history", metric, method, alpha, max_drop)
    if len(runs) < MIN_RUNS:
        given = ", ".join(run.info.name for run in runs) or "none"
        raise UserError(f"history needs {MIN_RUNS} runs or more to tell what moved; got {len(runs)} ({given})")


def history(
    runs: Sequence[Run],
    *,
    metric: str = "test_acc",
    max_drop: float = 0.5,
    alpha: float = 0.05,
    method: str = DEFAULT_METHOD,
    tasks: Sequence[str] | None = None,
    last: int | None = None,
    order: SuiteOrder | None = None,
) -> History:
    """Line the runs up (oldest first; with `last`, the newest `last` of them) per configuration and compare each
    with the run before that holds it, as `compare` does (`max_drop` in percentage points for accuracies). `tasks`
    keeps those tasks only; configurations of tasks whose ok cells never measured `metric` are left out."""
    runs = in_time_order(runs)
    if last is not None:
        runs = runs[-last:]
    if tasks:
        present = {str(t) for run in runs for t in run.frame["task"]}
        unknown = [t for t in tasks if t not in present]
        if unknown:
            raise UserError(f"--task: {', '.join(unknown)} not in these results; present: {', '.join(sorted(present))}")
        runs = [Run(run.info, run.frame[run.frame["task"].isin(tasks)]) for run in runs]
    _check(runs, metric, method, alpha, max_drop)
    frames = [_keyed(run.frame) for run in runs]
    per_run = []
    for run, frame in zip(runs, frames):
        try:
            per_run.append(_points(frame, metric))
        except UserError as error:
            raise UserError(f"{run.info.name}: {error}") from None
    steps, bases = [], []
    for k in range(1, len(runs)):
        before, used = _before(k, frames)
        steps.append(
            compare(before, frames[k], metric=metric, max_drop=max_drop, alpha=alpha, method=method, order=order)
        )
        bases.append(used)
    step_rows = [{config_key(row.config): row for row in step.rows} for step in steps]

    configs = {key: config for points in per_run for key, (config, _) in points.items()}
    table = pd.DataFrame.from_records(list(configs.values()))
    table["_key"] = list(configs)
    seen = pd.concat([run.frame for run in reversed(runs)], ignore_index=True)  # the newest run's order first
    table = in_suite_order(table, seen, order)
    measured = {key for points in per_run for key, (_, point) in points.items() if point.n}
    measured_tasks = {configs[key]["task"] for key in measured}
    table = table[table["task"].isin(measured_tasks)].reset_index(drop=True)  # accuracies of a regression task
    trends = []
    for label, (_, row) in zip(_labelled(table), table.iterrows()):
        key = row["_key"]
        found = [points.get(key) for points in per_run]
        compared = [None, *(rows.get(key) for rows in step_rows)]
        trends.append(
            Trend(
                config={column: configs[key][column] for column in CONFIG_COLUMNS},
                label=label,
                points=tuple(None if entry is None else entry[1] for entry in found),
                steps=tuple(compared),
                changes=tuple(_change(step, metric, alpha) for step in compared),
            )
        )
    infos = tuple(run.info for run in runs)
    return History(infos, tuple(trends), tuple(steps), tuple(bases), metric, max_drop, alpha, method)


def history_records(history: History) -> list[dict[str, object]]:
    """One record per configuration and run that holds it, as the long exports write it: the configuration's
    settings, the run's provenance, n, mean and 95% CI half-width over seeds, then the step from the run before
    (delta, its interval, raw and Holm p, compare's verdict; NaN and '' for a first point) and the flag."""
    records: list[dict[str, object]] = []
    for trend in history.trends:
        for i, (run, point, step, change) in enumerate(zip(history.runs, trend.points, trend.steps, trend.changes)):
            if point is None:
                continue
            record: dict[str, object] = {**trend.config, "configuration": trend.label, "metric": history.metric}
            record.update(run=i + 1, date=run.started, commit="+".join(run.commits), file=run.name)
            record.update(n=point.n, mean=point.mean, ci=point.ci, not_ok=point.not_ok)
            record.update(
                {
                    "delta": math.nan if step is None else step.delta,
                    "delta_low": math.nan if step is None else step.ci_low,
                    "delta_high": math.nan if step is None else step.ci_high,
                    "p_raw": math.nan if step is None else step.p_raw,
                    "p_value": math.nan if step is None else step.p_value,
                    "verdict": "" if step is None else step.verdict,
                    "change": change,
                }
            )
            records.append(record)
    return records
