"""Rich tables and exports (markdown, wide CSV, JSON). Rendering only: every number comes from report."""

import io
import json
import math
from dataclasses import dataclass

import pandas as pd
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..catalogue import Metric, metric_for
from ..results import format_value
from .labels import config_label, keep_label, varying
from .stats import TEST_NAMES
from .summary import CONFIG_COLUMNS

BASELINE_MARK = "◆"
BEST_MARK = "★"
BETTER_MARK = "▲"
WORSE_MARK = "▼"


def _best_index(task_rows: pd.DataFrame) -> object:
    chosen = task_rows.index[task_rows["best"]]
    return chosen[0] if len(chosen) else None


@dataclass(frozen=True)
class TestNote:
    """What made a task's marks: the test, the pairs it had, the Holm family and the smallest p it could give."""

    method: str
    pairs: int
    family: int
    min_p: float
    alpha: float

    def legend(self, better: str, worse: str, *, pointer: bool = True) -> str:
        text = (
            f"{BETTER_MARK}/{WORSE_MARK} {better}/{worse} than the baseline: {TEST_NAMES[self.method]} of "
            f"the paired differences over {self.pairs} seeds, Holm across {self.family} comparisons, "
            f"α = {self.alpha:g}"
        )
        if self.min_p * self.family >= self.alpha:  # fmt: skip
            text += (f"; at {self.pairs} seeds no mark is possible (smallest p {self.min_p:.3g}, times {self.family}): "
                     "run more seeds")  # fmt: skip
        return text + (". Paired differences: dropbench report --paired" if pointer else ".")


def _test_note(tests: pd.DataFrame | None, task: str, alpha: float) -> TestNote | None:
    if tests is None or tests.empty or "family" not in tests:
        return None
    rows = tests[tests["task"] == task]
    if rows.empty:
        return None
    return TestNote(str(rows["method"].iloc[0]), int(rows["pairs"].min()), int(rows["family"].max()),
                    float(rows["min_p"].max()), alpha)  # fmt: skip


def _paired_by_row(summary: pd.DataFrame, tests: pd.DataFrame | None) -> dict[object, pd.Series]:
    """Each summary row's test against its baseline (rows without one are absent)."""
    if tests is None or tests.empty:
        return {}
    keyed = {tuple(r[c] for c in CONFIG_COLUMNS): r for _, r in tests.iterrows()}
    found = {index: keyed.get(tuple(r[c] for c in CONFIG_COLUMNS)) for index, r in summary.iterrows()}
    return {index: test for index, test in found.items() if test is not None}


MARKS = {"improvement": BETTER_MARK, "degradation": WORSE_MARK, "": ""}


@dataclass(frozen=True)
class Grid:
    """One task laid out for display: row labels × keep rates, with each cell's summary row."""

    task: str
    view: Metric
    classification: bool
    seeds: int
    keep_rates: list[float]
    rows: list[tuple[str, dict[float, pd.Series]]]
    best: object
    paired: dict[object, pd.Series]  # summary row index -> its test against the baseline
    test_note: TestNote | None = None

    def mark(self, index: object) -> str:
        test = self.paired.get(index)
        return "" if test is None else MARKS[test["change"]]


def task_grids(
    summary: pd.DataFrame, metric: str = "gap", tests: pd.DataFrame | None = None, alpha: float = 0.05
) -> list[Grid]:
    paired = _paired_by_row(summary, tests)
    grids = []
    for task, task_rows in summary.groupby("task", sort=False):
        classification = bool(task_rows["classification"].iloc[0])
        differs = varying(task_rows)
        labels = [config_label(r, differs) for _, r in task_rows.iterrows()]
        rows: dict[str, dict[float, pd.Series]] = {}
        for label, (_, row) in zip(labels, task_rows.iterrows()):
            rows.setdefault(label, {})[row["keep_rate"]] = row
        grids.append(Grid(str(task), metric_for(metric, classification), classification, int(task_rows["seeds"].max()),
                          sorted(task_rows["keep_rate"].unique()), list(rows.items()), _best_index(task_rows),
                          {i: paired[i] for i in task_rows.index if i in paired},
                          _test_note(tests, str(task), alpha)))  # fmt: skip
    return grids


