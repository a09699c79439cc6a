"""`--format csv`: one table for a spreadsheet. By default wide: a row per task × regularizer, a column per keep
rate. With --paired, long: the tests against the baseline, one row per configuration; with --best, the best
configurations; with --tuned, the tuned methods (tuning.tuned_report's columns); with --reference, the
published rows beside ours; for compare, one row per configuration; for history, one row per configuration and
run."""

import math
from dataclasses import asdict

import pandas as pd

from ...catalogue import METRICS
from ...errors import UserError
from ...results import format_value
from ..compare import CompareResult
from ..data import Report
from ..grid import Grid
from ..history import History, history_records
from ..summary import CONFIG_COLUMNS
from ..text import comparison_labels
from . import Exporter, register


@register
class CsvExporter(Exporter):
    name = "csv"
    suffix = ".csv"

    def export(self, report: Report) -> str:
        if report.comparison is not None or report.history is not None:
            raise UserError(
                "--format csv holds one table: drop --compare and --history (compare and history have csv of their own)"
            )
        if report.best is not None:
            return csv_text(report.best)
        if report.tuned is not None:
            return csv_text(report.tuned)
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

    def export_history(self, history: History) -> str:
        """Long: one row per configuration and run, in the metric's own units (fractions for accuracies, as the
        results files hold them): the run's provenance, n, mean and 95% CI half-width over seeds, then the step
        from the run before (delta, its interval, raw and Holm p, compare's verdict) and the flag (`change`)."""
        records = history_records(history)
        return csv_text(pd.DataFrame.from_records(records))


def wide_csv(grids: list[Grid]) -> str:
    """`wide_frame` as CSV text for a spreadsheet."""
    return csv_text(wide_frame(grids))


def wide_frame(grids: list[Grid]) -> pd.DataFrame:
    """One row per task × regularizer (and any other varying setting), columns per keep rate, in display units
    (named in `metric` and `test_figure`): `keep_0.5` the metric's mean over seeds and `keep_0.5_ci` its 95% CI
    half-width, `keep_0.5_seeds` the seeds behind them (ok cells), and `keep_0.5_test` the test figure (accuracy
    in %, or loss for regression) with its 95% CI from `keep_0.5_test_low` to `keep_0.5_test_high`."""
    records = []
    for grid in grids:
        test = METRICS["test_acc" if grid.classification else "test_loss"]
        for label, by_keep in grid.rows:
            first = next(iter(by_keep.values()))
            record = {
                "task": grid.task,
                "row": label,
                **{c: first[c] for c in CONFIG_COLUMNS if c not in ("task", "keep_rate")},
                "metric": grid.view.title,
                "test_figure": test.title,
            }
            for keep in grid.keep_rates:
                row = by_keep.get(keep)
                figures = _figures(row, grid.view.name, grid.view.scale) + _figures(row, test.name, test.scale)
                mean, half, test_mean, test_half = figures
                record.update(
                    {
                        f"keep_{keep:g}": mean,
                        f"keep_{keep:g}_ci": half,
                        f"keep_{keep:g}_seeds": math.nan if row is None else int(row["n"]),
                        f"keep_{keep:g}_test": test_mean,
                        f"keep_{keep:g}_test_low": test_mean - test_half,
                        f"keep_{keep:g}_test_high": test_mean + test_half,
                    }
                )
            records.append(record)
    return pd.DataFrame.from_records(records)


def _figures(row: pd.Series | None, metric: str, scale: float) -> tuple[float, float]:
    """(mean, CI half-width) of `metric` in display units; NaN where the grid has no cell."""
    if row is None:
        return math.nan, math.nan
    return row[f"{metric}_mean"] * scale, row[f"{metric}_ci"] * scale


def csv_text(frame: pd.DataFrame) -> str:
    """A CSV export for spreadsheets: text cells escaped by the results files' rule (a task named '=1+1' is
    written as text, not as a formula), numbers to 6 significant digits."""
    safe = frame.copy()
    for column in safe.columns:
        if not pd.api.types.is_numeric_dtype(safe[column]):
            safe[column] = safe[column].map(lambda v: format_value(v) if isinstance(v, str) else v)
    return safe.to_csv(index=False, float_format="%.6g")
