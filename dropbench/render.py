"""Rich tables and exports (markdown, wide CSV, JSON). Rendering only: every number comes from report."""

import io
import json
import math
from dataclasses import dataclass

import pandas as pd
from rich.table import Table
from rich.text import Text

from .report import CONFIG_COLUMNS, config_label

BASELINE_MARK = "◆"
BEST_MARK = "★"
BETTER_MARK = "▲"
WORSE_MARK = "▼"
VARYING = ("layer_keep_rates", "input_keep_rate", "dropout", "train_size", "model")


@dataclass(frozen=True)
class MetricView:
    """How a metric is shown: which column, scaled how, with how many digits, under what name."""

    column: str
    title: str
    scale: float
    digits: int
    signed: bool
    explanation: str

    def format(self, mean: float, half: float) -> str:
        if mean != mean:
            return "—"
        text = f"{mean * self.scale:{'+' if self.signed else ''}.{self.digits}f}"
        return text if half != half else f"{text} ± {half * self.scale:.{self.digits}f}"


VIEWS = {
    "gap_acc": MetricView("gap_acc", "gap_acc (pp)", 100, 1, True,
                          "gap_acc = train acc − test acc in percentage points, eval mode"),
    "gap_loss": MetricView("gap_loss", "gap_loss", 1, 3, True,
                           "gap_loss = test loss − train loss (regression: MSE, standardized target), eval mode"),
    "test_acc": MetricView("test_acc", "test accuracy (%)", 100, 1, False, "test accuracy in percent"),
    "test_error": MetricView("test_error", "test error (%)", 100, 2, False, "test error = 100 − test accuracy, %"),
    "test_loss": MetricView("test_loss", "test loss", 1, 3, False, "test loss (cross-entropy, or MSE)"),
    "test_ece": MetricView("test_ece", "test ECE (%)", 100, 2, False, "expected calibration error, 15 bins, %"),
    "fit_seconds": MetricView("fit_seconds", "fit seconds", 1, 2, False, "training time in seconds"),
}  # fmt: skip


def view_for(metric: str, classification: bool) -> MetricView:
    """'gap' means the gap a task has: gap_acc for classification, gap_loss for regression."""
    if metric == "gap":
        metric = "gap_acc" if classification else "gap_loss"
    return VIEWS[metric]


def keep_label(keep: float) -> str:
    return f"keep {keep:.1f}" if keep in (0.5, 1.0) else f"keep {keep:g}"


def _best_index(task_rows: pd.DataFrame) -> object:
    ok = task_rows[task_rows["n"] > 0]
    if ok.empty:
        return None
    if ok["classification"].iloc[0]:
        return ok["test_acc_mean"].idxmax()
    return ok["test_loss_mean"].idxmin()


def _changes(summary: pd.DataFrame, tests: pd.DataFrame | None) -> pd.Series:
    """The significance mark of each summary row ('' when not significant or not tested)."""
    if tests is None or tests.empty:
        return pd.Series("", index=summary.index)
    marks = {"improvement": BETTER_MARK, "degradation": WORSE_MARK, "": ""}
    keyed = {tuple(r[c] for c in CONFIG_COLUMNS): marks[r["change"]] for _, r in tests.iterrows()}
    return pd.Series([keyed.get(tuple(r[c] for c in CONFIG_COLUMNS), "") for _, r in summary.iterrows()],
                     index=summary.index)  # fmt: skip


@dataclass(frozen=True)
class Grid:
    """One task laid out for display: row labels × keep rates, with each cell's summary row."""

    task: str
    view: MetricView
    classification: bool
    seeds: int
    keep_rates: list[float]
    rows: list[tuple[str, dict[float, pd.Series]]]
    best: object
    marks: pd.Series


def task_grids(summary: pd.DataFrame, metric: str = "gap", tests: pd.DataFrame | None = None) -> list[Grid]:
    marks = _changes(summary, tests)
    grids = []
    for task, task_rows in summary.groupby("task", sort=False):
        classification = bool(task_rows["classification"].iloc[0])
        varying = {c for c in VARYING if task_rows[c].nunique() > 1}
        labels = [config_label(r, varying) for _, r in task_rows.iterrows()]
        rows: dict[str, dict[float, pd.Series]] = {}
        for label, (_, row) in zip(labels, task_rows.iterrows()):
            rows.setdefault(label, {})[row["keep_rate"]] = row
        grids.append(Grid(str(task), view_for(metric, classification), classification, int(task_rows["seeds"].max()),
                          sorted(task_rows["keep_rate"].unique()), list(rows.items()), _best_index(task_rows),
                          marks))  # fmt: skip
    return grids


def _test_figure(row: pd.Series, classification: bool) -> str:
    return f"test {row['test_acc_mean'] * 100:.1f}%" if classification else f"test mse {row['test_loss_mean']:.3f}"


def _cell_parts(grid: Grid, row: pd.Series) -> tuple[str, str, str]:
    """(metric text with its significance mark, test figure, baseline/best marks)."""
    if row["n"] == 0:
        return f"failed ×{row['not_ok']}", "", ""
    value = grid.view.format(row[f"{grid.view.column}_mean"], row[f"{grid.view.column}_ci"])
    mark = grid.marks.get(row.name, "")
    marks = (f" {BASELINE_MARK}" if row["baseline"] else "") + (f" {BEST_MARK}" if row.name == grid.best else "")
    return value + (f" {mark}" if mark else ""), _test_figure(row, grid.classification), marks


