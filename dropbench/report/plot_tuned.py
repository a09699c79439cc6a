"""The figures of a tuned comparison (a suite with a [tuning] table): each method's chosen setting, tested
(`plot_tuned`), and every trial's validation figure against the hyperparameters it swept (`plot_tuning`). A
method's trials are never pooled into one configuration, as a keep-rate plot of such results would pool them.

Rendering only: the choice and the figures come from `report.tuning` (choose_on_validation, tuned_report,
chosen_rows). Headless, as report.plots: the Agg backend is selected before pyplot is imported.
"""

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from ..errors import UserError  # noqa: E402
from .order import SuiteOrder  # noqa: E402
from .plot_rules import Measure, axis_range, band, keep_rate_measures  # noqa: E402
from .tuning import choose_on_validation, trial_figures  # noqa: E402

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


def plot_tuning(
    results: pd.DataFrame, task: str, *, order: SuiteOrder | None = None, size: tuple[float, float] | None = None
) -> Figure:
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
        figsize=size or (max(4.8, 3.1 * len(methods)), 0.6 + 2.7 * len(axes_used)),
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


def _tuned_measure(metric: str | None, classification: bool) -> Measure:
    """The figure the tuned plot draws: test error (MSE for regression) by default, else `metric`."""
    return keep_rate_measures(metric, classification)[0]


def _tuned_figures(results: pd.DataFrame, task: str, measure: Measure, order: SuiteOrder | None) -> pd.DataFrame:
    """Per method of `task` (choose_on_validation's order): its reported row of tuned_report, and `value`, `half`
    (display units) and `seeds` of `measure` over the rows that report it (tuning.chosen_rows)."""
    from .stats import mean_ci
    from .tuning import chosen_rows, tuned_report

    report = tuned_report(results, order=order)
    report = report[report["task"] == task].reset_index(drop=True)
    if report.empty:
        raise UserError(f"no tuning rows for task '{task}'")
    rows = chosen_rows(results, order=order)
    rows = rows[rows["task"] == task]
    if "test_acc" in rows:
        rows = rows.assign(test_error=1.0 - pd.to_numeric(rows["test_acc"], errors="coerce"))
    values, halves, seeds = [], [], []
    for method in report["method"]:
        figures = rows.loc[rows["method"] == method, measure.column] if measure.column in rows else pd.Series([])
        estimate = mean_ci(pd.to_numeric(figures, errors="coerce").dropna().astype(float).tolist())
        value, half = measure.display(np.array([estimate.mean]), np.array([estimate.half_width]))
        values.append(float(value[0]))
        halves.append(float(half[0]))
        seeds.append(estimate.n)
    return report.assign(value=values, half=halves, seeds=seeds)


def _protocol_phrase(figures: pd.DataFrame) -> str:
    from .tuning import PROTOCOLS

    protocols = [p for p in PROTOCOLS if p in set(figures["protocol"])]
    most = int(figures["seeds"].max()) if len(figures) else 0
    fewest = int(figures.loc[figures["seeds"] > 0, "seeds"].min()) if (figures["seeds"] > 0).any() else 0
    count = f"{most}" if fewest == most else f"{fewest}–{most}"
    phases = " and ".join({"fresh": "fresh evaluation", "same": "tuning"}[p] for p in protocols) or "no"
    return f"over {count} {phases} seed{'s' * (most != 1)}"


def _method_label(method: str, configuration: str) -> str:
    """'l2 0.0312', 'dropout keep 0.465', 'max-norm+dropout 0.671 keep 0.574': the method and what its chosen
    setting says beyond the method's name (its configuration label less the regularizer the method names)."""
    setting = configuration
    for regularizer in dict.fromkeys([method.split("+")[0], "none"]):
        if setting == regularizer or setting.startswith(f"{regularizer} "):
            setting = setting[len(regularizer) :].strip()
            break
    return f"{method} {setting}".strip()


