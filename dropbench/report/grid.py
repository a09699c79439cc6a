"""A summary laid out per task for display (row labels × keep rates, with marks), and the text of its cells that
every format shows. Rendering only: every number comes from the summary and the tests."""

from dataclasses import dataclass

import pandas as pd

from ..catalogue import Metric, metric_for
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
        if self.min_p * self.family >= self.alpha:
            text += (
                f"; at {self.pairs} seeds no mark is possible (smallest p {self.min_p:.3g}, times {self.family}): "
                "run more seeds"
            )
        return text + (". Paired differences: dropbench report --paired" if pointer else ".")


def _test_note(tests: pd.DataFrame | None, task: str, alpha: float) -> TestNote | None:
    if tests is None or tests.empty or "family" not in tests:
        return None
    rows = tests[tests["task"] == task]
    if rows.empty:
        return None
    return TestNote(
        str(rows["method"].iloc[0]),
        int(rows["pairs"].min()),
        int(rows["family"].max()),
        float(rows["min_p"].max()),
        alpha,
    )


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

    @property
    def title(self) -> str:
        return f"{self.task} · {self.view.title} · mean ± 95% CI over {self.seeds} seed{'s' * (self.seeds != 1)}"

    @property
    def paired_title(self) -> str:
        return f"{self.task} · {self.view.title} · configuration − baseline, paired by seed"


def task_grids(
    summary: pd.DataFrame, metric: str = "gap", tests: pd.DataFrame | None = None, alpha: float = 0.05
) -> list[Grid]:
    """Per task (in the summary's order) its grid; with `tests`, each cell's mark and the task's test note."""
    paired = _paired_by_row(summary, tests)
    grids = []
    for task, task_rows in summary.groupby("task", sort=False):
        classification = bool(task_rows["classification"].iloc[0])
        differs = varying(task_rows)
        labels = [config_label(r, differs) for _, r in task_rows.iterrows()]
        rows: dict[str, dict[float, pd.Series]] = {}
        for label, (_, row) in zip(labels, task_rows.iterrows()):
            rows.setdefault(label, {})[row["keep_rate"]] = row
        grids.append(
            Grid(
                str(task),
                metric_for(metric, classification),
                classification,
                int(task_rows["seeds"].max()),
                sorted(task_rows["keep_rate"].unique()),
                list(rows.items()),
                _best_index(task_rows),
                {i: paired[i] for i in task_rows.index if i in paired},
                _test_note(tests, str(task), alpha),
            )
        )
    return grids


def _test_figure(row: pd.Series, classification: bool) -> str:
    return f"test {row['test_acc_mean'] * 100:.1f}%" if classification else f"test mse {row['test_loss_mean']:.3f}"


def cell_parts(grid: Grid, row: pd.Series) -> tuple[str, str, str]:
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


def caption(grid: Grid) -> str:
    figure = "accuracy" if grid.classification else "loss"
    lines = [
        grid.view.explanation,
        f"{BASELINE_MARK} baseline (none, keep 1.0)  {BEST_MARK} chosen on mean validation {figure}; "
        "its test figure is shown",
    ]
    if grid.test_note is not None:
        higher_better = grid.view.higher_is_better
        better, worse = ("significantly higher", "lower") if higher_better else ("significantly lower", "higher")
        lines.append(grid.test_note.legend(better, worse))
    lines.append(SEEDS_COVER)
    return "\n".join(lines)


def table_rows(grid: Grid) -> list[tuple[str, list[tuple[pd.Series | None, tuple[str, str, str]]]]]:
    """Each row label with, per keep rate, its summary row (None where the grid has no cell) and the
    cell's (value, test figure, marks) text: what every table format shows."""
    rows = []
    for label, by_keep in grid.rows:
        cells = []
        for keep in grid.keep_rates:
            row = by_keep.get(keep)
            cells.append((row, ("", "", "") if row is None else cell_parts(grid, row)))
        rows.append((label, cells))
    return rows


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
            lines.append(
                [
                    label,
                    keep_label(keep),
                    delta,
                    interval,
                    p_raw,
                    p_holm,
                    str(int(test["pairs"])),
                    MARKS[test["change"]],
                ]
            )
    return lines


PAIRED_HEADERS = ("configuration", "keep", "Δ vs baseline", "95% CI of Δ", "p", "p (Holm)", "pairs", "mark")