def _test_figure(row: pd.Series, classification: bool) -> str:
    return f"test {row['test_acc_mean'] * 100:.1f}%" if classification else f"test mse {row['test_loss_mean']:.3f}"


def _cell_parts(grid: Grid, row: pd.Series) -> tuple[str, str, str]:
    """(metric text with its significance mark, test figure, baseline/best marks)."""
    if row["n"] == 0:
        return f"failed ×{row['not_ok']}", "", ""
    value = grid.view.format(row[f"{grid.view.name}_mean"], row[f"{grid.view.name}_ci"])
    mark = grid.mark(row.name)
    marks = (f" {BASELINE_MARK}" if row["baseline"] else "") + (f" {BEST_MARK}" if row.name == grid.best else "")
    return value + (f" {mark}" if mark else ""), _test_figure(row, grid.classification), marks


SEEDS_COVER = (
    "± and marks are over seeds (initialization, batch order, dropout masks) on one fixed split: they "
    "say nothing of other splits or data (Bouthillier et al. 2021)"
)


def _caption(grid: Grid, tested: bool) -> str:
    figure = "accuracy" if grid.classification else "loss"
    lines = [grid.view.explanation,
             f"{BASELINE_MARK} baseline (none, keep 1.0)  {BEST_MARK} chosen on mean validation {figure}; "
             "its test figure is shown"]  # fmt: skip
    if tested and grid.test_note is not None:
        higher_better = grid.view.higher_is_better
        better, worse = ("significantly higher", "lower") if higher_better else ("significantly lower", "higher")
        lines.append(grid.test_note.legend(better, worse))
    lines.append(SEEDS_COVER)
    return "\n".join(lines)


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


def rich_tables(grids: list[Grid], tested: bool = False) -> list[Group]:
    """Per task its table, then its legend as text: a caption would wrap to the table's narrow width."""
    tables = []
    for grid in grids:
        title = f"{grid.task} · {grid.view.title} · mean ± 95% CI over {grid.seeds} seed{'s' * (grid.seeds != 1)}"
        table = Table(title=title, title_justify="left", min_width=len(title))  # a title wraps to the table's width
        table.add_column("regularizer", style="bold")
        for keep in grid.keep_rates:
            table.add_column(keep_label(keep), justify="right")
        for label, cells in _table_rows(grid):
            table.add_row(label, *(_rich_cell(grid, row, parts) for row, parts in cells))
        tables.append(Group(table, Text(_caption(grid, tested), style="dim")))
    return tables


def paired_lines(grid: Grid) -> list[list[str]]:
    """Per tested configuration: label, keep rate, mean paired difference to the baseline with its 95%
    t-interval, raw and Holm-adjusted p, and the mark: the numbers behind every ▲/▼."""
    view, lines = grid.view, []
    for label, by_keep in grid.rows:
        for keep, row in sorted(by_keep.items()):
            test = grid.paired.get(row.name)
            if test is None:
                continue
            delta = f"{test['delta'] * view.scale:+.{view.digits}f}"
            low, high = (f"{test[c] * view.scale:+.{view.digits}f}" for c in ("delta_low", "delta_high"))
            interval = f"[{low}, {high}]" if test["delta_low"] == test["delta_low"] else "—"
            p_raw = "—" if test["p_raw"] != test["p_raw"] else f"{test['p_raw']:.3g}"
            p_holm = "—" if test["p_value"] != test["p_value"] else f"{test['p_value']:.3g}"
            lines.append([label, keep_label(keep), delta, interval, p_raw, p_holm, str(int(test["pairs"])),
                          MARKS[test["change"]]])  # fmt: skip
    return lines


PAIRED_HEADERS = ("configuration", "keep", "Δ vs baseline", "95% CI of Δ", "p", "p (Holm)", "pairs", "mark")


def paired_tables(grids: list[Grid]) -> list[Table]:
    """One table per task of the paired differences behind the marks."""
    tables = []
    for grid in grids:
        lines = paired_lines(grid)
        if not lines:
            continue
        note = grid.test_note
        title = f"{grid.task} · {grid.view.title} · configuration − baseline, paired by seed"
        caption = note.legend("better", "worse", pointer=False) if note else ""
        table = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
        for header in PAIRED_HEADERS:
            table.add_column(header, justify="left" if header == "configuration" else "right")
        for line in lines:
            table.add_row(*line)
        tables.append(table)
    return tables