def plot_tuned(
    results: pd.DataFrame,
    task: str,
    *,
    metric: str | None = None,
    order: SuiteOrder | None = None,
    size: tuple[float, float] | None = None,
) -> Figure:
    """A tuned comparison's answer: per method (a row, the tuned baseline 'none' first) the test error (MSE for
    regression; `metric` for another figure) of its setting chosen on validation, mean ± 95% CI (clipped to what
    is possible) over the rows report --tuned reads (the evaluation phase's fresh seeds, or the tuning seeds where
    the suite evaluated on them), with the tuned baseline as a dashed line and its interval as a shaded span, and
    report --tuned's marks (▲/▼ significantly better/worse than the tuned baseline) where the figure is the one
    they test. The trials of a method are never pooled: each method is its one chosen setting."""
    from .grid import BETTER_MARK, WORSE_MARK
    from .stats import TEST_NAMES
    from .tuning import BASELINE_METHOD

    classification = bool(
        "test_acc" in results
        and pd.to_numeric(results.loc[results["task"] == task, "test_acc"], errors="coerce").notna().any()
    )
    measure = _tuned_measure(metric, classification)
    figures = _tuned_figures(results, task, measure, order)
    labels = [_method_label(str(m), str(c)) for m, c in zip(figures["method"], figures["configuration"])]
    height = 1.6 + 0.42 * len(figures)
    fig, ax = plt.subplots(figsize=size or (7.5 + 0.05 * max(map(len, labels)), height), layout="constrained")
    y = -np.arange(len(figures), dtype=float)  # the first method on top
    value, half = figures["value"].to_numpy(float), figures["half"].to_numpy(float)
    low, high = band(value, half, measure.limits)
    shown = axis_range(value, low, high, measure.limits)
    baseline = (figures["method"] == BASELINE_METHOD).to_numpy()
    if baseline.any() and np.isfinite(value[baseline]).all():
        base = int(np.flatnonzero(baseline)[0])
        if np.isfinite(low[base]) and np.isfinite(high[base]):
            ax.axvspan(low[base], high[base], color="gold", alpha=0.18, zorder=1)
        ax.axvline(value[base], color="0.3", linestyle="--", linewidth=1.0, zorder=2)
    err = np.vstack([value - low, high - value])
    err = np.where(np.isfinite(err), err, 0.0)
    ax.errorbar(value, y, xerr=err, fmt="none", ecolor="0.35", capsize=3, zorder=3)
    ax.scatter(value[~baseline], y[~baseline], marker="o", s=40, color="C0", zorder=4)
    ax.scatter(value[baseline], y[baseline], marker="D", s=80, facecolor="gold", edgecolor="black", zorder=4)
    # report --tuned's marks test the test figure (accuracy or loss); an error is the same test, read downwards.
    marked = measure.column in ("test_acc", "test_error", "test_loss")
    marks = {"improvement": BETTER_MARK, "degradation": WORSE_MARK}
    for i, row in figures.iterrows():
        if marked and row["change"] in marks and np.isfinite(high[i]):
            ax.annotate(
                marks[row["change"]],
                (min(high[i], shown.high), y[i]),
                xytext=(5, 0),
                textcoords="offset points",
                va="center",
                fontsize="medium",
                color="green" if row["change"] == "improvement" else "red",
            )
        if not row["seeds"]:
            ax.annotate(
                "no figure",
                (shown.low, y[i]),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize="small",
                color="0.4",
            )
    # Beyond-the-axis markers point along x here: drawn on a transposed copy of the rule.
    below, above = shown.beyond(value)
    for mask, edge, marker in ((below, shown.low, "<"), (above, shown.high, ">")):
        for yi, vi in zip(y[mask], value[mask]):
            ax.scatter([edge], [yi], marker=marker, s=60, color="C0", edgecolor="black", zorder=6, clip_on=False)
            ax.annotate(
                f"{vi:.{1 if measure.scale == 100.0 else 3}f}",
                (edge, yi),
                xytext=(-4, 7),
                textcoords="offset points",
                ha="right",
                fontsize="x-small",
                annotation_clip=False,
            )
    room = 0.06 * (shown.high - shown.low) if marked and figures["change"].isin(list(marks)).any() else 0.0
    ax.set_xlim(shown.low, shown.high + room)  # room for the marks beyond the highest interval
    ax.set_yticks(y, labels)
    ax.set_ylim(y[-1] - 0.7, 0.7)
    ax.set_xlabel(measure.label)
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(
        f"{task}: {measure.label.split(' (')[0]} of each method's setting chosen on validation\n"
        f"mean ± 95% CI {_protocol_phrase(figures)}",
        fontsize="medium",
    )
    handles = []
    if baseline.any():
        handles.append(Line2D([], [], color="0.3", linestyle="--", label="tuned baseline (none); shaded: its 95% CI"))
    tested = figures[figures["p_raw"].notna()] if marked else figures.iloc[:0]
    if len(tested):
        first = tested.iloc[0]
        handles.append(
            Line2D(
                [],
                [],
                linestyle="",
                marker="$▲▼$",
                markersize=14,
                color="0.2",
                label=f"significantly better/worse than tuned none: {TEST_NAMES[str(first['test'])]}, Holm across "
                f"{int(tested['family'].max())}, α = {float(first['alpha']):g}",
            )
        )
    if handles:  # below the panel: the method labels take the left, the intervals the whole width
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize="small", frameon=False)
    return fig


def chosen_epoch_rows(results: pd.DataFrame, task: str, order: SuiteOrder | None) -> pd.DataFrame:
    """The rows behind a tuned task's reported figures (each method's chosen setting), whose learning curves the
    tuned run's figure of them draws: never a trial that was not chosen."""
    from .tuning import chosen_rows

    rows = chosen_rows(results, order=order)
    return rows[rows["task"] == task]


def check_tuned_metric(
    results: pd.DataFrame, tasks: Sequence[str], metric: str | None, order: SuiteOrder | None
) -> None:
    """Refuse a `metric` the chosen settings of a tuned task have no figure of (as check_metric for a grid)."""
    if metric is None:
        return
    for task in tasks:
        figures = plot_tuned_figures(results, task, metric=metric, order=order)
        if not (figures["seeds"] > 0).any():
            raise UserError(f"--metric {metric}: the chosen settings of task {task} have no such figures")


def plot_tuned_figures(
    results: pd.DataFrame, task: str, *, metric: str | None = None, order: SuiteOrder | None = None
) -> pd.DataFrame:
    """What plot_tuned draws for `task`, as a table: tuned_report's row of each method with `value` and `half`
    (the figure and its CI half-width in display units) and `seeds`."""
    classification = _tuned_classification(results, task)
    return _tuned_figures(results, task, _tuned_measure(metric, classification), order)


def _tuned_classification(results: pd.DataFrame, task: str) -> bool:
    rows = results[results["task"] == task]
    return "test_acc" in rows and bool(pd.to_numeric(rows["test_acc"], errors="coerce").notna().any())
