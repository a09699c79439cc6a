"""Figures of a results table: error against the keep rate, gap heatmaps and learning curves per task, and for
a tuned run each method's chosen setting and every trial on validation (report.plot_tuned); and of a history,
each configuration's trend across runs (plot_history). `task_figures` lists a task's figures for `dropbench
plot` (write_plots) and for the HTML page, which inlines them as figure_bytes.

Rendering only: every statistic comes from `report.summarize` (the learning curves average the per-epoch
points of a configuration's seeds, as only the epochs file has them), and every rule that decides what a figure
shows (the possible range of a band, the axis, heatmap colours, identical lines, panels) from report.plot_rules.
Headless: the Agg backend is selected here, before pyplot is imported, and nothing is ever shown.
"""

import io
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from matplotlib.typing import ColorType  # noqa: E402

from ..catalogue import METRIC_CHOICES, METRICS, PLOT_DPI, PLOT_FORMATS, plot_format  # noqa: E402
from ..errors import UserError  # noqa: E402
from ..files import os_error  # noqa: E402
from .labels import config_label, varying  # noqa: E402
from .order import SuiteOrder  # noqa: E402
from .plot_rules import (  # noqa: E402
    FACET_COLUMNS,
    FAMILY,
    MAX_LINES,
    NON_NEGATIVE,
    PERCENT,
    TRAIN_TITLE,
    AxisRange,
    Bounds,
    Facet,
    Measure,
    axis_range,
    band,
    bounds,
    color_scale,
    facets,
    identical_groups,
    identical_label,
    keep_rate_measures,
)
from .plot_tuned import (  # noqa: E402
    check_tuned_metric,
    chosen_epoch_rows,
    plot_tuned,
    plot_tuning,
)
from .stats import TEST_NAMES  # noqa: E402
from .summary import CONFIG_COLUMNS, latest_rows, summarize, with_config_defaults  # noqa: E402
from .tuning import has_tuning_rows, trial_figures  # noqa: E402

if TYPE_CHECKING:
    from .history import History, Trend

PNG_DPI = PLOT_DPI
MAX_CURVES = 8
KEEP_LABEL = "keep rate p (hidden units)"
BASELINE_LABEL = "baseline (none, keep 1.0)"
PUBLISHED_LABEL = "published"
BEYOND_LABEL = "beyond the axis (value beside)"


def safe_name(task: str) -> str:
    """A task name as a file name: every character outside [A-Za-z0-9._-] becomes '-'."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", task)


def _task_rows(summary: pd.DataFrame, task: str) -> pd.DataFrame:
    if summary.empty or "task" not in summary.columns or not (summary["task"] == task).any():
        known = ", ".join(summary["task"].drop_duplicates()) if "task" in summary.columns else ""
        raise UserError(f"no results for task '{task}'" + (f"; tasks in the results: {known}" if known else ""))
    return summary[summary["task"] == task]


def _with_labels(rows: pd.DataFrame, *, keep: bool = False) -> pd.DataFrame:
    """Each row with its label: 'l2 0.0001', then whatever else varies in the task ('· in 0.8', '· mlp-1024-1024');
    a regularizer's line splits where any of those differ."""
    differs = varying(rows)
    return rows.assign(label=[config_label(r, differs, keep=keep) for _, r in rows.iterrows()])


def _colors(n: int) -> list[ColorType]:
    """`n` colours told apart: the style's colour cycle where it has enough (a paper's style decides), else tab10,
    tab20, or `n` evenly spaced along turbo."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", [])
    if n <= len(cycle):
        return list(cycle[:n])
    if n <= 20:
        cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
        return [cmap(i) for i in range(n)]
    return [matplotlib.colormaps["turbo"](i / (n - 1)) for i in range(n)]


# One marker per line as well as one colour: lines stay apart in grey print (the grayscale style has 4 greys).
# Not '^'/'v' (the markers of points beyond the axis), 'D' (the baseline) or 'X' (published numbers).
MARKERS = ("o", "s", "P", "p", "h", "d", "8", "H")


def _seeds_phrase(rows: pd.DataFrame) -> str:
    most = int(rows["n"].max()) if len(rows) else 0
    fewest = int(rows.loc[rows["n"] > 0, "n"].min()) if (rows["n"] > 0).any() else 0
    count = f"{most}" if fewest == most else f"{fewest}–{most}"
    return f"{count} seed{'s' * (most != 1)}"


def _has_figures(rows: pd.DataFrame, column: str) -> bool:
    return column in rows and bool(np.isfinite(pd.to_numeric(rows[column], errors="coerce").to_numpy(float)).any())


def check_metric(summary: pd.DataFrame, tasks: Sequence[str], metric: str | None) -> None:
    """Refuse a `metric` some of `tasks` has no figure of (an accuracy of a regression task, ECE where it was not
    measured), naming what the task has: a plot of it would be empty."""
    if metric is None:
        return
    for task in tasks:
        rows = _task_rows(summary, task)
        classification = bool(rows["classification"].iloc[0])
        (measure,) = keep_rate_measures(metric, classification)
        if not _has_figures(rows, f"{measure.column}_mean"):
            usable = [
                m
                for m in METRIC_CHOICES
                if _has_figures(rows, f"{keep_rate_measures(m, classification)[0].column}_mean")
            ]
            kind = "a classification task" if classification else "a regression task: no accuracy"
            raise UserError(
                f"--metric {metric}: task {task} has no {measure.column} figures ({kind}); it has: {', '.join(usable)}"
                " (or leave it out with --task)"
            )


@dataclass(frozen=True)
class _Line:
    """One drawn line: a configuration, or several whose points are identical (`members`); `rows` are the first
    member's summary rows by keep rate; `reference`: it holds a baseline and is repeated in every panel of its
    `group` (model, training-set size, setup)."""

    label: str
    members: tuple[str, ...]
    rows: pd.DataFrame
    reference: bool
    group: str


def _keep_lines(rows: pd.DataFrame, measures: Sequence[Measure]) -> list[_Line]:
    """The task's lines, configurations with identical points (every measure's means and intervals, at the same
    keep rates) drawn as one."""
    by_label = {
        label: rows[rows["label"] == label].sort_values("keep_rate", kind="stable")
        for label in rows["label"].drop_duplicates()
    }
    series = {}
    for label, line in by_label.items():
        parts = [line["keep_rate"].to_numpy(dtype=float)]
        for measure in measures:
            parts.extend(measure.values(line))
        series[label] = np.concatenate(parts)
    lines = []
    for members in identical_groups(series):
        first = by_label[members[0]]
        row = first.iloc[0]
        group = f"{row['model']}|{row.get('train_size', 0)}|{row.get('setup', '')}"
        holds_baseline = any(bool(by_label[m]["baseline"].any()) for m in members)
        lines.append(_Line(identical_label(members), tuple(members), first, holds_baseline, group))
    return lines


def _line_frame(lines: Sequence[_Line]) -> pd.DataFrame:
    """The lines as plot_rules.facets reads them: label, regularizer, reference, group and the facet columns."""
    records = []
    for line in lines:
        row = line.rows.iloc[0]
        record = {"label": line.label, "regularizer": row["regularizer"], "reference": line.reference}
        record["group"] = line.group
        record.update({c: row[c] for c in FACET_COLUMNS if c in row.index})
        records.append(record)
    return pd.DataFrame.from_records(records)


@dataclass(frozen=True)
class _Published:
    """A published test error beside the drawn line of the configuration it matches."""

    line: str
    keep_rate: float
    error_pct: float


def _published_points(summary: pd.DataFrame, rows: pd.DataFrame, lines: Sequence[_Line], reference: str) -> list:
    """The reference's rows that match a configuration of the task, each at the line it is set beside."""
    from .reference import configuration_label, load_reference, match_reference

    task = str(rows["task"].iloc[0])
    matched = match_reference(summary, load_reference(reference))
    matched = matched[(matched["task"] == task) & matched["ours_test_error_pct"].notna()]
    drawn = {member: line.label for line in lines for member in line.members}
    labels = {configuration_label(row): drawn.get(str(row["label"])) for _, row in rows.iterrows()}
    points = []
    for _, row in matched.iterrows():
        line = labels.get(str(row["ours_configuration"]))
        if line is not None:
            points.append(_Published(line, float(row["keep_rate"]), float(row["test_error_pct"])))
    return points


