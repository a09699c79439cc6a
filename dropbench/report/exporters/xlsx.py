"""`--format xlsx` (with `--out FILE.xlsx`): a workbook, one sheet per table, every figure a number.

A report gives one sheet per task (a row per configuration and, per keep rate, the metric's mean over seeds, its
95% CI as low and high bounds in columns of their own, the seeds, the test figure with its bounds, the marks),
then `tests` (each configuration's paired test against its baseline, as `report --paired` shows it), `summary`
(every statistic of every configuration) and `legend` (the captions); --best, --tuned and --reference give their
table, and failed cells a sheet of their own. A comparison gives `comparison` and `verdict`; a history
(`dropbench history`) gives `history` (a row per configuration and run: its point and its step from the run
before, with the flag), `runs` (each run's provenance), `verdict` and `legend`. A report with --compare or
--history holds their sheets after its own (`comparison`, `compare verdict`, ...; `history`, `history runs`,
...). Comparisons and histories keep the metric's own units, as compare's statistics and the results files do
(fractions for accuracies). Header rows and label columns are frozen.

An xlsx types every cell, so text stays text ('0.8/0.5', '=cmd' included) with no escaping, and figures are
numbers in the units the sheet's header names. openpyxl writes it (pip install 'dropbench[xlsx]').
"""

import io
import math
import re
from dataclasses import asdict
from typing import TYPE_CHECKING

import pandas as pd

from ...catalogue import METRICS
from ...errors import UserError
from ..compare import CompareResult
from ..data import Report
from ..grid import BASELINE_MARK, BEST_MARK, Grid, caption
from ..history import History, history_records
from ..summary import CONFIG_COLUMNS
from ..text import (
    BEST_LEGEND,
    RUN_HEADERS,
    comparison_labels,
    history_legend,
    history_summary,
    history_title,
    run_lines,
    tuned_legend,
    tuned_tasks,
    verdict_summary,
)
from . import Exporter, register

if TYPE_CHECKING:
    from openpyxl import Workbook

Sheet = tuple[str, pd.DataFrame]
SHEET_NAME_CHARS = 31  # Excel's limit
_NOT_IN_SHEET_NAMES = re.compile(r"[\[\]:*?/\\]")


@register
class XlsxExporter(Exporter):
    name = "xlsx"
    suffix = ".xlsx"
    binary = True

    def export(self, report: Report) -> bytes:
        return workbook_bytes(report_sheets(report))

    def export_comparison(self, result: CompareResult) -> bytes:
        return workbook_bytes(comparison_sheets(result))

    def export_history(self, history: History) -> bytes:
        return workbook_bytes(history_sheets(history))


def comparison_sheets(result: CompareResult, prefix: str = "") -> list[Sheet]:
    """`comparison` (a row per configuration), `verdict` and, where cells are on one side only, those cells."""
    rows = [{"configuration": label, **asdict(row)} for label, row in zip(comparison_labels(result), result.rows)]
    verdict = {
        "verdict": result.verdict,
        "exit_code": result.exit_code,
        "summary": verdict_summary(result),
        "metric": result.metric,
        "max_drop": result.max_drop,
        "alpha": result.alpha,
        "test": result.method,
        "cells only in base": len(result.missing_in_new),
        "cells only in new": len(result.missing_in_base),
    }
    missing = [("base", cell) for cell in result.missing_in_new] + [("new", c) for c in result.missing_in_base]
    sheets = [
        ("comparison", pd.DataFrame.from_records(rows)),
        (f"{prefix}verdict", _fields(verdict)),
    ]
    if missing:
        sheets.append((f"{prefix}cells on one side", pd.DataFrame(missing, columns=["only in", "cell"])))
    return sheets


def _config_keys(record: dict[str, object]) -> list[str]:
    """A history record's configuration settings: the keys before its label (history_records puts them first)."""
    keys = list(record)
    return keys[: keys.index("configuration")]


def _history_row(record: dict[str, object], config: list[str]) -> dict[str, object]:
    """A history record under the sheet's headers: the label first, the interval as its two bounds."""
    mean, ci = float(record["mean"]), float(record["ci"])  # type: ignore[arg-type]
    row: dict[str, object] = {"configuration": record["configuration"], **{key: record[key] for key in config}}
    row.update({key: record[key] for key in ("run", "date", "commit", "file", "metric")})
    row.update({"seeds": record["n"], "mean": mean, "95% CI low": mean - ci, "95% CI high": mean + ci})
    row["not ok"] = record["not_ok"]
    row.update(
        {
            "delta": record["delta"],
            "delta 95% CI low": record["delta_low"],
            "delta 95% CI high": record["delta_high"],
            "p_raw": record["p_raw"],
            "p (Holm)": record["p_value"],
            "verdict": record["verdict"],
            "change": record["change"],
        }
    )
    return row


def history_sheets(history: History, prefix: str = "") -> list[Sheet]:
    """`history` (a row per configuration and run that holds it: the run's point, then its step from the run
    before with compare's verdict and the flag), `runs` (RUN_HEADERS, as every format lists them), `verdict` (the
    newest step's) and `legend` (the titles and what the flags mean)."""
    records = [_history_row(record, _config_keys(record)) for record in history_records(history)]
    verdict = {
        "verdict": history.verdict,
        "exit_code": history.exit_code,
        "summary": history_summary(history),
        "metric": history.metric,
        "max_drop": history.max_drop,
        "alpha": history.alpha,
        "test": history.method,
        "runs": len(history.runs),
    }
    legend = [(task, history_title(history, task)) for task in history.tasks()]
    legend.append(("", history_legend(history)))
    return [
        ("history", pd.DataFrame.from_records(records)),
        (f"{prefix}runs", pd.DataFrame(run_lines(history.runs), columns=list(RUN_HEADERS))),
        (f"{prefix}verdict", _fields(verdict)),
        (f"{prefix}legend", pd.DataFrame(legend, columns=["task", "legend"])),
    ]


