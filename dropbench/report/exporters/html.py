"""`--format html`: one self-contained page (a report, a comparison or a history) for a browser, a CI job's
artifacts or a printer.

Self-contained: the style sheet is inline, figures are PNGs inside the page (data: URLs), and the page's
Content Security Policy forbids every other request, so it reads the same offline as from an artifact and can
load nothing from elsewhere. Accessible: every table has a caption and scoped headers, every figure its alt
text, and marks are characters with a title as well as a colour. Printable: the navigation is hidden and tables
and figures are kept whole on a page.

The page shows the figures and words every format shows (grid.py, text.py) and draws the figures of plots.py;
it computes no statistic.
"""

import base64
import html
import re
import struct
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from ...catalogue import METRICS
from ...provenance import package_version
from ...results import read_epochs, read_results
from ..compare import CompareResult
from ..data import ReferenceRows, Report
from ..grid import BASELINE_MARK, BEST_MARK, BETTER_MARK, PAIRED_HEADERS, WORSE_MARK, Grid, caption, paired_lines
from ..grid import table_rows as grid_rows
from ..history import History
from ..labels import cell_label, keep_label
from ..runs import RunInfo, run_info
from ..stats import TEST_NAMES
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
    verdict_summary,
)
from . import Exporter, register

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Nothing but this page: inline style, images from data: URLs (the icon too, or the browser asks for one).
POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
FIGURE_DPI = 110  # sharp on screen and in print at the page's width, at about a third of plot's 150 dpi bytes
FAILED_LISTED = 50
TUNING_ALT = "{task}: validation figure of every tuning trial against each tuned hyperparameter, the choice starred."

STYLE = """
:root { --fg: #1b1b1b; --muted: #555; --line: #cfcfcf; --head: #f2f2f2; --better: #0a6b2d; --worse: #b00020;
  --warn: #8a5a00; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
  background: #fff; margin: 0 auto; max-width: 1200px; padding: 1.5rem; }
h1 { font-size: 1.6rem; margin: 0 0 .2rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3 { font-size: 1.05rem; margin: 1.4rem 0 .4rem; }
p { margin: .4rem 0; }
.sub, .legend, figcaption, footer { color: var(--muted); }
.legend { font-size: .9rem; max-width: 75rem; }
nav ul { list-style: none; padding: 0; margin: .8rem 0; display: flex; flex-wrap: wrap; gap: .25rem 1.1rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .4rem 0 .6rem; font-variant-numeric: tabular-nums; }
caption { text-align: left; font-weight: 600; padding: .3rem 0; white-space: nowrap; }
th, td { border: 1px solid var(--line); padding: .3rem .55rem; vertical-align: top; white-space: nowrap; }
table.wrap td, td.wrap { white-space: normal; min-width: 8rem; }
thead th { background: var(--head); text-align: left; }
tbody th { text-align: left; font-weight: 600; }
.num { text-align: right; white-space: nowrap; }
.test { display: block; color: var(--muted); font-size: .88em; }
td.best .test { color: var(--better); font-weight: 600; }
.failed, .notok { color: var(--worse); }
.better { color: var(--better); font-weight: 700; }
.worse { color: var(--worse); font-weight: 700; }
.verdict { font-size: 1.05rem; margin: .6rem 0; padding: .5rem .8rem; border-left: 5px solid var(--line);
  background: var(--head); }
.verdict.regression, .verdict.not-comparable { border-color: var(--worse); }
.verdict.no-regression { border-color: var(--better); }
td.regression { color: var(--worse); font-weight: 700; }
td.improvement { color: var(--better); }
td.inconclusive, td.not-comparable { color: var(--warn); }
figure { margin: 1rem 0; }
img { max-width: 100%; height: auto; border: 1px solid var(--line); }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: .9em; word-break: break-all; }
footer { margin-top: 3rem; font-size: .85rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav { display: none; }
  h2, h3, caption { break-after: avoid; }
  table, figure, .verdict { break-inside: avoid; }
  .scroll { overflow: visible; }
  img { border: none; }
  a { color: inherit; text-decoration: none; }
}
"""