def _caption(grid: Grid, tested: bool) -> str:
    best = "accuracy" if grid.classification else "MSE"
    legend = f"{BASELINE_MARK} baseline (none, keep 1.0)  {BEST_MARK} best test {best}"
    if tested:
        legend += f"  {BETTER_MARK}/{WORSE_MARK} significantly better/worse than the baseline (paired, Holm)"
    return f"{grid.view.explanation}\n{legend}"


def _table_rows(grid: Grid) -> list[tuple[str, list[tuple[pd.Series | None, tuple[str, str, str]]]]]:
    """Each row label with, per keep rate, its summary row (None where the grid has no cell) and the
    cell's (value, test figure, marks) text: what every table format shows."""
    rows = []
    for label, by_keep in grid.rows:
        cells = []
        for keep in grid.keep_rates:
            row = by_keep.get(keep)
            cells.append((row, ("", "", "") if row is None else _cell_parts(grid, row)))
        rows.append((label, cells))
    return rows


def _rich_cell(grid: Grid, row: pd.Series | None, parts: tuple[str, str, str]) -> Text | str:
    value, test, marks = parts
    if row is None:
        return ""
    if row["n"] == 0:
        return Text(value, style="red")
    text = Text(value + "\n")
    text.append(test + marks, style="bold green" if row.name == grid.best else "dim")
    if row["not_ok"]:
        text.append(f"\n{row['not_ok']} not ok", style="red")
    return text


def rich_tables(grids: list[Grid], tested: bool = False) -> list[Table]:
    tables = []
    for grid in grids:
        title = f"{grid.task} · {grid.view.title} · mean ± 95% CI over {grid.seeds} seed{'s' * (grid.seeds != 1)}"
        table = Table(title=title, caption=_caption(grid, tested), title_justify="left", caption_justify="left",
                      min_width=len(title))  # rich wraps a title to the table's width  # fmt: skip
        table.add_column("regularizer", style="bold")
        for keep in grid.keep_rates:
            table.add_column(keep_label(keep), justify="right")
        for label, cells in _table_rows(grid):
            table.add_row(label, *(_rich_cell(grid, row, parts) for row, parts in cells))
        tables.append(table)
    return tables


def gap_tables(summary: pd.DataFrame) -> list[Table]:
    """The run's summary tables: the gap of each task, without tests (kept for the library API)."""
    return rich_tables(task_grids(summary))


def markdown(grids: list[Grid], tested: bool = False) -> str:
    """GitHub-flavoured markdown: a heading and a table per task, fit for a CI job summary."""
    out = io.StringIO()
    for grid in grids:
        out.write(f"### {grid.task} · {grid.view.title} · mean ± 95% CI over {grid.seeds} seeds\n\n")
        out.write("| regularizer | " + " | ".join(keep_label(k) for k in grid.keep_rates) + " |\n")
        out.write("|---|" + "---:|" * len(grid.keep_rates) + "\n")
        for label, cells in _table_rows(grid):
            texts = [f"{v}<br>{t}{m}" if t else v for _, (v, t, m) in cells]
            out.write(f"| {label} | " + " | ".join(c.replace("|", "\\|") for c in texts) + " |\n")
        out.write("\n" + _caption(grid, tested).replace("\n", "  \n") + "\n\n")
    return out.getvalue()


def wide_csv(grids: list[Grid]) -> str:
    """One row per task × regularizer (and any other varying setting), one column per keep rate, in the
    metric's display units, with a `± CI` column beside each."""
    records = []
    for grid in grids:
        for label, by_keep in grid.rows:
            first = next(iter(by_keep.values()))
            record = {"task": grid.task, "row": label, **{c: first[c] for c in CONFIG_COLUMNS if c not in ("task",
                      "keep_rate")}, "metric": grid.view.title}  # fmt: skip
            for keep in grid.keep_rates:
                row = by_keep.get(keep)
                mean = row[f"{grid.view.column}_mean"] * grid.view.scale if row is not None else math.nan
                half = row[f"{grid.view.column}_ci"] * grid.view.scale if row is not None else math.nan
                record[f"keep_{keep:g}"] = mean
                record[f"keep_{keep:g}_ci"] = half
            records.append(record)
    return pd.DataFrame.from_records(records).to_csv(index=False, float_format="%.6g")


def as_json(summary: pd.DataFrame, tests: pd.DataFrame | None, metric: str) -> str:
    """Every configuration with its statistics (and its test against the baseline when run)."""

    def clean(value: object) -> object:
        if isinstance(value, float) and value != value:
            return None
        return value.item() if hasattr(value, "item") else value

    merged = summary
    if tests is not None and not tests.empty:
        merged = summary.merge(tests, on=list(CONFIG_COLUMNS), how="left")
    configurations = [{k: clean(v) for k, v in row.items()} for _, row in merged.iterrows()]
    return json.dumps({"metric": metric, "schema": 1, "configurations": configurations}, indent=2) + "\n"
