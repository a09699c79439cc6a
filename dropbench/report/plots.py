"""Figures of a results table: error against the keep rate, gap heatmaps, learning curves, and for tuned runs the
validation figure of every trial against each tuned hyperparameter.

Rendering only: every statistic comes from `report.summarize` (the learning curves average the per-epoch
points of a configuration's seeds, as only the epochs file has them). Headless: the Agg backend is
selected here, before pyplot is imported, and nothing is ever shown.
"""

import io
import math
import re
from collections.abc import Callable, Sequence
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
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ..catalogue import METRICS, PLOT_FORMATS, plot_format  # noqa: E402
from ..errors import UserError  # noqa: E402
from ..files import os_error  # noqa: E402
from .labels import config_label, varying  # noqa: E402
from .order import SuiteOrder  # noqa: E402
from .stats import TEST_NAMES  # noqa: E402
from .summary import CONFIG_COLUMNS, latest_rows, summarize, with_config_defaults  # noqa: E402
from .tuning import choose_on_validation, has_tuning_rows, trial_figures  # noqa: E402

if TYPE_CHECKING:
    from .history import History, Trend

PNG_DPI = 150
MAX_CURVES = 8
KEEP_LABEL = "keep rate p (hidden units)"
BASELINE_LABEL = "baseline (none, keep 1.0)"


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


def _colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _seeds_phrase(rows: pd.DataFrame) -> str:
    most = int(rows["n"].max()) if len(rows) else 0
    fewest = int(rows.loc[rows["n"] > 0, "n"].min()) if (rows["n"] > 0).any() else 0
    count = f"{most}" if fewest == most else f"{fewest}–{most}"
    return f"{count} seed{'s' * (most != 1)}"


def _panel(ax: Axes, rows: pd.DataFrame, metric: str, scale: float, classification: bool, ylabel: str) -> None:
    """One panel: a line per label (markers at each keep rate, a ±CI band where the CI exists)."""
    labels = list(rows["label"].drop_duplicates())
    for color, label in zip(_colors(len(labels)), labels):
        line = rows[rows["label"] == label].sort_values("keep_rate", kind="stable")
        x = line["keep_rate"].to_numpy(dtype=float)
        mean = line[f"{metric}_mean"].to_numpy(dtype=float)
        half = line[f"{metric}_ci"].to_numpy(dtype=float) * scale
        y = (1.0 - mean) * 100.0 if classification else mean
        ax.plot(x, y, marker="o", markersize=5, color=color, label=label, zorder=3)
        if np.isfinite(half).any():
            # NaN bounds leave a hole: no band at a point without a CI (one seed).
            ax.fill_between(x, y - half, y + half, color=color, alpha=0.18, linewidth=0, zorder=2)
    baseline = rows[rows["baseline"]]
    if len(baseline):
        mean = baseline[f"{metric}_mean"].to_numpy(dtype=float)
        y = (1.0 - mean) * 100.0 if classification else mean
        # A scatter, not a line: ax.get_lines() holds exactly one line per label.
        ax.scatter(
            baseline["keep_rate"].to_numpy(dtype=float),
            y,
            marker="D",
            s=90,
            facecolor="gold",
            edgecolor="black",
            linewidth=0.9,
            zorder=4,
            label=BASELINE_LABEL,
        )
    keeps = sorted(rows["keep_rate"].dropna().unique())
    ax.set_xticks(keeps, [f"{k:g}" for k in keeps])
    if len(keeps) > 1:
        pad = 0.06 * (keeps[-1] - keeps[0])
        ax.set_xlim(keeps[0] - pad, keeps[-1] + pad)
    ax.set_xlabel(KEEP_LABEL)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)


def plot_keep_rate(summary: pd.DataFrame, task: str, ax_pair: tuple[Axes, Axes] | None = None) -> Figure:
    """Srivastava et al. 2014, Figure 9: test and training error (MSE for regression) against the hidden
    keep rate, a line per regularizer (and per other varying setting), bands = mean ± 95% CI half-width,
    the baseline marked with a diamond, as in the tables (★ there is the choice on validation). Draws into
    `ax_pair` (test, training) when given; returns the figure."""
    rows = _with_labels(_task_rows(summary, task))
    classification = bool(rows["classification"].iloc[0])
    if ax_pair is None:
        fig, (ax_test, ax_train) = plt.subplots(1, 2, figsize=(11.0, 4.4), layout="constrained")
    else:
        ax_test, ax_train = ax_pair
        owner = ax_test.figure
        fig = owner if isinstance(owner, Figure) else owner.figure  # a SubFigure's root figure
    if classification:
        test_label, train_label, scale = "test error (%)", "training error (%)", 100.0
        test_metric, train_metric = "test_acc", "train_acc"
    else:
        test_label, train_label, scale = "test MSE (standardized target)", "training MSE (standardized target)", 1.0
        test_metric, train_metric = "test_loss", "train_loss"
    _panel(ax_test, rows, test_metric, scale, classification, test_label)
    _panel(ax_train, rows, train_metric, scale, classification, train_label)
    what = "error" if classification else "MSE"
    if ax_pair is None:
        fig.suptitle(f"{task}: {what} against the hidden keep rate · mean ± 95% CI over {_seeds_phrase(rows)}")
        ax_test.set_title("test set")
        ax_train.set_title("training set (eval mode, after training)")
    else:  # the figure may hold other plots: the task goes into the panels' own titles
        ax_test.set_title(f"{task}: test set")
        ax_train.set_title(f"{task}: training set (eval mode)")
    ax_train.legend(
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        borderaxespad=0.0,
        fontsize="small",
        title="regularizer besides dropout",
        title_fontsize="small",
    )
    return fig