def paired_markdown(grids: list[Grid]) -> str:
    """The paired differences of every task as markdown tables."""
    out = io.StringIO()
    for grid in grids:
        lines = paired_lines(grid)
        if not lines:
            continue
        out.write(f"#### {grid.task} · {grid.view.title} · configuration − baseline, paired by seed\n\n")
        out.write("| " + " | ".join(PAIRED_HEADERS) + " |\n|---|" + "---:|" * (len(PAIRED_HEADERS) - 1) + "\n")
        for line in lines:
            out.write("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |\n")
        if grid.test_note:
            out.write("\n" + grid.test_note.legend("better", "worse", pointer=False) + "\n")
        out.write("\n")
    return out.getvalue()


def gap_tables(summary: pd.DataFrame) -> list[Group]:
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
                mean = row[f"{grid.view.name}_mean"] * grid.view.scale if row is not None else math.nan
                half = row[f"{grid.view.name}_ci"] * grid.view.scale if row is not None else math.nan
                record[f"keep_{keep:g}"] = mean
                record[f"keep_{keep:g}_ci"] = half
            records.append(record)
    return csv_text(pd.DataFrame.from_records(records))


def csv_text(frame: pd.DataFrame) -> str:
    """A CSV export for spreadsheets: text cells escaped by the results files' rule (a task named '=1+1' is
    written as text, not as a formula), numbers to 6 significant digits."""
    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):
            safe[column] = safe[column].map(lambda v: format_value(v) if isinstance(v, str) else v)
    return safe.to_csv(index=False, float_format="%.6g")


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


# ---------------------------------------------------------------- report --best

BEST_HEADERS = ("task", "configuration", "chosen on", "test figure (95% CI)", "gain over baseline (95% CI)",
                "p (Holm)", "seeds")  # fmt: skip
BEST_LEGEND = ("Chosen on the mean validation figure over seeds; the test split only reports the choice. Gain: "
               "paired test-figure difference to the baseline, Holm across the task's configurations.")  # fmt: skip


def best_lines(best: pd.DataFrame) -> list[list[str]]:
    """report --best as text cells: accuracies in percent (gains in points), losses as they are."""
    lines = []
    for _, row in best.iterrows():
        percent = row["test_metric"] == "test_acc"
        scale, unit, sign = (100, "%", " pp") if percent else (1, "", "")
        figure = f"{row['test_mean'] * scale:.2f}{unit}" + (
            f" ± {row['test_ci'] * scale:.2f}" if row["test_ci"] == row["test_ci"] else ""
        )
        if row["gain"] != row["gain"]:
            gain, p = "it is the baseline", ""
        else:
            low, high = (f"{row[c] * scale:+.2f}" for c in ("gain_low", "gain_high"))
            interval = f" [{low}, {high}]" if row["gain_low"] == row["gain_low"] else ""
            gain = f"{row['gain'] * scale:+.2f}{sign}{interval}"
            p = "—" if row["p_value"] != row["p_value"] else f"{row['p_value']:.3g}"
        chosen = f"{row['chosen_on']} {row['val_mean'] * scale:.2f}{unit}"
        lines.append([str(row["task"]), row["configuration"], chosen, figure, gain, p, str(row["seeds"])])
    return lines


def best_table(best: pd.DataFrame) -> Table:
    table = Table(title="best configuration per task, chosen on validation", caption=BEST_LEGEND,
                  title_justify="left", caption_justify="left")  # fmt: skip
    for header in BEST_HEADERS:
        table.add_column(header)
    for line in best_lines(best):
        table.add_row(*line)
    return table


def best_markdown(best: pd.DataFrame) -> str:
    out = ["### best configuration per task, chosen on validation\n", "| " + " | ".join(BEST_HEADERS) + " |",
           "|---|---|---|---:|---:|---:|---:|"]  # fmt: skip
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in best_lines(best)]
    return "\n".join(out) + f"\n\n{BEST_LEGEND}\n"


def frame_json(frame: pd.DataFrame, kind: str) -> str:
    """A frame as {"kind": ..., "rows": [...]} with NaN as null."""
    rows = json.loads(frame.to_json(orient="records"))
    return json.dumps({"kind": kind, "schema": 1, "rows": rows}, indent=2) + "\n"