def _per_row(n_facets: int, n_measures: int) -> int:
    """Facets side by side in a row of the grid, for a grid near square in panels: 2 facets of a test and a
    training panel one above the other, 5 in rows of 2 (4 panels); single panels in rows of up to 3."""
    if n_measures > 1:
        return max(1, min(4 // n_measures, math.isqrt(n_facets)))
    return min(3, math.ceil(math.sqrt(n_facets)))


def _facet_axes(
    n_facets: int, n_measures: int, size: tuple[float, float] | None, legend_width: float
) -> tuple[Figure, list[list[Axes]]]:
    """A grid of panels: each facet a block of its measures side by side, blocks wrapped so that a row holds at
    most 4 panels (or 3 of a single measure); `axes[facet][measure]`. Unused cells of the grid are hidden."""
    per_row = _per_row(n_facets, n_measures)
    grid_rows = math.ceil(n_facets / per_row)
    columns = per_row * n_measures
    width = 4.6 * columns + legend_width
    height = 0.9 + 3.6 * grid_rows
    fig, grid = plt.subplots(grid_rows, columns, figsize=size or (width, height), layout="constrained", squeeze=False)
    axes = [[grid[f // per_row][(f % per_row) * n_measures + m] for m in range(n_measures)] for f in range(n_facets)]
    for f in range(n_facets, grid_rows * per_row):
        for m in range(n_measures):
            grid[f // per_row][(f % per_row) * n_measures + m].set_axis_off()
    return fig, axes


EDGE_MARKERS = {False: "v", True: "^"}  # at the lower, at the upper edge


def _edge_marks(ax: Axes, x: np.ndarray, y: np.ndarray, shown: AxisRange, color: ColorType, digits: int) -> bool:
    """Points beyond the axis drawn at its edge, their value written beside; whether there were any."""
    below, above = shown.beyond(y)
    for mask, edge, upper in ((below, shown.low, False), (above, shown.high, True)):
        if not mask.any():
            continue
        ax.scatter(
            x[mask],
            np.full(int(mask.sum()), edge),
            marker=EDGE_MARKERS[upper],
            s=60,
            color=color,
            edgecolor="black",
            linewidth=0.6,
            zorder=6,
            clip_on=False,
        )
        for xi, yi in zip(x[mask], y[mask]):
            ax.annotate(
                f"{yi:.{digits}f}",
                (xi, edge),
                xytext=(6, -10 if upper else 4),
                textcoords="offset points",
                fontsize="x-small",
                color="black",
                zorder=6,
                annotation_clip=False,
            )
    return bool(below.any() or above.any())


def _draw_lines(
    ax: Axes,
    lines: Sequence[_Line],
    style: dict[str, tuple[ColorType, str]],
    measure: Measure,
    shown: AxisRange,
    published: Sequence[_Published],
    x_column: str = "keep_rate",
) -> bool:
    """One panel: each line (markers at its `x_column` values, keep rates by default, its band clipped to what is
    possible), the baselines as diamonds, published numbers as crosses; points beyond the axis at its edge. Whether
    any was beyond it."""
    digits = 1 if measure.scale == 100.0 or measure.error else 3
    beyond = False
    for line in lines:
        color, marker = style[line.label]
        x = line.rows[x_column].to_numpy(dtype=float)
        y, half = measure.values(line.rows)
        ax.plot(x, y, marker=marker, markersize=5, color=color, label=line.label, zorder=3)
        if np.isfinite(half).any():
            low, high = band(y, half, measure.limits)
            # NaN bounds leave a hole: no band at a point without a CI (one seed).
            ax.fill_between(x, low, high, color=color, alpha=0.18, linewidth=0, zorder=2)
        beyond |= _edge_marks(ax, x, y, shown, color, digits)
        base = line.rows["baseline"].to_numpy(dtype=bool)
        if base.any():
            # A scatter, not a line: ax.get_lines() holds exactly one line per drawn configuration.
            ax.scatter(
                x[base],
                y[base],
                marker="D",
                s=90,
                facecolor="gold",
                edgecolor="black",
                linewidth=0.9,
                zorder=4,
                label=BASELINE_LABEL,
            )
    here = {line.label for line in lines}
    for point in published:  # on the panels that draw the configuration it matches, of a test error's measure
        value = measure.published(point.error_pct)
        if value is None or point.line not in here:
            continue
        color = style[point.line][0]
        ax.scatter(
            [point.keep_rate],
            [value],
            marker="X",
            s=80,
            color=color,
            edgecolor="black",
            linewidth=0.8,
            zorder=5,
            label=PUBLISHED_LABEL,
        )
        beyond |= _edge_marks(ax, np.array([point.keep_rate]), np.array([value]), shown, color, digits)
    ax.set_ylim(shown.low, shown.high)
    return beyond


def _keep_axis(ax: Axes, keeps: Sequence[float]) -> None:
    ax.set_xticks(keeps, [f"{k:g}" for k in keeps])
    if len(keeps) > 1:
        pad = 0.06 * (keeps[-1] - keeps[0])
        ax.set_xlim(keeps[0] - pad, keeps[-1] + pad)
    ax.set_xlabel(KEEP_LABEL)
    ax.grid(True, alpha=0.3)


def _range_of(lines: Sequence[_Line], measure: Measure, published: Sequence[_Published]) -> AxisRange:
    """The axis of `measure` over `lines` (points, clipped bands and the published numbers drawn with them)."""
    points, lows, highs = [], [], []
    for line in lines:
        y, half = measure.values(line.rows)
        low, high = band(y, half, measure.limits)
        points.append(y)
        lows.append(low)
        highs.append(high)
    names = {line.label for line in lines}
    extra = [measure.published(p.error_pct) for p in published if p.line in names]
    values = np.array([v for v in extra if v is not None], dtype=float)
    points.append(values)
    lows.append(values)
    highs.append(values)
    return axis_range(np.concatenate(points), np.concatenate(lows), np.concatenate(highs), measure.limits)


def _clipped_phrase(limits: Sequence[Bounds]) -> str:
    """', clipped to 0–100%' where every interval drawn is clipped alike (to `limits`, plot_rules.bounds)."""
    distinct = set(limits)
    if distinct == {PERCENT}:
        return ", clipped to 0–100%"
    if distinct == {NON_NEGATIVE}:
        return ", clipped at 0"
    if distinct == {Bounds(-100.0, 100.0)}:
        return ", clipped to ±100 points"
    return ""


def _legend_handles(
    lines: Sequence[_Line],
    style: dict[str, tuple[ColorType, str]],
    measures: Sequence[Measure],
    *,
    baseline: bool,
    bands: bool,
    beyond: bool,
    published: str | None,
) -> list:
    handles: list = [
        Line2D([], [], color=style[line.label][0], marker=style[line.label][1], label=line.label) for line in lines
    ]
    if baseline:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="D",
                markersize=9,
                markerfacecolor="gold",
                markeredgecolor="black",
                label=BASELINE_LABEL,
            )
        )
    if bands:
        handles.append(Patch(color="0.5", alpha=0.3, label=f"95% CI{_clipped_phrase([m.limits for m in measures])}"))
    if beyond:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="^",
                color="0.5",
                markeredgecolor="black",
                label=BEYOND_LABEL,
            )
        )
    if published:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="X",
                markersize=9,
                color="0.5",
                markeredgecolor="black",
                label=f"{published} (published), coloured as its match",
            )
        )
    return handles


