"""`--format csv`: one table for a spreadsheet. By default wide: a row per task × regularizer, a column per keep
rate. With --paired, long: the tests against the baseline, one row per configuration; with --best, the best
configurations; with --reference, the published rows beside ours; for compare, one row per configuration."""

import math
from dataclasses import asdict

import pandas as pd

from ...errors import UserError
from ...results import format_value
from ..compare import CompareResult
from ..data import Report
from ..grid import Grid
from ..summary import CONFIG_COLUMNS
from ..text import comparison_labels
from . import Exporter, register


@register
class CsvExporter(Exporter):
    name = "csv"
    suffix = ".csv"

    def export(self, report: Report) -> str:
        if report.best is not None:
            return csv_text(report.best)
        if report.paired and report.reference is not None:
            raise UserError("--format csv holds one table: ask for --paired or --reference, not both")
        if report.paired:
            return csv_text(report.tests)
        if report.reference is not None:
            return csv_text(report.reference.rows)
        return wide_csv(report.grids)

    def export_comparison(self, result: CompareResult) -> str:
        """Every compared configuration: its label, then the comparison's fields (the verdict among them)."""
        rows = [{"configuration": label, **asdict(row)} for label, row in zip(comparison_labels(result), result.rows)]
        return csv_text(pd.DataFrame.from_records(rows))


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
