"""The words and figures of --best, --reference, compare and history that every format shows, as text cells: each
exporter lays the same lines out its own way."""

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict

import pandas as pd

from ..catalogue import METRICS, PERCENT_METRICS
from .compare import VERDICTS, CompareResult, Comparison
from .grid import BASELINE_MARK, BETTER_MARK, WORSE_MARK
from .history import History, Point
from .labels import DISTINGUISHING, config_label
from .runs import RunInfo, changes
from .stats import TEST_NAMES
from .tuning import BASELINE_METHOD, PROTOCOLS

# ---------------------------------------------------------------- report --best

BEST_HEADERS = (
    "task",
    "configuration",
    "chosen on",
    "test figure (95% CI)",
    "gain over baseline (95% CI)",
    "p (Holm)",
    "seeds",
)
BEST_LEGEND = (
    "Chosen on the mean validation figure over seeds; the test split only reports the choice. Gain: "
    "paired test-figure difference to the baseline, Holm across the task's configurations."
)


def best_lines(best: pd.DataFrame) -> list[list[str]]:
    """report --best as text cells: accuracies in percent (gains in points), losses as they are."""
    lines = []
    for _, row in best.iterrows():
        percent = row["test_metric"] == "test_acc"
        scale, unit, sign = (100, "%", " pp") if percent else (1, "", "")
        figure = f"{row['test_mean'] * scale:.2f}{unit}" + (
            f" ± {row['test_ci'] * scale:.2f}" if row["test_ci"] == row["test_ci"] else ""
        )
        if row["gain"] != row["gain"]:
            gain, p = "it is the baseline", ""
        else:
            low, high = (f"{row[c] * scale:+.2f}" for c in ("gain_low", "gain_high"))
            interval = f" [{low}, {high}]" if row["gain_low"] == row["gain_low"] else ""
            gain = f"{row['gain'] * scale:+.2f}{sign}{interval}"
            p = "—" if row["p_value"] != row["p_value"] else f"{row['p_value']:.3g}"
        chosen = f"{row['chosen_on']} {row['val_mean'] * scale:.2f}{unit}"
        lines.append([str(row["task"]), row["configuration"], chosen, figure, gain, p, str(row["seeds"])])
    return lines


# ---------------------------------------------------------------- report --reference

REFERENCE_HEADERS = ("table", "task", "method", "architecture", "paper %", "ours", "ours %", "ours − paper", "seeds")


def reference_title(name: str) -> str:
    return f"{name}: published test error beside this run's (its tasks only)"


REFERENCE_LEGEND = (
    "ours: of this run's configurations with the paper's architecture, regularizer and keep rates, the "
    "one with the best mean validation accuracy; its test error ± 95% CI over seeds"
)


def reference_lines(rows: pd.DataFrame) -> list[list[str]]:
    """Each published row beside ours: the configuration chosen on validation (or why none matched), its test
    error ± 95% CI, the difference in points and its seeds."""
    lines = []
    for _, row in rows.iterrows():
        matched = not pd.isna(row["ours_test_error_pct"])
        ci = "" if pd.isna(row["ours_ci_pct"]) else f" ± {row['ours_ci_pct']:.2f}"
        ours = f"{row['ours_test_error_pct']:.2f}{ci}" if matched else ""
        diff = f"{row['difference_pct']:+.2f}" if matched else ""
        seeds = str(int(row["ours_n"])) if matched else ""
        which = row["ours_configuration"] if matched else row["match_note"]
        lines.append(
            [
                str(row["table"]),
                row["task"],
                row["method"],
                row["architecture"],
                f"{row['test_error_pct']:.2f}",
                which,
                ours,
                diff,
                seeds,
            ]
        )
    return lines


# ---------------------------------------------------------------- compare

LISTED_CELLS = 20  # missing cells listed per side in the table and markdown; JSON lists all of them


def units(result: CompareResult) -> tuple[int, str]:
    """Scale and unit suffix for display: percentage points for accuracy-like metrics."""
    return (100, " pp") if result.metric in PERCENT_METRICS else (1, "")