def plot_keep_rate(
    summary: pd.DataFrame,
    task: str,
    ax_pair: tuple[Axes, Axes] | None = None,
    *,
    metric: str | None = None,
    reference: str | None = None,
    size: tuple[float, float] | None = None,
) -> Figure:
    """Srivastava et al. 2014, Figure 9: test and training error (MSE for regression) against the hidden
    keep rate, a line per regularizer (and per other varying setting), bands = mean ± 95% CI half-width clipped to
    what is possible, the baseline marked with a diamond, as in the tables (★ there is the choice on validation).
    With `metric` that figure alone (see keep_rate_measures); with `reference` the published test errors that
    match a configuration as crosses on its test-error panels. The rules of plot_rules: identical lines drawn
    once, more than MAX_LINES lines split into panels (each with its baseline's line; a configuration keeps its
    colour and marker in every panel), an axis that leaves out a point dwarfing the rest. Draws into `ax_pair`
    (test, training; one panel each, no facets: the caller owns the layout) when given; returns the figure."""
    rows = _with_labels(_task_rows(summary, task))
    classification = bool(rows["classification"].iloc[0])
    measures = keep_rate_measures(metric, classification)
    lines = _keep_lines(rows, measures)
    style = {
        line.label: (color, MARKERS[i % len(MARKERS)])
        for i, (line, color) in enumerate(zip(lines, _colors(len(lines))))
    }
    published = _published_points(summary, rows, lines, reference) if reference else []
    by_label = {line.label: line for line in lines}
    keeps = sorted(rows["keep_rate"].dropna().unique())
    if ax_pair is not None:
        panels = [Facet("", tuple(by_label))]
        axes = [list(ax_pair[: len(measures)])]
        owner = ax_pair[0].figure
        fig = owner if isinstance(owner, Figure) else owner.figure  # a SubFigure's root figure
    else:
        panels = facets(_line_frame(lines))
        longest = max(len(text) for text in [*by_label, BEYOND_LABEL, BASELINE_LABEL])
        fig, axes = _facet_axes(len(panels), len(measures), size, legend_width=min(6.0, 1.0 + 0.075 * longest))
    shared = len(panels) == 1 or panels[0].key == FAMILY  # panels of one setup compare on one scale
    beyond = False
    for m, measure in enumerate(measures):
        common = _range_of(lines, measure, published) if shared else None
        for panel, panel_axes in zip(panels, axes):
            ax = panel_axes[m]
            drawn = [by_label[label] for label in panel.labels]
            shown = common or _range_of(drawn, measure, published)
            beyond |= _draw_lines(ax, drawn, style, measure, shown, published)
            _keep_axis(ax, keeps)
            ax.set_ylabel(measure.label)
            # Beside a facet's title the measure's short name: 'training set · n=1000'.
            heading = measure.title.split(" (")[0] if panel.title else measure.title
            title = " · ".join(t for t in (heading, panel.title) if t)
            if ax_pair is not None:  # the figure may hold other plots: the task goes into the panels' own titles
                title = (
                    f"{task}: {measure.title.replace(TRAIN_TITLE, 'training set (eval mode)')}"
                    if measure.title
                    else task
                )
            if title:
                ax.set_title(title, fontsize="medium")
    what = ("error" if classification else "MSE") if metric is None else measures[0].column
    bands = bool(rows[[f"{m.column}_ci" for m in measures]].notna().to_numpy().any())
    handles = _legend_handles(
        lines,
        style,
        measures,
        baseline=bool(rows["baseline"].any()),
        bands=bands,
        beyond=beyond,
        published=reference if published else None,
    )
    legend = {"title": "regularizer besides dropout", "title_fontsize": "small", "fontsize": "small"}
    if ax_pair is None:
        fig.suptitle(f"{task}: {what} against the hidden keep rate · mean ± 95% CI over {_seeds_phrase(rows)}")
    else:
        axes = [list(ax_pair)]
    # Beside the top right panel, outside the panels, where constrained layout makes room for it (a figure
    # legend on the right would run into the centred suptitle).
    corner = axes[min(len(axes), _per_row(len(axes), len(measures))) - 1][-1]
    corner.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **legend)
    return fig


