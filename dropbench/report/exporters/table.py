"""`--format table`: rich tables on the terminal (the default), with colours and marks."""

import pandas as pd
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..compare import CompareResult
from ..data import ReferenceRows, Report
from ..grid import BETTER_MARK, PAIRED_HEADERS, WORSE_MARK, Grid, caption, paired_lines, table_rows, task_grids
from ..history import History
from ..labels import cell_label, keep_label
from ..text import (
    BEST_HEADERS,
    BEST_LEGEND,
    REFERENCE_HEADERS,
    REFERENCE_LEGEND,
    RUN_HEADERS,
    TUNED_HEADERS,
    best_lines,
    comparison_columns,
    comparison_lines,
    history_columns,
    history_legend,
    history_lines,
    history_summary,
    history_title,
    missing_lines,
    reference_lines,
    reference_title,
    run_lines,
    tuned_legend,
    tuned_lines,
    tuned_tasks,
    tuned_title,
    units,
    verdict_summary,
)
from . import Exporter, register

FAILED_LISTED = 20  # failed or diverged cells listed below the tables
VERDICT_STYLES = {
    "regression": "bold red",
    "improvement": "green",
    "inconclusive": "yellow",
    "no change": "",
    "not comparable": "bold yellow",
    "no regression": "bold green",
}


@register
class TableExporter(Exporter):
    name = "table"
    suffix = ".txt"

    def export(self, report: Report) -> RenderableType:
        """Per task its table and legend, then the paired differences (with `paired`), the cells not ok and the
        published numbers (with a reference); with `best`, only the table of the best configurations."""
        parts: list[RenderableType] = []
        if report.best is not None:
            parts.append(best_table(report.best))
        elif report.tuned is not None:
            for _, rows in tuned_tasks(report.tuned):
                parts += [tuned_table(rows), Text("")]
            parts += failed_lines(report.failed)
        else:
            for table in grid_tables(report.grids) + (paired_tables(report.grids) if report.paired else []):
                parts += [table, Text("")]
            parts += failed_lines(report.failed)
            if report.reference is not None:
                parts.append(reference_table(report.reference))
        # The verdicts last, as compare and history end: their verdict line is what a CI log shows.
        if report.comparison is not None:
            parts += [Text(""), self.export_comparison(report.comparison)]
        if report.history is not None:
            parts += [Text(""), self.export_history(report.history)]
        return parts[0] if len(parts) == 1 else Group(*parts)

    def export_comparison(self, result: CompareResult) -> RenderableType:
        """Each configuration's delta with its CI and verdict, the cells missing on either side, and the verdict
        of the whole comparison with its exit code."""
        _, unit = units(result)
        parts: list[RenderableType] = []
        if result.rows:
            table = Table(
                title=f"compare · {result.metric} (new − base) · max drop {result.max_drop:g}{unit} · "
                f"alpha {result.alpha:g}",
                title_justify="left",
            )
            for column in comparison_columns(result):
                table.add_column(column)
            for line in comparison_lines(result):
                table.add_row(*line[:-1], Text(line[-1], style=VERDICT_STYLES[line[-1]]))
            parts.append(table)
        parts += [Text(line) for line in missing_lines(result)]
        verdict = Text(f"Verdict: {result.verdict}", style=VERDICT_STYLES[result.verdict])
        parts.append(verdict + Text(f" — {verdict_summary(result)}"))
        return Group(*parts)

    def export_history(self, history: History) -> RenderableType:
        """Per task its trends (a column per run), the legend, the runs' provenance, and the newest step's verdict
        with its exit code."""
        parts: list[RenderableType] = []
        for task in history.tasks():
            table = Table(title=history_title(history, task), title_justify="left")
            for i, column in enumerate(history_columns(history)):
                table.add_column(column, justify="left" if i == 0 else "right")
            for line in history_lines(history, task):
                table.add_row(line[0], *(_flagged(cell) for cell in line[1:]))
            parts += [table, Text("")]
        parts.append(Text(history_legend(history), style="dim"))
        runs = Table(title="runs, oldest first", title_justify="left")
        for column in RUN_HEADERS:
            runs.add_column(column)
        for line in run_lines(history.runs):
            runs.add_row(*line)
        parts += [Text(""), runs]
        verdict = Text(f"Verdict: {history.verdict}", style=VERDICT_STYLES[history.verdict])
        parts.append(verdict + Text(f" — {history_summary(history)}"))
        return Group(*parts)


