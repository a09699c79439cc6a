"""`--format markdown`: GitHub-flavoured markdown, a heading and a table per task, fit for a CI job summary."""

import pandas as pd

from ..compare import CompareResult
from ..data import ReferenceRows, Report
from ..grid import PAIRED_HEADERS, Grid, caption, paired_lines, table_rows
from ..history import History
from ..labels import keep_label
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


def _row(cells: list[str] | tuple[str, ...]) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


@register
class MarkdownExporter(Exporter):
    name = "markdown"
    suffix = ".md"

    def export(self, report: Report) -> str:
        """Per task a heading, its table and its legend; then the paired differences (with `paired`) and the
        published numbers (with a reference); with `best`, only the table of the best configurations. The
        verdicts of --compare and --history come last, each ending with its verdict line."""
        if report.best is not None:
            out = [
                "### best configuration per task, chosen on validation\n",
                "| " + " | ".join(BEST_HEADERS) + " |",
                "|---|---|---|---:|---:|---:|---:|",
            ]
            out += [_row(line) for line in best_lines(report.best)]
            text = "\n".join(out) + f"\n\n{BEST_LEGEND}\n"
        elif report.tuned is not None:
            text = "".join(tuned_markdown(rows) for _, rows in tuned_tasks(report.tuned))
        else:
            text = "".join(grid_markdown(grid) for grid in report.grids)
            if report.paired:
                text += "".join(paired_markdown(grid) for grid in report.grids)
            if report.reference is not None:
                text += reference_markdown(report.reference)
        if report.comparison is not None:
            text += "\n" + self.export_comparison(report.comparison)
        if report.history is not None:
            text += "\n" + self.export_history(report.history)
        return text

    def export_comparison(self, result: CompareResult) -> str:
        """A heading, the table (when anything matched), the missing cells, and last the verdict line a CI job
        summary shows."""
        _, unit = units(result)
        out = [f"### compare · {result.metric} · max drop {result.max_drop:g}{unit} · alpha {result.alpha:g}"]
        if result.rows:
            out += [
                "",
                "| " + " | ".join(comparison_columns(result)) + " |",
                "|---|---:|---:|---:|---|---:|---:|---:|---|",
            ]
            out += ["| " + " | ".join(line) + " |" for line in comparison_lines(result)]
        out += [line for missing in missing_lines(result) for line in ("", missing)]
        out += ["", f"**Verdict: {result.verdict}** — {verdict_summary(result)}"]
        return "\n".join(out) + "\n"

    def export_history(self, history: History) -> str:
        """Per task a heading and its trends, the legend, the runs' provenance, and last the verdict line."""
        out = []
        for task in history.tasks():
            columns = history_columns(history)
            out += [f"### {history_title(history, task)}", "", _row(columns), "|---|" + "---:|" * (len(columns) - 1)]
            out += [_row(line) for line in history_lines(history, task)]
            out.append("")
        out += [history_legend(history), "", "#### runs, oldest first", "", _row(RUN_HEADERS)]
        out.append("|" + "---|" * len(RUN_HEADERS))
        out += [_row(line) for line in run_lines(history.runs)]
        out += ["", f"**Verdict: {history.verdict}** — {history_summary(history)}"]
        return "\n".join(out) + "\n"


def grid_markdown(grid: Grid) -> str:
    out = [
        f"### {grid.title}\n",
        "| regularizer | " + " | ".join(keep_label(k) for k in grid.keep_rates) + " |",
        "|---|" + "---:|" * len(grid.keep_rates),
    ]
    for label, cells in table_rows(grid):
        out.append(_row([label, *(f"{v}<br>{t}{m}" if t else v for _, (v, t, m) in cells)]))
    return "\n".join(out) + "\n\n" + caption(grid).replace("\n", "  \n") + "\n\n"


def paired_markdown(grid: Grid) -> str:
    """The paired differences behind a task's marks."""
    lines = paired_lines(grid)
    if not lines:
        return ""
    out = [
        f"#### {grid.paired_title}\n",
        "| " + " | ".join(PAIRED_HEADERS) + " |",
        "|---|" + "---:|" * (len(PAIRED_HEADERS) - 1),
    ]
    out += [_row(line) for line in lines]
    if grid.test_note:
        out += ["", grid.test_note.legend("better", "worse", pointer=False)]
    return "\n".join(out) + "\n\n"


def reference_markdown(reference: ReferenceRows) -> str:
    out = [
        f"### {reference_title(reference.name)}\n",
        "| " + " | ".join(REFERENCE_HEADERS) + " |",
        "|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    out += [_row(line) for line in reference_lines(reference.rows)]
    return "\n".join(out) + f"\n\n{REFERENCE_LEGEND}\n"


def tuned_markdown(rows: pd.DataFrame) -> str:
    """One task of report --tuned: heading, a row per method, the legend."""
    out = [
        f"### {tuned_title(rows)}\n",
        "| " + " | ".join(TUNED_HEADERS) + " |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    out += [_row(line) for line in tuned_lines(rows)]
    return "\n".join(out) + f"\n\n{tuned_legend(rows)}\n\n"