SIZE_LABEL = "training-set size (examples, log scale)"


def sized_rows(summary: pd.DataFrame, task: str) -> pd.DataFrame:
    """The task's summary rows of a stated training-set size (0, the whole split, has no size to place on the
    axis), where at least two sizes are stated: what plot_train_size draws; empty otherwise."""
    rows = _task_rows(summary, task)
    if "train_size" not in rows:
        return rows.iloc[:0]
    sizes = pd.to_numeric(rows["train_size"], errors="coerce")
    rows = rows[sizes > 0]
    return rows if rows["train_size"].nunique() > 1 else rows.iloc[:0]


def _size_lines(rows: pd.DataFrame) -> list[_Line]:
    """One line per configuration but its training-set size (the keep rate named in it), its rows by size."""
    differs = varying(rows) - {"train_size"}
    labelled = rows.assign(label=[config_label(r, differs, keep=True) for _, r in rows.iterrows()])
    lines = []
    for label in labelled["label"].drop_duplicates():
        line = labelled[labelled["label"] == label].sort_values("train_size", kind="stable")
        row = line.iloc[0]
        group = f"{row['model']}|{row.get('setup', '')}"
        lines.append(_Line(label, (label,), line, bool(line["baseline"].any()), group))
    return lines


def plot_train_size(
    summary: pd.DataFrame, task: str, *, metric: str | None = None, size: tuple[float, float] | None = None
) -> Figure:
    """Srivastava et al. 2014, Figure 10: test and training error (MSE for regression; `metric` alone, as the
    keep-rate plot takes it) against the training-set size on a log axis, a line per configuration (its keep rate,
    regularizer and whatever else varies), bands = mean ± 95% CI clipped to what is possible. Sizes of 0 (the whole
    split) are left out: their number of examples is not in the results. More than MAX_LINES lines are split into
    panels as plot_keep_rate splits them. Refused where fewer than two sizes are stated (sized_rows)."""
    rows = sized_rows(summary, task)
    if rows.empty:
        raise UserError(f"task {task}: fewer than two training-set sizes in the results; nothing to plot against")
    classification = bool(rows["classification"].iloc[0])
    measures = keep_rate_measures(metric, classification)
    lines = _size_lines(rows)
    style = {
        line.label: (color, MARKERS[i % len(MARKERS)])
        for i, (line, color) in enumerate(zip(lines, _colors(len(lines))))
    }
    by_label = {line.label: line for line in lines}
    panels = facets(_line_frame(lines).drop(columns=["train_size"], errors="ignore"))
    longest = max(len(text) for text in [*by_label, BEYOND_LABEL])
    fig, axes = _facet_axes(len(panels), len(measures), size, legend_width=min(6.0, 1.0 + 0.075 * longest))
    sizes = sorted(int(v) for v in rows["train_size"].unique())
    beyond = False
    for m, measure in enumerate(measures):
        common = _range_of(lines, measure, [])
        for panel, panel_axes in zip(panels, axes):
            ax = panel_axes[m]
            beyond |= _draw_lines(
                ax, [by_label[label] for label in panel.labels], style, measure, common, [], "train_size"
            )
            ax.set_xscale("log")
            ax.set_xticks(sizes, [f"{v:,}" for v in sizes])
            ax.minorticks_off()
            ax.set_xlabel(SIZE_LABEL)
            ax.set_ylabel(measure.label)
            ax.grid(True, alpha=0.3)
            heading = measure.title.split(" (")[0] if panel.title else measure.title
            title = " · ".join(t for t in (heading, panel.title) if t)
            if title:
                ax.set_title(title, fontsize="medium")
    what = ("error" if classification else "MSE") if metric is None else measures[0].column
    bands = bool(rows[[f"{m.column}_ci" for m in measures]].notna().to_numpy().any())
    handles = _legend_handles(lines, style, measures, baseline=False, bands=bands, beyond=beyond, published=None)
    fig.suptitle(f"{task}: {what} against the training-set size · mean ± 95% CI over {_seeds_phrase(rows)}")
    corner = axes[min(len(axes), _per_row(len(axes), len(measures))) - 1][-1]
    legend = {"title": "configuration", "title_fontsize": "small", "fontsize": "small"}
    corner.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **legend)
    return fig