def _flagged(cell: str) -> Text:
    """A history cell, its flag coloured: ▲ (better) green, ▼ (worse) red."""
    style = "green" if BETTER_MARK in cell else "red" if WORSE_MARK in cell else ""
    return Text(cell, style=style)


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


def grid_tables(grids: list[Grid]) -> list[Group]:
    """Per task its table, then its legend as text: a caption would wrap to the table's narrow width."""
    tables = []
    for grid in grids:
        title = grid.title
        table = Table(title=title, title_justify="left", min_width=len(title))  # a title wraps to the table's width
        table.add_column("regularizer", style="bold")
        for keep in grid.keep_rates:
            table.add_column(keep_label(keep), justify="right")
        for label, cells in table_rows(grid):
            table.add_row(label, *(_rich_cell(grid, row, parts) for row, parts in cells))
        tables.append(Group(table, Text(caption(grid), style="dim")))
    return tables


def gap_tables(summary: pd.DataFrame) -> list[Group]:
    """The gap of each task as rich tables, without tests (the library's view of a summary)."""
    return grid_tables(task_grids(summary))


def paired_tables(grids: list[Grid]) -> list[Table]:
    """One table per task of the paired differences behind the marks."""
    tables = []
    for grid in grids:
        lines = paired_lines(grid)
        if not lines:
            continue
        note = grid.test_note
        legend = note.legend("better", "worse", pointer=False) if note else ""
        table = Table(title=grid.paired_title, caption=legend, title_justify="left", caption_justify="left")
        for header in PAIRED_HEADERS:
            table.add_column(header, justify="left" if header == "configuration" else "right")
        for line in lines:
            table.add_row(*line)
        tables.append(table)
    return tables


def best_table(best: pd.DataFrame) -> Table:
    table = Table(
        title="best configuration per task, chosen on validation",
        caption=BEST_LEGEND,
        title_justify="left",
        caption_justify="left",
    )
    for header in BEST_HEADERS:
        table.add_column(header)
    for line in best_lines(best):
        table.add_row(*line)
    return table


def tuned_table(rows: pd.DataFrame) -> Group:
    """One task of report --tuned, then its legend as text (a caption would wrap to the table's width)."""
    title = tuned_title(rows)
    table = Table(title=title, title_justify="left", min_width=len(title))
    for header in TUNED_HEADERS:
        left = header in ("method", "chosen setting", "protocol")
        table.add_column(header, justify="left" if left else "right", no_wrap=header == "method")
    for line in tuned_lines(rows):
        table.add_row(*line)
    return Group(table, Text(tuned_legend(rows), style="dim"))


def reference_table(reference: ReferenceRows) -> Table:
    table = Table(
        title=reference_title(reference.name), title_justify="left", caption=REFERENCE_LEGEND, caption_justify="left"
    )
    for column in REFERENCE_HEADERS:
        table.add_column(column)
    for line in reference_lines(reference.rows):
        table.add_row(*line)
    return table


def failed_lines(failed: pd.DataFrame) -> list[Text]:
    """The cells the results hold as failed or diverged, one line each (at most FAILED_LISTED)."""
    if failed.empty:
        return []
    lines = [Text(f"{len(failed)} cell(s) not ok:", style="red")]
    for _, row in failed.head(FAILED_LISTED).iterrows():
        lines.append(Text(f"  {cell_label(row)}: {row['status']}: {row['error']}"))
    return lines