def verdict_summary(result: CompareResult) -> str:
    """The whole comparison in one line that ends with the exit code, e.g. '1 of 12 configurations worse in
    test_acc beyond 0.5 pp (exact sign-flip test, Holm per task, α = 0.05); 11 no change; exit 1'."""
    if result.exit_code == 2:
        return f"{result.reason or 'nothing to compare'}; exit 2"
    _, unit = units(result)
    counts = Counter(r.verdict for r in result.rows)
    noun = "configuration" if len(result.rows) == 1 else "configurations"
    test = f"{TEST_NAMES[result.method]}, Holm per task, α = {result.alpha:g}"
    worse = f"worse in {result.metric} beyond {result.max_drop:g}{unit}"
    parts = [f"{counts['regression']} of {len(result.rows)} {noun} {worse} ({test})"]
    others = [f"{counts[v]} {v}" for v in VERDICTS if v != "regression" and counts[v]]
    others += [
        f"{len(cells)} cells only in {side}"
        for side, cells in (("BASE", result.missing_in_new), ("NEW", result.missing_in_base))
        if cells
    ]
    if others:
        parts.append(", ".join(others))
    return "; ".join([*parts, f"exit {result.exit_code}"])


def _shown(value: float, spec: str) -> str:
    """A figure, or a dash where there is none (a configuration without a single ok pair)."""
    return "–" if value != value else format(value, spec)


def comparison_labels(result: CompareResult) -> list[str]:
    """'digits l2 0.01 keep 0.5', plus whatever else varies among the task's rows, so no two read alike."""
    rows = [asdict(r) for r in result.rows]
    columns = [c for c in DISTINGUISHING if c in Comparison.__dataclass_fields__]
    differs = {
        task: {c for c in columns if len({r[c] for r in rows if r["task"] == task}) > 1}
        for task in {r["task"] for r in rows}
    }
    return [config_label(r, differs[r["task"]], task=True, keep=True) for r in rows]


def comparison_lines(result: CompareResult) -> list[tuple[str, ...]]:
    """One tuple of display strings per configuration, the verdict last."""
    scale, unit = units(result)
    lines: list[tuple[str, ...]] = []
    for r, config in zip(result.rows, comparison_labels(result)):
        delta = "–" if r.delta != r.delta else f"{r.delta * scale:+.2f}{unit}"
        if r.ci_low == r.ci_low:
            ci = f"[{r.ci_low * scale:+.2f}, {r.ci_high * scale:+.2f}]"
        else:
            ci = "n<2" if r.n_pairs == 1 else "–"
        p = f"{r.p_value:.3g}" if r.p_value == r.p_value else ""
        # Failed or diverged cells stay out of the statistics; shown here so that they cannot hide.
        not_ok = f"{r.base_not_ok}/{r.new_not_ok}" if r.base_not_ok or r.new_not_ok else ""
        lines.append(
            (
                config,
                _shown(r.base_mean * scale, ".3f"),
                _shown(r.new_mean * scale, ".3f"),
                delta,
                ci,
                p,
                str(r.n_pairs),
                not_ok,
                r.verdict,
            )
        )
    return lines


def comparison_columns(result: CompareResult) -> tuple[str, ...]:
    """The table's headers; the interval is at level 1 − alpha, and says so."""
    level = f"{100 * (1 - result.alpha):g}% CI"
    return ("configuration", "base", "new", "delta", level, "p (Holm)", "pairs", "not ok (base/new)", "verdict")


def missing_lines(result: CompareResult) -> list[str]:
    """The cells found on one side only, at most LISTED_CELLS per side."""
    out = []
    for side, cells in (("new", result.missing_in_new), ("base", result.missing_in_base)):
        out += [f"missing in {side}: {cell}" for cell in cells[:LISTED_CELLS]]
        if len(cells) > LISTED_CELLS:
            out.append(f"missing in {side}: … and {len(cells) - LISTED_CELLS} more (--format json lists all)")
    return out


# ---------------------------------------------------------------- report --tuned

TUNED_HEADERS = (
    "method",
    "chosen setting",
    "trials",
    "protocol",
    "seeds",
    "test figure (95% CI)",
    "gap (95% CI)",
    "Δ test vs none (95% CI)",
    "p",
    "p (Holm)",
)