def plot_gap_heatmap(summary: pd.DataFrame, task: str, *, size: tuple[float, float] | None = None) -> Figure:
    """Regularizer (rows, in order of first appearance) × keep rate (columns, ascending): the mean gap,
    train − test accuracy in percentage points (classification) or test − train MSE (regression). Colours fit
    the values (plot_rules.color_scale): symmetric around 0 where gaps of both signs occur, else from the least to
    the greatest; a cell far beyond the rest saturates (the colour bar's arrow) and keeps its number."""
    rows = _with_labels(_task_rows(summary, task))
    classification = bool(rows["classification"].iloc[0])
    metric, scale = ("gap_acc_mean", 100.0) if classification else ("gap_loss_mean", 1.0)
    labels = list(rows["label"].drop_duplicates())
    keeps = sorted(rows["keep_rate"].dropna().unique())
    values = np.full((len(labels), len(keeps)), np.nan)
    failed: dict[tuple[int, int], int] = {}
    baseline_cells = []
    for _, row in rows.iterrows():
        i, j = labels.index(row["label"]), keeps.index(row["keep_rate"])
        values[i, j] = float(row[metric]) * scale
        if row["n"] == 0:
            failed[i, j] = int(row["not_ok"])
        if row["baseline"]:
            baseline_cells.append((i, j))

    longest = max(len(label) for label in labels)
    width = max(5.5, 3.2 + 0.95 * len(keeps) + 0.07 * longest)
    height = max(3.2, 1.9 + 0.48 * len(labels))
    fig, ax = plt.subplots(figsize=size or (width, height), layout="constrained")
    colours = color_scale(values)
    cmap = matplotlib.colormaps[colours.cmap].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=colours.vmin, vmax=colours.vmax, aspect="auto")
    for i in range(len(labels)):
        for j in range(len(keeps)):
            value = values[i, j]
            if math.isnan(value):
                text, color = (f"failed ×{failed[i, j]}" if (i, j) in failed else "—"), "black"
            else:
                text = f"{value:+.1f}" if classification else f"{value:+.3f}"
                r, g, b, _ = cmap(image.norm(value))
                color = "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "black"
            ax.text(j, i, text, ha="center", va="center", color=color, fontsize="small")
    for i, j in baseline_cells:
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2.0))
    ax.set_xticks(range(len(keeps)), [f"{k:g}" for k in keeps])
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel(KEEP_LABEL)
    ax.set_ylabel("regularizer")
    bar = fig.colorbar(image, ax=ax, shrink=0.9, extend=colours.extend)
    if classification:
        bar.set_label("gap (percentage points)")
        what = "gap = train acc − test acc"
    else:
        bar.set_label("gap (MSE, standardized target)")
        what = "gap = test MSE − train MSE"
    note = " · outlined: baseline" if baseline_cells else ""
    ax.set_title(f"{task}: {what}\nmean over {_seeds_phrase(rows)}, eval mode{note}", fontsize="medium")
    return fig