def _fields(values: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame({"field": list(values), "value": list(values.values())})


def report_sheets(report: Report) -> list[Sheet]:
    """The report's tables, each with its sheet's name, and a `legend` sheet: what the other sheets' figures and
    marks mean, in the words every format uses; then the sheets of --compare and --history, where given."""
    verdicts = []
    if report.comparison is not None:
        verdicts += comparison_sheets(report.comparison, "compare ")
    if report.history is not None:
        verdicts += history_sheets(report.history, "history ")
    return [*_own_sheets(report), *verdicts]


def _own_sheets(report: Report) -> list[Sheet]:
    if report.best is not None:
        return [("best", report.best), _legend([("", BEST_LEGEND)])]
    if report.tuned is not None:
        legends = [(str(task), tuned_legend(rows)) for task, rows in tuned_tasks(report.tuned)]
        return [("tuned", report.tuned), _legend(legends)]
    sheets = [(grid.task, grid_frame(grid)) for grid in report.grids]
    if not report.tests.empty:
        sheets.append(("tests", report.tests))
    sheets.append(("summary", report.summary))
    if report.reference is not None:
        sheets.append((report.reference.name, report.reference.rows))
    if not report.failed.empty:
        sheets.append(("failed cells", report.failed))
    lines = [(grid.task, line) for grid in report.grids for line in [grid.title, *caption(grid).splitlines()]]
    return [*sheets, _legend(lines)]


def _legend(lines: list[tuple[str, str]]) -> Sheet:
    return "legend", pd.DataFrame(lines, columns=["task", "legend"])


def grid_frame(grid: Grid) -> pd.DataFrame:
    """A task's table: its row labels and, per keep rate, the figures the terminal shows, as numbers in display
    units (named in the headers), the interval as its bounds, and the marks as text."""
    test = METRICS["test_acc" if grid.classification else "test_loss"]
    metric, scale = grid.view.name, grid.view.scale
    records = []
    for label, by_keep in grid.rows:
        first = next(iter(by_keep.values()))
        record: dict[str, object] = {"configuration": label}
        record.update({c: first[c] for c in CONFIG_COLUMNS if c not in ("task", "keep_rate")})
        for keep in grid.keep_rates:
            row = by_keep.get(keep)
            mean, half = _figure(row, metric, scale)
            test_mean, test_half = _figure(row, test.name, test.scale)
            head = f"keep {keep:g}"
            record.update(
                {
                    f"{head} {grid.view.title}": mean,
                    f"{head} 95% CI low": mean - half,
                    f"{head} 95% CI high": mean + half,
                    f"{head} seeds": math.nan if row is None else int(row["n"]),
                    f"{head} {test.title}": test_mean,
                    f"{head} test 95% CI low": test_mean - test_half,
                    f"{head} test 95% CI high": test_mean + test_half,
                    f"{head} marks": "" if row is None else _marks(grid, row),
                }
            )
        records.append(record)
    return pd.DataFrame.from_records(records)


def _figure(row: pd.Series | None, metric: str, scale: float) -> tuple[float, float]:
    """(mean, CI half-width) of `metric` in display units; NaN where the grid has no cell."""
    if row is None:
        return math.nan, math.nan
    return row[f"{metric}_mean"] * scale, row[f"{metric}_ci"] * scale


def _marks(grid: Grid, row: pd.Series) -> str:
    """The cell's significance mark, ◆ for the baseline and ★ for the configuration chosen on validation."""
    marks = [grid.mark(row.name), BASELINE_MARK if row["baseline"] else "", BEST_MARK if row.name == grid.best else ""]
    return " ".join(mark for mark in marks if mark)


def workbook_bytes(sheets: list[Sheet]) -> bytes:
    """The sheets as one xlsx file."""
    try:
        from openpyxl import Workbook
    except ImportError:
        raise UserError("--format xlsx needs openpyxl: pip install 'dropbench[xlsx]'") from None
    book = Workbook()
    book.remove(book.active)
    used: set[str] = set()
    for name, frame in sheets:
        _add_sheet(book, _sheet_name(name, used), frame)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def _sheet_name(name: str, used: set[str]) -> str:
    """A name Excel takes (31 characters, none of []:*?/\\) that no other sheet of the workbook has."""
    base = _NOT_IN_SHEET_NAMES.sub("-", name)[:SHEET_NAME_CHARS] or "sheet"
    candidate, copy = base, 1
    while candidate.lower() in used:
        copy += 1
        suffix = f" ({copy})"
        candidate = base[: SHEET_NAME_CHARS - len(suffix)] + suffix
    used.add(candidate.lower())
    return candidate


def _add_sheet(book: "Workbook", name: str, frame: pd.DataFrame) -> None:
    from openpyxl.styles import Font

    sheet = book.create_sheet(name)
    sheet.append([str(column) for column in frame.columns])
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for values in frame.itertuples(index=False):
        sheet.append([_cell(value) for value in values])
        for cell in sheet[sheet.max_row]:
            if isinstance(cell.value, str) and cell.value.startswith("="):
                cell.data_type = "s"  # text, never a formula: openpyxl takes a leading '=' for one
    # The header row and the first (label) column stay in view while scrolling.
    sheet.freeze_panes = "B2"
    for index, column in enumerate(frame.columns, start=1):
        sheet.column_dimensions[sheet.cell(1, index).column_letter].width = min(max(10, len(str(column)) + 2), 40)


def _cell(value: object) -> object:
    """A value as a cell holds it: numbers as numbers (NaN and NA as empty cells), text as text."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()  # numpy scalars
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)