def tuned_tasks(tuned: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """report --tuned per task, in the report's order: (task, its rows)."""
    return [(str(task), rows) for task, rows in tuned.groupby("task", sort=False)]


def tuned_title(rows: pd.DataFrame) -> str:
    """'digits · tuned on validation accuracy (%) · test accuracy (%)': one task's table title."""
    first = rows.iloc[0]
    chosen_on, test = METRICS[first["selection_metric"]], METRICS[first["test_metric"]]
    return f"{first['task']} · each method tuned on {chosen_on.title} · {test.title}"


def _figure(metric: str, mean: float, half: float) -> str:
    """'82.3 ± 1.2%', '+11.3 ± 0.9 pp', '0.412 ± 0.020'; '—' without a mean."""
    shown = METRICS[metric]
    text = shown.format(mean, half)
    if text == "—" or not shown.percent:
        return text
    return text + (" pp" if shown.signed else "%")


def tuned_lines(rows: pd.DataFrame) -> list[list[str]]:
    """One task of report --tuned as text cells: accuracies in percent, differences in points, losses as they
    are; the difference to the tuned baseline with its mark (▲/▼ significantly better/worse)."""
    lines = []
    for _, row in rows.iterrows():
        test = METRICS[row["test_metric"]]
        scale, unit = (test.scale, " pp") if test.percent else (1.0, "")
        if row["method"] == BASELINE_METHOD:
            delta, p, holm_p = f"baseline {BASELINE_MARK}", "", ""
        elif row["delta"] != row["delta"]:
            delta, p, holm_p = "no pairs with the baseline", "", ""
        else:
            interval = ""
            if row["delta_low"] == row["delta_low"]:
                interval = (
                    f" [{row['delta_low'] * scale:+.{test.digits}f}, {row['delta_high'] * scale:+.{test.digits}f}]"
                )
            mark = {"improvement": f" {BETTER_MARK}", "degradation": f" {WORSE_MARK}"}.get(row["change"], "")
            delta = f"{row['delta'] * scale:+.{test.digits}f}{unit}{interval}{mark}"
            p = "—" if row["p_raw"] != row["p_raw"] else f"{row['p_raw']:.3g}"
            holm_p = "—" if row["p_value"] != row["p_value"] else f"{row['p_value']:.3g}"
        lines.append(
            [
                str(row["method"]),
                str(row["configuration"]),
                str(int(row["trials"])) + (f" · {int(row['tune_epochs'])} ep" if row.get("halved") else ""),
                str(row["protocol"]) or "—",
                str(int(row["n"])) + (f" ({int(row['not_ok'])} not ok)" if row["not_ok"] else ""),
                _figure(row["test_metric"], row["test_mean"], row["test_ci"]),
                _figure(row["gap_metric"], row["gap_mean"], row["gap_ci"]),
                delta,
                p,
                holm_p,
            ]
        )
    return lines


def tuned_legend(rows: pd.DataFrame) -> str:
    """What one task's table of report --tuned means: the choice, the protocols present, the test and Holm."""
    first = rows.iloc[0]
    chosen_on = METRICS[first["selection_metric"]]
    better = "higher" if chosen_on.higher_is_better else "lower"
    trials = sorted({int(t) for t in rows["trials"]})
    spent = f"{trials[0]} trials" if len(trials) == 1 else f"{trials[0]}–{trials[-1]} trials"
    parts = [
        f"Each method's setting chosen on its mean {chosen_on.name} ({better} is better) over its tuning seeds "
        f"({spent} per method; ties to the lowest trial); the test split only reports the choice."
    ]
    if "halved" in rows and rows["halved"].any():
        parts.append(
            "Successive halving: trials ranked on their seed mean after a few epochs, the clearly worse stopped; "
            "chosen among those trained in full; 'ep': epochs the method's tuning trained, every trial and seed "
            "(a trial's rungs continue one training)."
        )
    for protocol in (p for p in PROTOCOLS if p in set(rows["protocol"])):
        parts.append(f"Protocol {protocol}: test figures over {PROTOCOLS[protocol]}.")
    tested = rows[rows["p_raw"].notna()]
    family = int(tested["family"].max()) if len(tested) else 0
    test_name = TEST_NAMES[str(first["test"])]
    if BASELINE_METHOD not in set(rows["method"]):
        return " ".join([*parts, f"No tuned baseline ({BASELINE_METHOD}) in these results: nothing was tested."])
    parts.append(
        f"Δ: paired {first['test_metric']} difference to the tuned baseline (none) over the seeds both were "
        f"evaluated on, 95% t-interval; {BETTER_MARK}/{WORSE_MARK} significantly better/worse: {test_name}, Holm "
        f"across {family} method{'s' * (family != 1)}, α = {float(first['alpha']):g}."
    )
    if family and float(tested["min_p"].max()) * family >= float(first["alpha"]):
        pairs = int(tested["pairs"].min())
        parts.append(f"At {pairs} seeds no mark is possible: run more evaluation seeds.")
    return " ".join(parts)


# ---------------------------------------------------------------- history

CHANGE_MARKS = {"improvement": BETTER_MARK, "degradation": WORSE_MARK, "": ""}
RUN_HEADERS = ("run", "date (UTC)", "commit", "versions", "machine", "cells", "file", "changed since the run before")


def history_title(history: History, task: str) -> str:
    """'wine · test accuracy (%) · mean ± 95% CI over seeds, per run, oldest first'."""
    return f"{task} · {METRICS[history.metric].title} · mean ± 95% CI over seeds, per run, oldest first"


def history_columns(history: History) -> tuple[str, ...]:
    """'configuration', then a column per run headed by its number, date and commit."""
    return ("configuration", *(f"#{i} {run.label}" for i, run in enumerate(history.runs, start=1)))


def _point_text(history: History, point: Point | None, change: str) -> str:
    """'91.2 ± 0.8 ▼', 'failed ×3', '' where the run does not hold the configuration."""
    if point is None:
        return ""
    if point.n == 0:
        return f"failed ×{point.not_ok}"
    text = METRICS[history.metric].format(point.mean, point.ci)
    text += f" {CHANGE_MARKS[change]}" if change else ""
    return text + (f" ({point.not_ok} not ok)" if point.not_ok else "")


def history_lines(history: History, task: str) -> list[list[str]]:
    """A task's trends as text cells: the configuration, then its figure in each run with its flag."""
    return [
        [trend.label, *(_point_text(history, p, c) for p, c in zip(trend.points, trend.changes))]
        for trend in history.trends
        if trend.task == task
    ]


def history_legend(history: History) -> str:
    """What the flags and the blanks mean, with the test, its family and its level."""
    shown = METRICS[history.metric]
    better, worse = ("up", "down") if shown.higher_is_better else ("down", "up")
    flags = sum(1 for trend in history.trends for change in trend.changes if change)
    return (
        f"{BETTER_MARK}/{WORSE_MARK} moved significantly {better}/{worse} (better/worse) from the run before that "
        f"holds the configuration: each step is dropbench compare of a run against the runs before it, the "
        f"{TEST_NAMES[history.method]} of the same cells' paired differences seed by seed, Holm across the task's "
        f"configurations, α = {history.alpha:g}; steps are separate families ({flags} flag{'s' * (flags != 1)} in "
        f"{len(history.steps)} "
        f"step{'s' * (len(history.steps) != 1)}). ± is the 95% t-interval over seeds. A blank: the run does not "
        "hold the configuration; a configuration trained with other settings is a row of its own. The exit code "
        "reads the newest step only."
    )


def history_summary(history: History) -> str:
    """The newest step's verdict in one line ending with the exit code, as compare's."""
    runs = history.runs
    before = ", ".join(f"#{j + 1} ({runs[j].label})" for j in history.bases[-1]) or "no earlier run of its cells"
    return f"newest run #{len(runs)} ({runs[-1].label}) against {before}: {verdict_summary(history.newest)}"


def run_lines(runs: Sequence[RunInfo]) -> list[list[str]]:
    """Each run's provenance as text cells (RUN_HEADERS), with what changed since the run before."""
    lines = []
    for i, run in enumerate(runs):
        versions = " · ".join(f"{name} {'+'.join(values)}" for name, values in run.versions.items())
        machine = " + ".join(run.machines) + (f" ({', '.join(run.devices)})" if run.devices else "")
        changed = "" if i == 0 else ("; ".join(changes(runs[i - 1], run)) or "nothing recorded")
        lines.append(
            [
                f"#{i + 1}",
                run.date,
                run.commit or "—",
                versions or "—",
                machine or "—",
                str(run.cells),
                run.name,
                changed,
            ]
        )
    return lines