def plot_gap_heatmap(summary: pd.DataFrame, task: str) -> Figure:
    """Regularizer (rows, in order of first appearance) × keep rate (columns, ascending): the mean gap,
    train − test accuracy in percentage points (classification) or test − train MSE (regression)."""
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
    fig, ax = plt.subplots(figsize=(width, height), layout="constrained")
    finite = values[np.isfinite(values)]
    limit = float(np.abs(finite).max()) if finite.size else 0.0
    limit = limit if limit > 0 else 1.0
    # Diverging and centred on zero: no gap is white, overfitting red, a test figure better than train blue.
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.85")
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=-limit, vmax=limit, aspect="auto")
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
    bar = fig.colorbar(image, ax=ax, shrink=0.9)
    if classification:
        bar.set_label("gap (percentage points)")
        what = "gap = train acc − test acc"
    else:
        bar.set_label("gap (MSE, standardized target)")
        what = "gap = test MSE − train MSE"
    note = " · outlined: baseline" if baseline_cells else ""
    ax.set_title(f"{task}: {what}\nmean over {_seeds_phrase(rows)}, eval mode{note}", fontsize="medium")
    return fig


def plot_learning_curves(epochs: pd.DataFrame, rows: pd.DataFrame, task: str) -> Figure:
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

    fig, ax = plt.subplots(figsize=(9.5, 5.0), layout="constrained")
    handles = []
    means = joined.groupby(["label", "epoch"], sort=True)[["fit_loss", "val_loss"]].mean()
    for color, label in zip(_colors(len(shown)), shown):
        curve = means.loc[label]
        x = curve.index.to_numpy(dtype=float)
        ax.plot(
            x,
            curve["val_loss"].to_numpy(dtype=float),
            color=color,
            linestyle="-",
            marker=".",
            label=f"{label}: validation loss",
        )
        ax.plot(
            x,
            curve["fit_loss"].to_numpy(dtype=float),
            color=color,
            linestyle="--",
            label=f"{label}: train loss (training mode, with dropout)",
        )
        handles.append(Line2D([], [], color=color, linewidth=2.5, label=label))
    handles += [
        Line2D([], [], color="0.3", linestyle="-", label="validation loss (eval mode)"),
        Line2D([], [], color="0.3", linestyle="--", label="train loss (training mode, with dropout)"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (cross-entropy)" if classification else "loss (MSE, standardized target)")
    locator = ax.xaxis.get_major_locator()
    if isinstance(locator, MaxNLocator):  # a linear axis's AutoLocator; set_params of other locators is a no-op
        locator.set_params(integer=True)
    ax.grid(True, alpha=0.3)
    title = f"{task}: learning curves, mean over the seeds that reached each epoch"
    if len(with_curves) > len(shown):
        best = "accuracy" if classification else "loss"
        title += f"\n{len(shown)} of {len(with_curves)} configurations shown: baseline and best mean validation {best}"
    ax.set_title(title, fontsize="medium")
    return fig


# Hyperparameters a tuning may sweep, as the tuning plot names its x axes (strength: see _strength_name).
TUNED_AXES = {
    "strength": "strength",
    "keep_rate": "keep rate p (hidden units)",
    "input_keep_rate": "input keep rate",
    "lr": "learning rate",
    "momentum": "momentum",
    "batch_size": "batch size",
}
STRENGTH_NAMES = {"l2": "L2 weight λ", "l1": "L1 weight λ", "max-norm": "max-norm c", "early-stopping": "patience"}


def _swept(trials: pd.DataFrame) -> dict[str, pd.Series]:
    """The hyperparameters whose values differ among one method's trials, as numbers per trial."""
    swept = {}
    for column in TUNED_AXES:
        if column not in trials:
            continue
        values = pd.to_numeric(trials[column], errors="coerce")
        if values.notna().any() and values.nunique() > 1:
            swept[column] = values
    return swept


def _strength_name(trials: pd.DataFrame) -> str:
    regularizers = [r for r in dict.fromkeys(trials["regularizer"].astype(str)) if r != "none"]
    names = [STRENGTH_NAMES.get(r, f"{r} strength") for r in regularizers]
    return " / ".join(names) or "strength"


def plot_tuning(results: pd.DataFrame, task: str, *, order: SuiteOrder | None = None) -> Figure:
    """A tuned run's choice: per method (a column of panels) the validation figure of each trial (mean over its
    tuning seeds, bars: 95% CI) against each hyperparameter the method's trials sweep (a row of panels:
    strength, on a log axis where its values span a decade or more, keep rate, learning rate, ...), the
    trial chosen on validation marked with a red star. Reads what the choice reads (tuning.trial_figures):
    tune rows, validation columns."""
    figures = trial_figures(results)
    figures = figures[figures["task"] == task]
    if figures.empty:
        raise UserError(f"no tuning rows for task '{task}'")
    chosen = choose_on_validation(results, order=order)
    chosen = chosen[chosen["task"] == task]
    methods = list(chosen["method"])
    by_method = {m: figures[figures["method"] == m] for m in methods}
    swept = {m: _swept(trials) for m, trials in by_method.items()}
    axes_used = [c for c in TUNED_AXES if any(c in s for s in swept.values())] or ["trial"]
    metric = str(figures["selection_metric"].iloc[0])
    classification = metric == "val_acc"
    scale = 100.0 if classification else 1.0
    fig, grid = plt.subplots(
        len(axes_used),
        len(methods),
        figsize=(max(4.8, 3.1 * len(methods)), 0.6 + 2.7 * len(axes_used)),
        layout="constrained",
        squeeze=False,
    )
    for j, method in enumerate(methods):
        trials = by_method[method]
        pick = chosen[chosen["method"] == method]["trial"].iloc[0]
        for i, column in enumerate(axes_used):
            ax = grid[i][j]
            if column == "trial":
                x = trials["trial"].astype(float)
            elif column in swept[method]:
                x = swept[method][column]
            else:
                ax.text(0.5, 0.5, f"{TUNED_AXES[column]}\nnot tuned", ha="center", va="center", color="0.5")
                ax.set_axis_off()
                continue
            y = trials["mean"].to_numpy(dtype=float) * scale
            half = trials["ci"].to_numpy(dtype=float) * scale
            ax.errorbar(
                x,
                y,
                yerr=np.where(np.isfinite(half), half, 0.0),
                fmt="o",
                color="C0",
                ecolor="0.6",
                markersize=4,
                capsize=2,
                zorder=3,
            )
            best = (trials["trial"] == pick).to_numpy()
            if best.any():
                ax.scatter(
                    x[best],
                    y[best],
                    marker="*",
                    s=220,
                    color="red",
                    edgecolor="black",
                    linewidth=0.6,
                    zorder=4,
                    label="chosen on validation",
                )
            positive = x[x > 0]
            if len(positive) == len(x) and len(x) and positive.max() / positive.min() >= 10:
                ax.set_xscale("log")
            ax.set_xlabel(_strength_name(trials) if column == "strength" else TUNED_AXES.get(column, "trial"))
            ax.set_ylabel("validation accuracy (%)" if classification else "validation loss")
            ax.grid(True, alpha=0.3)
        grid[0][j].set_title(f"{method} · {len(trials)} trials", fontsize="medium")  # shown on a hidden panel too
    seeds = int(figures["seeds"].max())
    fig.suptitle(
        f"{task}: validation {'accuracy' if classification else 'loss'} of each tuning trial, mean ± 95% CI over "
        f"up to {seeds} tuning seed{'s' * (seeds != 1)}; ★ chosen on validation"
    )
    return fig


def _history_panels(history: "History") -> list[tuple[str, list["Trend"]]]:
    """A panel per task, or several of at most MAX_CURVES lines each where a task has more configurations."""
    panels = []
    for task in history.tasks():
        trends = [trend for trend in history.trends if trend.task == task]
        chunks = [trends[i : i + MAX_CURVES] for i in range(0, len(trends), MAX_CURVES)]
        for k, chunk in enumerate(chunks):
            panels.append((task if len(chunks) == 1 else f"{task} ({k + 1} of {len(chunks)})", chunk))
    return panels


def plot_history(history: "History") -> Figure:
    """Each configuration's figure across the runs (x: the runs oldest first, by number, date and commit): its mean
    over seeds with the 95% CI as bars, a panel per task (at most 8 lines each), the runs where it moved
    significantly from the run before ringed: a green triangle up where it got better, a red one down where it
    got worse. Lines of one panel are set slightly apart, so that equal figures do not hide each other."""
    shown = METRICS[history.metric]
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
            low, high = y - half, y + half
            if shown.percent and not shown.signed:  # an accuracy or an error: nothing outside 0-100% is possible
                low, high = np.clip(low, 0.0, 100.0), np.clip(high, 0.0, 100.0)
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
        f"{shown.title} per run: mean ± 95% CI over seeds\nrings: a significant move from the run before "
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


def _save(fig: Figure, path: Path, fmt: str) -> None:
    try:
        if fmt == "png":
            fig.savefig(path, format="png", dpi=PNG_DPI)
        else:
            fig.savefig(path, format="svg", metadata={"Date": None})  # no timestamp: reruns give the same file
    except OSError as error:
        raise os_error(path, "write", error) from None
    finally:
        plt.close(fig)


def _with_reference(fig: Figure, summary: pd.DataFrame, task: str, reference: str | None) -> Figure:
    """Published test errors (crosses) on the test-error panel, at the keep rates they were measured at."""
    if reference is None:
        return fig
    from .reference import load_reference, match_reference

    matched = match_reference(summary, load_reference(reference))
    rows = matched[(matched["task"] == task) & matched["ours_test_error_pct"].notna()]
    if rows.empty:
        return fig
    ax = fig.axes[0]
    ax.scatter(
        rows["keep_rate"],
        rows["test_error_pct"],
        marker="X",
        s=70,
        color="black",
        zorder=5,
        label=f"{reference} (published)",
    )
    ax.legend(fontsize="small")
    return fig


def task_figures(
    results: pd.DataFrame,
    epochs: pd.DataFrame | None,
    summary: pd.DataFrame,
    task: str,
    *,
    reference: str | None = None,
    order: SuiteOrder | None = None,
) -> list[tuple[str, Callable[[], Figure]]]:
    """The figures of one task as (kind, draw) pairs, drawn only when called: `keep-rate` (with `reference`'s
    published errors), `gap-heatmap`, `learning-curves` where `epochs` holds curves of the task's ok cells, and
    `tuning` where the results hold the task's tune rows. `summary` is summarize(results)."""
    jobs: list[tuple[str, Callable[[], Figure]]] = [
        ("keep-rate", lambda: _with_reference(plot_keep_rate(summary, task), summary, task, reference)),
        ("gap-heatmap", lambda: plot_gap_heatmap(summary, task)),
    ]
    ok = latest_rows(results)
    ok = ok[(ok["status"] == "ok") & (ok["task"] == task)]
    if epochs is not None and len(epochs) and set(epochs["cell_id"].astype(str)) & set(ok["cell_id"].astype(str)):
        jobs.append(("learning-curves", lambda: plot_learning_curves(epochs, results, task)))
    if has_tuning_rows(results) and task in set(trial_figures(results)["task"]):
        jobs.append(("tuning", lambda: plot_tuning(results, task, order=order)))
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
) -> list[Path]:
    """Per task: `<task>-keep-rate.<fmt>`, `<task>-gap-heatmap.<fmt>`, when `epochs` has curves of the task's
    cells `<task>-learning-curves.<fmt>`, and when the results hold tune rows of the task (a tuned run)
    `<task>-tuning.<fmt>` (plot_tuning), in `out_dir` (created). With `reference`, the
    published test errors that match a configuration are marked on the keep-rate plot. Lines, heatmap rows
    and tasks follow the suite's order (`order`, see report.order)."""
    if fmt not in PLOT_FORMATS:
        raise UserError(f"unknown plot format '{fmt}'; choose one of: {', '.join(PLOT_FORMATS)}")
    summary = summarize(results, order=order)
    if summary.empty:
        raise UserError("no results rows to plot")
    known = list(summary["task"].drop_duplicates())
    if tasks is None:
        tasks = known
    else:
        missing = [t for t in tasks if t not in known]
        if missing:
            raise UserError(f"no results for task(s) {', '.join(missing)}; tasks in the results: {', '.join(known)}")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise os_error(out_dir, "create the folder", error) from None
    written: list[Path] = []
    stems: set[str] = set()
    for task in dict.fromkeys(tasks):
        stem, base, copy = safe_name(task), safe_name(task), 1
        while stem in stems:  # 'a:b' and 'a-b' would otherwise overwrite each other's files
            copy += 1
            stem = f"{base}-{copy}"
        stems.add(stem)
        jobs = task_figures(results, epochs, summary, task, reference=reference, order=order)
        for kind, draw in jobs:
            path = out_dir / f"{stem}-{kind}.{fmt}"
            _save(draw(), path, fmt)
            written.append(path)
    return written