def plot_learning_curves(
    epochs: pd.DataFrame, rows: pd.DataFrame, task: str, *, size: tuple[float, float] | None = None
) -> Figure:
    """Per configuration, the mean over its ok seeds of the training-mode loss (dashed) and the validation
    loss (solid) at each epoch, averaged over the cells that reached that epoch (early stopping ends cells
    at different epochs). At most 8 configurations: the baseline, then the best by mean validation figure."""
    rows = with_config_defaults(latest_rows(rows[rows["task"] == task]))
    if rows.empty:
        raise UserError(f"no results for task '{task}'")
    summary = _with_labels(summarize(rows), keep=True)
    classification = bool(summary["classification"].iloc[0])
    ok = rows[rows["status"] == "ok"][["cell_id", *CONFIG_COLUMNS]].copy()
    ok["strength"] = ok["strength"].fillna("")
    ok["cell_id"] = ok["cell_id"].astype(str)
    curves = epochs.drop_duplicates(subset=["cell_id", "epoch"], keep="last").copy()
    curves["cell_id"] = curves["cell_id"].astype(str)
    joined = curves.merge(ok, on="cell_id", how="inner")
    config = [c for c in CONFIG_COLUMNS if c != "task"]
    joined = joined.merge(summary[config + ["label"]], on=config, how="inner")
    if joined.empty:
        raise UserError(f"no epoch curves for the ok cells of task '{task}'")

    with_curves = summary[summary["label"].isin(set(joined["label"]))]
    baseline = list(with_curves.loc[with_curves["baseline"], "label"])[:MAX_CURVES]
    others = with_curves[~with_curves["label"].isin(baseline)]
    validation = "val_acc_mean" if classification else "val_loss_mean"  # never chosen on the test split
    ranked = others.sort_values(validation, ascending=not classification, kind="stable", na_position="last")
    chosen = set(baseline) | set(ranked["label"].head(MAX_CURVES - len(baseline)))
    shown = [label for label in with_curves["label"] if label in chosen]  # in order of appearance

    means = joined.groupby(["label", "epoch"], sort=True)[["fit_loss", "val_loss"]].mean()
    colors = dict(zip(shown, _colors(len(shown))))
    # Two lines a configuration: panels of at most MAX_LINES lines, each with the baseline's curves.
    frame = summary[summary["label"].isin(shown)].drop_duplicates("label").set_index("label").loc[shown]
    lines = pd.DataFrame(
        {
            "label": shown,
            "regularizer": frame["regularizer"].to_numpy(),
            "reference": frame["baseline"].to_numpy(dtype=bool),
            "group": [f"{r['model']}|{r['train_size']}|{r['setup']}" for _, r in frame.iterrows()],
            **{c: frame[c].to_numpy() for c in FACET_COLUMNS if c in frame},
        }
    )
    panels = facets(lines, limit=max(1, MAX_LINES // 2))
    columns = min(2, len(panels))
    rows_n = math.ceil(len(panels) / columns)
    fig, grid = plt.subplots(
        rows_n,
        columns,
        figsize=size or (1.5 + 6.0 * columns, 0.9 + 4.1 * rows_n),
        layout="constrained",
        squeeze=False,
        sharey=True,
    )
    axes = [grid[i // columns][i % columns] for i in range(len(panels))]
    for extra in range(len(panels), rows_n * columns):
        grid[extra // columns][extra % columns].set_axis_off()
    for ax, panel in zip(axes, panels):
        for label in panel.labels:
            curve = means.loc[label]
            x = curve.index.to_numpy(dtype=float)
            val, fit = curve["val_loss"].to_numpy(dtype=float), curve["fit_loss"].to_numpy(dtype=float)
            color = colors[label]
            ax.plot(x, val, color=color, linestyle="-", marker=".", label=f"{label}: validation loss")
            ax.plot(x, fit, color=color, linestyle="--", label=f"{label}: train loss (training mode, with dropout)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss (cross-entropy)" if classification else "loss (MSE, standardized target)")
        locator = ax.xaxis.get_major_locator()
        if isinstance(locator, MaxNLocator):  # a linear axis's AutoLocator; set_params of other locators is a no-op
            locator.set_params(integer=True)
        ax.grid(True, alpha=0.3)
        if panel.title:
            ax.set_title(panel.title, fontsize="medium")
    handles = [Line2D([], [], color=colors[label], linewidth=2.5, label=label) for label in shown]
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label="validation loss (eval mode)"),
        Line2D([], [], color="0.3", linestyle="--", label="train loss (training mode, with dropout)"),
    ]
    axes[columns - 1].legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small"
    )
    title = f"{task}: learning curves, mean over the seeds that reached each epoch"
    if len(with_curves) > len(shown):
        best = "accuracy" if classification else "loss"
        title += f"\n{len(shown)} of {len(with_curves)} configurations shown: baseline and best mean validation {best}"
    fig.suptitle(title, fontsize="medium")
    return fig


# ---------------------------------------------------------------- options: size, resolution, style


MIN_INCHES, MAX_INCHES = 1.0, 100.0
MAX_PIXELS = 2**16 - 1  # Agg draws at most 65535 pixels a side


def available_styles() -> list[str]:
    """The matplotlib styles `--style` takes: 'default' (matplotlib's own rcParams) and those that ship with
    matplotlib (or sit in the user's stylelib)."""
    return ["default", *sorted(plt.style.available)]


def check_options(*, size: tuple[float, float] | None, dpi: int, style: str | None, font_size: float | None) -> None:
    """Refuse a figure size outside 1–100 inches a side, a dpi below 10 or making a side wider than Agg can draw,
    a style that is neither a name of available_styles() nor a .mplstyle file, a font size outside 4–72 pt."""
    if size is not None:
        width, height = size
        if not all(math.isfinite(v) and MIN_INCHES <= v <= MAX_INCHES for v in size):
            raise UserError(f"figure size {width:g}x{height:g}: each side from {MIN_INCHES:g} to {MAX_INCHES:g} inches")
        if max(size) * dpi > MAX_PIXELS:
            raise UserError(
                f"figure size {width:g}x{height:g} at {dpi} dpi is {max(size) * dpi:.0f} pixels a side; "
                f"at most {MAX_PIXELS}"
            )
    if dpi < 10 or dpi > 2400:
        raise UserError(f"dpi {dpi}: from 10 to 2400")
    if font_size is not None and not (math.isfinite(font_size) and 4.0 <= font_size <= 72.0):
        raise UserError(f"font size {font_size:g}: from 4 to 72 points")
    if style is not None and style not in available_styles() and not _style_file(style):
        raise UserError(f"unknown style '{style}'; choose one of: {', '.join(available_styles())}, or a .mplstyle file")


def _style_file(style: str) -> bool:
    return style.endswith(".mplstyle") and Path(style).is_file()


@contextmanager
def plot_style(style: str | None = None, font_size: float | None = None) -> Iterator[None]:
    """Figures drawn inside use matplotlib's `style` (see available_styles) and `font_size` points as the base
    font (titles and legends scale with it); the previous settings come back after."""
    with plt.style.context(style or []), plt.rc_context({"font.size": font_size} if font_size else {}):
        yield


def _save(fig: Figure, path: Path, fmt: str, dpi: int = PNG_DPI) -> None:
    try:
        if fmt == "png":
            fig.savefig(path, format="png", dpi=dpi)
        else:
            fig.savefig(path, format="svg", metadata={"Date": None})  # no timestamp: reruns give the same file
    except OSError as error:
        raise os_error(path, "write", error) from None
    finally:
        plt.close(fig)


# ---------------------------------------------------------------- history --plot


def _history_panels(history: "History") -> list[tuple[str, list["Trend"]]]:
    """A panel per task, or several of at most MAX_LINES lines each (plot_rules: lines a reader tells apart in one
    panel, as the keep-rate plot's facets) where a task has more configurations, titled 'task (1/2)'."""
    panels = []
    for task in history.tasks():
        trends = [trend for trend in history.trends if trend.task == task]
        chunks = [trends[i : i + MAX_LINES] for i in range(0, len(trends), MAX_LINES)]
        for k, chunk in enumerate(chunks, start=1):
            panels.append((task if len(chunks) == 1 else f"{task} ({k}/{len(chunks)})", chunk))
    return panels


def plot_history(history: "History") -> Figure:
    """Each configuration's figure across the runs (x: the runs oldest first, by number, date and commit): its mean
    over seeds with the 95% CI as bars clipped to what the figure can be (plot_rules.bounds: accuracies and errors
    within 0-100%, losses and seconds at 0, gap_acc within ±100 points), a panel per task (at most MAX_LINES = 6
    lines each), the runs where it moved significantly from the run before ringed: a green triangle up where it
    got better, a red one down where it got worse. Lines of one panel are set slightly apart, so that equal
    figures do not hide each other."""
    shown = METRICS[history.metric]
    limits = bounds(shown)
    panels = _history_panels(history)
    runs = history.runs
    width = max(8.0, 5.0 + 0.9 * len(runs))
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(width, 0.8 + 3.1 * len(panels)), layout="constrained", squeeze=False
    )
    flags = {"improvement": ("^", "tab:green"), "degradation": ("v", "tab:red")}
    for ax, (title, trends) in zip(axes[:, 0], panels):
        dodge = 0.18 / max(1, len(trends) - 1)  # set apart: equal figures of two lines stay visible
        for i, (color, trend) in enumerate(zip(_colors(len(trends)), trends)):
            offset = (i - (len(trends) - 1) / 2) * dodge
            held = [(k, p) for k, p in enumerate(trend.points) if p is not None and p.n]
            x = np.array([k + offset for k, _ in held], dtype=float)
            y = np.array([p.mean * shown.scale for _, p in held], dtype=float)
            half = np.array([p.ci * shown.scale for _, p in held], dtype=float)
            half = np.where(np.isfinite(half), half, 0.0)  # no bar where one seed gives no interval
            low, high = band(y, half, limits)  # an error of -2% is no possible outcome: the bar stops at 0
            ax.errorbar(
                x,
                y,
                yerr=np.vstack([y - low, high - y]),
                fmt="-o",
                color=color,
                markersize=4,
                capsize=2,
                label=trend.label,
                zorder=3,
            )
            for (k, _), xk, yk in zip(held, x, y):
                if trend.changes[k]:
                    marker, ring = flags[trend.changes[k]]
                    ax.scatter(
                        [xk], [yk], marker=marker, s=140, facecolor="none", edgecolor=ring, linewidth=1.6, zorder=4
                    )
        ax.set_xticks(range(len(runs)), [f"#{k}\n{run.date[:10]}\n{run.commit}" for k, run in enumerate(runs, 1)])
        ax.set_xlim(-0.5, len(runs) - 0.5)
        ax.set_ylabel(shown.title)
        ax.set_title(title, fontsize="medium")
        ax.grid(True, alpha=0.3)
        handles = ax.get_legend_handles_labels()[0] + [
            Line2D(
                [], [], marker=m, color=c, linestyle="", markerfacecolor="none", label=f"moved significantly: {what}"
            )
            for what, (m, c) in zip(("better", "worse"), flags.values())
        ]
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
    fig.suptitle(
        f"{shown.title} per run: mean ± 95% CI over seeds{_clipped_phrase([limits])}\n"
        "rings: a significant move from the run before "
        f"({TEST_NAMES[history.method]}, Holm per task and step, α = {history.alpha:g})",
        fontsize="medium",
    )
    return fig


def write_history_plot(history: "History", path: Path) -> Path:
    """plot_history into `path`, PNG or SVG as its suffix says."""
    fmt = plot_format(path.name)
    if not fmt:
        raise UserError(f"--plot {path}: name a .png or .svg file")
    _save(plot_history(history), path, fmt)
    return path


# ---------------------------------------------------------------- every figure of some results


def check_reference(summary: pd.DataFrame, tasks: Sequence[str], reference: str, metric: str | None) -> None:
    """Refuse `reference` where it would draw nothing: a figure that is no test error or accuracy (`metric`), or
    results none of whose configurations of `tasks` matches a published row (naming what the rows expect)."""
    from .reference import is_mapped, load_reference, match_reference

    if metric is not None and metric not in ("test_error", "test_acc"):
        raise UserError(
            f"--reference {reference} draws published test errors: use it without --metric, or with --metric "
            f"test_error or test_acc, not {metric}"
        )
    table = load_reference(reference)
    shown = summary[summary["task"].isin(tasks)]
    matched = match_reference(shown, table)
    if matched["ours_test_error_pct"].notna().any():
        return
    mapped = table[is_mapped(table)]
    expected = "; ".join(
        f"{task}: {', '.join(dict.fromkeys(rows['model']))}" for task, rows in mapped.groupby("task", sort=False)
    )
    raise UserError(
        f"--reference {reference}: no configuration of task(s) {', '.join(tasks)} matches a published row (task, "
        f"model, keep rate, input keep rate and regularizer must agree); its rows expect {expected} "
        f"(report --reference {reference} says why each row matched or not)"
    )


Job = tuple[str, Callable[[], Figure]]


def tuned_task_names(results: pd.DataFrame) -> list[str]:
    """The tasks of a tuned comparison, in order of first appearance (never a set's order, which varies from run
    to run): those with any tune row, even where no trial has a figure (every tune cell failed). Their rows are
    never pooled into configurations of a grid."""
    if not has_tuning_rows(results):
        return []
    return list(dict.fromkeys(results.loc[results["phase"].astype("string") == "tune", "task"].astype(str)))


def task_figures(
    results: pd.DataFrame,
    epochs: pd.DataFrame | None,
    summary: pd.DataFrame,
    task: str,
    *,
    tuned: bool | None = None,
    metric: str | None = None,
    reference: str | None = None,
    order: SuiteOrder | None = None,
    size: tuple[float, float] | None = None,
) -> list[Job]:
    """The figures of one task as (kind, draw) pairs, drawn only when called (inside plot_style, for a style):
    `keep-rate` (with `reference`'s published errors beside the configurations they match), `gap-heatmap`,
    `train-size` where the task states two training-set sizes or more (plot_train_size), and `learning-curves` where
    `epochs` holds curves of the task's ok cells; a tuned task (`tuned`, by default: the results hold a tune row of
    it, see tuned_task_names) `tuned` (plot_tuned), `tuning` (plot_tuning) and the learning curves of the chosen
    settings instead, nothing where no trial has a figure. `summary` is summarize(results) (of a grid task's rows; a
    tuned task reads `results` only). `metric` (what the keep-rate and the tuned plot show) and `size` as
    write_plots takes them, unchecked: write_plots checks them first."""
    if tuned is None:
        tuned = task in tuned_task_names(results)
    jobs: list[Job]
    if tuned:
        if task not in set(trial_figures(results)["task"]):  # every tune cell failed: no trial, no choice to draw
            return []
        jobs = [
            ("tuned", lambda: plot_tuned(results, task, metric=metric, order=order, size=size)),
            ("tuning", lambda: plot_tuning(results, task, order=order, size=size)),
        ]
        curve_rows = chosen_epoch_rows(results, task, order)
    else:
        jobs = [
            ("keep-rate", lambda: plot_keep_rate(summary, task, metric=metric, reference=reference, size=size)),
            ("gap-heatmap", lambda: plot_gap_heatmap(summary, task, size=size)),
        ]
        if not sized_rows(summary, task).empty:
            jobs.append(("train-size", lambda: plot_train_size(summary, task, metric=metric, size=size)))
        curve_rows = results[results["task"] == task]
    if epochs is not None and len(epochs):
        ok = latest_rows(results)
        ok = ok[(ok["status"] == "ok") & ok["cell_id"].isin(curve_rows["cell_id"])]
        if set(epochs["cell_id"].astype(str)) & set(ok["cell_id"].astype(str)):
            curves = epochs
            jobs.append(("learning-curves", lambda: plot_learning_curves(curves, curve_rows, task, size=size)))
    return jobs


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = PNG_DPI) -> bytes:
    """A figure as the bytes of a PNG or SVG file (an SVG without its date, so that reruns give the same bytes);
    the figure is closed."""
    buffer = io.BytesIO()
    try:
        if fmt == "svg":
            fig.savefig(buffer, format="svg", metadata={"Date": None})
        else:
            fig.savefig(buffer, format=fmt, dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def write_plots(
    results: pd.DataFrame,
    epochs: pd.DataFrame | None,
    out_dir: Path,
    *,
    fmt: str = "png",
    tasks: Sequence[str] | None = None,
    reference: str | None = None,
    order: SuiteOrder | None = None,
    metric: str | None = None,
    size: tuple[float, float] | None = None,
    dpi: int = PNG_DPI,
    style: str | None = None,
    font_size: float | None = None,
) -> list[Path]:
    """Per task: `<task>-keep-rate.<fmt>`, `<task>-gap-heatmap.<fmt>`, `<task>-train-size.<fmt>` where the task has
    cells of two training-set sizes or more (Figure 10 of the paper: plot_train_size) and, when `epochs` has curves
    of the task's cells, `<task>-learning-curves.<fmt>`, in `out_dir` (created). A tuned task (the results hold its
    tune rows) gets `<task>-tuned.<fmt>` (plot_tuned: each method's chosen setting), `<task>-tuning.<fmt>`
    (plot_tuning: every trial on validation) and the learning curves of the chosen settings instead: a keep-rate
    plot or a heatmap would pool each method's trials into configurations of the grid. `metric` is what the
    keep-rate and the tuned plot show; with `reference` the published test errors that match a configuration are
    marked on the keep-rate plot (refused where none matches). `size` (inches, every figure), `dpi` (png), `style`
    and `font_size` (see plot_style) are checked before anything is drawn. Lines, heatmap rows and tasks follow the
    suite's order (`order`, see report.order)."""
    if fmt not in PLOT_FORMATS:
        raise UserError(f"unknown plot format '{fmt}'; choose one of: {', '.join(PLOT_FORMATS)}")
    check_options(size=size, dpi=dpi, style=style, font_size=font_size)
    if metric is not None and metric not in METRIC_CHOICES:
        raise UserError(f"unknown metric '{metric}'; choose one of: {', '.join(METRIC_CHOICES)}")
    # A task with any tune row is a tuned one, even where no trial has a figure: its rows are never pooled.
    tuned = tuned_task_names(results)
    grid_results = results[~results["task"].isin(tuned)] if tuned else results
    summary = summarize(grid_results, order=order)
    known = list(dict.fromkeys([*(summary["task"] if len(summary) else []), *tuned]))
    if not known:
        raise UserError("no results rows to plot")
    if tasks is None:
        tasks = [t for t in dict.fromkeys([*(order.tasks if order else ()), *known]) if t in known]
    else:
        missing = [t for t in tasks if t not in known]
        if missing:
            raise UserError(f"no results for task(s) {', '.join(missing)}; tasks in the results: {', '.join(known)}")
    grid_tasks = [t for t in dict.fromkeys(tasks) if t not in tuned]
    tuned_tasks = [t for t in dict.fromkeys(tasks) if t in tuned]
    check_metric(summary, grid_tasks, metric)
    with_trials = set(trial_figures(results)["task"]) if tuned else set()
    check_tuned_metric(results, [t for t in tuned_tasks if t in with_trials], metric, order)
    if reference is not None:
        if not grid_tasks:
            raise UserError(
                f"--reference {reference}: a tuned comparison's results; published numbers stand beside configurations"
                " of a grid (report --reference), not beside tuned methods"
            )
        check_reference(summary, grid_tasks, reference, metric)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(out_dir, "create the folder", error) from None
    written: list[Path] = []
    stems: set[str] = set()
    with plot_style(style, font_size):
        for task in dict.fromkeys(tasks):
            stem, base, copy = safe_name(task), safe_name(task), 1
            while stem in stems:  # 'a:b' and 'a-b' would otherwise overwrite each other's files
                copy += 1
                stem = f"{base}-{copy}"
            stems.add(stem)
            jobs = task_figures(
                results,
                epochs,
                summary,
                task,
                tuned=task in tuned,
                metric=metric,
                reference=reference,
                order=order,
                size=size,
            )
            for kind, draw in jobs:
                path = out_dir / f"{stem}-{kind}.{fmt}"
                _save(draw(), path, fmt, dpi)
                written.append(path)
    return written