MARKS = {
    BETTER_MARK: ("better", "significantly better"),
    WORSE_MARK: ("worse", "significantly worse"),
    BASELINE_MARK: ("baseline", "the baseline"),
    BEST_MARK: ("best", "chosen on validation"),
}
Section = tuple[str, str, str]  # (id, heading, HTML)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _marked(text: str) -> str:
    """Escaped text whose marks (▲ ▼ ◆ ★) carry a class for their colour and a title saying what they mean."""
    escaped = _e(text)
    for mark, (name, meaning) in MARKS.items():
        escaped = escaped.replace(mark, f'<span class="{name}" title="{meaning}">{mark}</span>')
    return escaped


def _slug(text: str, taken: set[str]) -> str:
    """An id for a heading: 'task-breast-cancer', unique on the page."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, copy = base, 1
    while slug in taken:
        copy += 1
        slug = f"{base}-{copy}"
    taken.add(slug)
    return slug


def table(
    headers: Sequence[str],
    lines: Iterable[Sequence[str]],
    *,
    title: str = "",
    left: int = 1,
    cell_classes: Sequence[str] = (),
    wrap: bool = False,
) -> str:
    """A table: a caption (`title`), scoped column headers, each line's first cell a row header; the first `left`
    columns read as text, the others as figures (right-aligned). `cell_classes` adds a class per line to its last
    cell (a verdict's colour). Cells keep to one line (a wide table scrolls in its box) unless `wrap`."""
    head = "".join(f'<th scope="col"{"" if i < left else " class=num"}>{_e(h)}</th>' for i, h in enumerate(headers))
    rows = []
    for n, line in enumerate(lines):
        cells = [f'<th scope="row">{_marked(line[0])}</th>']
        for i, cell in enumerate(line[1:], start=1):
            classes = ([] if i < left else ["num"]) + ([cell_classes[n]] if cell_classes and i == len(line) - 1 else [])
            attribute = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attribute}>{_marked(cell)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    titled = f"<caption>{_e(title)}</caption>" if title else ""
    return (
        f'<div class="scroll"><table>{titled}<thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>'
    )


def _legend(text: str) -> str:
    return "".join(f'<p class="legend">{_marked(line)}</p>' for line in text.splitlines() if line.strip())


def _png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's header (its IHDR chunk)."""
    return struct.unpack(">II", data[16:24])


def figure(fig: "Figure", alt: str, note: str = "") -> str:
    """A matplotlib figure as an inline PNG with its alt text, and a caption."""
    from ..plots import figure_bytes  # matplotlib: only when a page is drawn

    data = figure_bytes(fig, "png", dpi=FIGURE_DPI)
    width, height = _png_size(data)
    source = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    shown = f"<figcaption>{_e(note)}</figcaption>" if note else ""
    return f'<figure><img src="{source}" alt="{_e(alt)}" width="{width}" height="{height}">{shown}</figure>'


def verdict_line(verdict: str, summary: str) -> str:
    return f'<p class="verdict {_class(verdict)}"><strong>Verdict: {_e(verdict)}</strong> — {_e(summary)}</p>'


def _class(word: str) -> str:
    return word.replace(" ", "-")


def page(kind: str, subtitle: str, sections: list[Section], top: str = "") -> str:
    """The whole document: a heading, `top` (the verdict lines), a list of the sections, the sections."""
    contents = "".join(f'<li><a href="#{slug}">{_e(heading)}</a></li>' for slug, heading, _ in sections)
    body = "".join(
        f'<section id="{slug}" aria-labelledby="{slug}-h"><h2 id="{slug}-h">{_e(heading)}</h2>{content}</section>'
        for slug, heading, content in sections
    )
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
        '<link rel="icon" href="data:,">\n'
        f"<title>dropbench {_e(kind)} · {_e(subtitle)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f'<header><h1>dropbench {_e(kind)}</h1><p class="sub">{_e(subtitle)}</p></header>\n'
        f"{top}"
        f'<nav aria-label="contents"><ul>{contents}</ul></nav>\n<main>{body}</main>\n'
        f"<footer>Written by dropbench {_e(package_version('dropbench'))} (dropbench {_e(kind)} --format html). "
        "Self-contained: it loads nothing from elsewhere.</footer>\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------- report


def grid_table(grid: Grid) -> str:
    """A task's table: per row label and keep rate, the metric ± CI with its mark and, beneath, the test figure."""
    head = '<th scope="col">regularizer</th>' + "".join(
        f'<th scope="col" class="num">{_e(keep_label(k))}</th>' for k in grid.keep_rates
    )
    rows = []
    for label, cells in grid_rows(grid):
        shown = [f'<th scope="row">{_e(label)}</th>']
        for row, (value, test, marks) in cells:
            if row is None:
                shown.append('<td class="num"></td>')
                continue
            if row["n"] == 0:
                shown.append(f'<td class="num failed">{_e(value)}</td>')
                continue
            best = " best" if row.name == grid.best else ""
            not_ok = f'<span class="notok test">{row["not_ok"]} not ok</span>' if row["not_ok"] else ""
            shown.append(
                f'<td class="num{best}">{_marked(value)}<span class="test">{_marked(test + marks)}</span>{not_ok}</td>'
            )
        rows.append(f"<tr>{''.join(shown)}</tr>")
    return (
        f'<div class="scroll"><table><caption>{_e(grid.title)}</caption><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></div>"
    )


def _task_figures(
    report: Report, epochs: pd.DataFrame | None, task: str, classification: bool, *, tuned: bool | None = None
) -> str:
    """The task's figures of `dropbench plot` (plots.task_figures: a grid's keep rate, gap heatmap and learning
    curves; a tuned task's chosen settings, trials and their learning curves), each with its alt text."""
    from ..plots import task_figures  # matplotlib: only when a page is drawn

    error = "error" if classification else "MSE"
    alts = {
        "keep-rate": (
            f"{task}: test and training {error} against the hidden keep rate, a line per configuration (identical "
            "ones drawn once, at most 6 a panel) with its 95% confidence band over seeds clipped to what is "
            "possible, the baseline as a diamond; the table above holds the figures."
        ),
        "gap-heatmap": f"{task}: heatmap of the mean generalization gap, regularizer by keep rate, baseline outlined.",
        "learning-curves": f"{task}: validation and training loss per epoch, mean over seeds, per configuration.",
        "tuned": (
            f"{task}: test {error} of each method's setting chosen on validation, mean with its 95% confidence "
            "interval over seeds, the tuned baseline dashed; the table above holds the figures."
        ),
        "tuning": TUNING_ALT.format(task=task),
    }
    reference = report.reference.name if report.reference is not None else None
    jobs = task_figures(
        report.results, epochs, report.summary, task, tuned=tuned, reference=reference, order=report.order
    )
    return "".join(figure(draw(), alts[kind]) for kind, draw in jobs)


def paired_table(grid: Grid) -> str:
    lines = paired_lines(grid)
    if not lines:
        return ""
    note = grid.test_note.legend("better", "worse", pointer=False) if grid.test_note else ""
    return f"<h3>{_e(grid.paired_title)}</h3>" + table(PAIRED_HEADERS, lines, left=2) + _legend(note)


def _grid_sections(report: Report, taken: set[str]) -> list[Section]:
    epochs = read_epochs(*report.sources) if report.sources else None  # the learning curves' points
    sections = []
    for grid in report.grids:
        content = grid_table(grid) + _legend(caption(grid))
        if report.paired:
            content += paired_table(grid)
        content += _task_figures(report, epochs, grid.task, grid.classification)
        sections.append((_slug(f"task {grid.task}", taken), grid.task, content))
    return sections


def _tuned_sections(report: Report, taken: set[str]) -> list[Section]:
    assert report.tuned is not None
    epochs = read_epochs(*report.sources) if report.sources else None  # the chosen settings' learning curves
    sections = []
    for task, rows in tuned_tasks(report.tuned):
        content = table(TUNED_HEADERS, tuned_lines(rows), title=tuned_title(rows), left=4)
        content += _legend(tuned_legend(rows))
        classification = str(rows["test_metric"].iloc[0]) == "test_acc"
        content += _task_figures(report, epochs, task, classification, tuned=True)
        sections.append((_slug(f"task {task}", taken), task, content))
    return sections


def _reference_section(reference: ReferenceRows) -> str:
    return table(REFERENCE_HEADERS, reference_lines(reference.rows), title=reference_title(reference.name), left=4)


def _failed_section(failed: pd.DataFrame) -> str:
    items = [
        f"<li><code>{_e(cell_label(row))}</code>: {_e(row['status'])}: {_e(row['error'])}</li>"
        for _, row in failed.head(FAILED_LISTED).iterrows()
    ]
    more = f"<p>… and {len(failed) - FAILED_LISTED} more.</p>" if len(failed) > FAILED_LISTED else ""
    head = f'<p class="failed">{len(failed)} cell(s) failed or diverged: not in any figure.</p>'
    return f"{head}<ul>{''.join(items)}</ul>{more}"


def provenance_table(run: RunInfo) -> str:
    """One run's provenance, a row per fact, the values as recorded."""
    facts: list[tuple[str, str]] = [
        ("files", ", ".join(map(str, run.paths)) or "none: a frame built in Python"),
        ("suite", ", ".join(run.suites)),
        ("cells", str(run.cells)),
        ("first cell started (UTC)", run.started),
        ("last cell started (UTC)", run.ended),
        ("commit", ", ".join(run.commits)),
        *((f"{name} version", ", ".join(values)) for name, values in run.versions.items()),
        ("machine", "; ".join(run.machines)),
        ("device", ", ".join(run.devices)),
        ("platform", "; ".join(run.platforms)),
        ("command", " | ".join(run.commands)),
        ("merged from", ", ".join(run.merged_from)),
    ]
    rows = "".join(
        f'<tr><th scope="row">{_e(name)}</th><td class="wrap"><code>{_e(value)}</code></td></tr>'
        for name, value in facts
        if value
    )
    return f'<div class="scroll"><table><caption>{_e(run.name)}</caption><tbody>{rows}</tbody></table></div>'


def _provenance(report: Report) -> str:
    """Each source file's provenance (its rows and its JSON metadata), or the frame's when it came from Python."""
    if report.sources:
        runs = [run_info([path], read_results(path)) for path in report.sources]
    else:
        runs = [run_info([], report.results)]
    note = (
        '<p class="legend">What each results file records of the runs that wrote it: its rows\' provenance columns '
        "and the run metadata beside it (NAME.json).</p>"
    )
    return note + "".join(provenance_table(run) for run in runs)


def _report_subtitle(report: Report) -> str:
    files = ", ".join(map(str, report.sources)) or "a results frame"
    if report.best is not None:
        view = "best configurations, chosen on validation"
    elif report.tuned is not None:
        view = "tuned methods, chosen on validation"
    else:
        view = f"metric {report.metric}"  # the grids' figure; --best and --tuned name their own in their tables
    return " · ".join((files, view, f"{TEST_NAMES[report.method]}, Holm, α = {report.alpha:g}"))


# ---------------------------------------------------------------- compare and history


def comparison_content(result: CompareResult) -> str:
    """compare's table, the cells found on one side only, and its verdict line."""
    content = ""
    if result.rows:
        title = f"compare · {result.metric} (new − base) · max drop {result.max_drop:g} · alpha {result.alpha:g}"
        lines = comparison_lines(result)
        verdicts = [_class(line[-1]) for line in lines]
        content += table(comparison_columns(result), lines, title=title, cell_classes=verdicts)
    missing = missing_lines(result)
    if missing:
        content += "<ul>" + "".join(f"<li>{_e(line)}</li>" for line in missing) + "</ul>"
    return content + verdict_line(result.verdict, verdict_summary(result))


def history_sections(history: History, taken: set[str], prefix: str = "") -> list[Section]:
    """history's trends, a section per task with its legend; its figure; the runs with their provenance and the
    verdict line. `prefix` heads the sections inside a report page ('history: ')."""
    from ..plots import plot_history  # matplotlib: only when a page is drawn

    sections = []
    tasks = history.tasks()
    for task in tasks:
        lines = history_lines(history, task)
        content = table(history_columns(history), lines, title=history_title(history, task))
        if task == tasks[-1]:  # one legend, below the last table: it is the same for every task
            content += _legend(history_legend(history))
        sections.append((_slug(f"{prefix}task {task}", taken), f"{prefix}{task}", content))
    alt = (
        f"{METRICS[history.metric].title} of each configuration per run, oldest first, with its 95% confidence "
        "interval over seeds, a panel per task; rings mark the runs where it moved significantly from the run "
        "before. The tables hold the figures."
    )
    sections.append((_slug(f"{prefix}trends", taken), f"{prefix}trends", figure(plot_history(history), alt)))
    runs = table(RUN_HEADERS, run_lines(history.runs), title="runs, oldest first", left=len(RUN_HEADERS), wrap=True)
    runs += "".join(provenance_table(run) for run in history.runs)
    runs += verdict_line(history.verdict, history_summary(history))
    sections.append((_slug(f"{prefix}runs", taken), f"{prefix}runs and their provenance", runs))
    return sections


def _verdict_lines(report: Report) -> str:
    """The verdicts of --compare and --history at the top of the page: what a CI reader opens it for."""
    lines = []
    if report.comparison is not None:
        lines.append(verdict_line(report.comparison.verdict, "compare: " + verdict_summary(report.comparison)))
    if report.history is not None:
        lines.append(verdict_line(report.history.verdict, "history: " + history_summary(report.history)))
    return "".join(lines)


@register
class HtmlExporter(Exporter):
    name = "html"
    suffix = ".html"

    def export(self, report: Report) -> str:
        """The verdicts first (with --compare or --history), then per task its table, legend and figures (with
        `best` the best configurations, with `tuned` the tuned methods), published numbers, failed cells, the
        comparison and the history in full, and the provenance of every results file."""
        taken: set[str] = set()
        sections: list[Section] = []
        if report.best is not None:
            content = table(BEST_HEADERS, best_lines(report.best), left=3) + _legend(BEST_LEGEND)
            sections.append((_slug("best", taken), "best configuration per task, chosen on validation", content))
        elif report.tuned is not None:
            sections += _tuned_sections(report, taken)
        else:
            sections += _grid_sections(report, taken)
            if report.reference is not None:
                content = _reference_section(report.reference) + _legend(REFERENCE_LEGEND)
                sections.append((_slug("reference", taken), reference_title(report.reference.name), content))
        if not report.failed.empty:
            sections.append((_slug("failed", taken), "cells not ok", _failed_section(report.failed)))
        if report.comparison is not None:
            sections.append((_slug("compare", taken), "compare", comparison_content(report.comparison)))
        if report.history is not None:
            sections += history_sections(report.history, taken, prefix="history: ")
        sections.append((_slug("provenance", taken), "provenance", _provenance(report)))
        return page("report", _report_subtitle(report), sections, top=_verdict_lines(report))

    def export_comparison(self, result: CompareResult) -> str:
        subtitle = f"{result.metric} · max drop {result.max_drop:g} · {TEST_NAMES[result.method]}, α = {result.alpha:g}"
        top = verdict_line(result.verdict, verdict_summary(result))
        return page("compare", subtitle, [("compare", "configurations, new − base", comparison_content(result))], top)

    def export_history(self, history: History) -> str:
        subtitle = (
            f"{len(history.runs)} runs · {history.metric} · max drop {history.max_drop:g} · "
            f"{TEST_NAMES[history.method]}, Holm, α = {history.alpha:g}"
        )
        top = verdict_line(history.verdict, history_summary(history))
        return page("history", subtitle, history_sections(history, set()), top)
