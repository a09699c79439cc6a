"""The words and figures of --best, --reference and compare that every format shows, as text cells: each
exporter lays the same lines out its own way."""

from collections import Counter
from dataclasses import asdict

import pandas as pd

from ..catalogue import PERCENT_METRICS
from .compare import VERDICTS, CompareResult, Comparison
from .labels import DISTINGUISHING, config_label
from .stats import TEST_NAMES

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
