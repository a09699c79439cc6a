"""Every figure the README quotes about results, made from the committed CSVs by dropbench's own report code.

    python docs/readme_results.py           # rewrite README.md's generated blocks and the committed reports
    python docs/readme_results.py --check   # exit 1, showing the difference, when any of them is stale

A block sits between `<!-- generated: NAME -->` and `<!-- end: NAME -->`; tests/test_readme.py runs the
check, so a README that says something its results do not is a failing test. Choices are made on the
validation split; every difference carries its paired interval and test, and a statement is only made
where the test supports it.
"""

import argparse
import contextlib
import difflib
import io
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
from rich.console import Console

from dropbench.cli import main as cli_main
from dropbench.report.data import build_report
from dropbench.report.exporters.table import grid_tables
from dropbench.report.order import suite_order
from dropbench.report.stats import TEST_NAMES, PairedTest, holm, paired_difference, smallest_p_value
from dropbench.report.summary import summarize, tests_for
from dropbench.results import read_epochs, read_results

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
QUICK = ROOT / "results" / "quick" / "quick.csv"
SRIVASTAVA = ROOT / "results" / "srivastava2014"
QUICK_TUNED = ROOT / "results" / "quick-tuned"
BLOCK = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end: (?P=name) -->)", re.DOTALL)


def pct(value: float) -> str:
    return f"{100 * value:.2f}"


def interval(low: float, high: float, scale: float = 100, digits: int = 2) -> str:
    return f"[{low * scale:+.{digits}f}, {high * scale:+.{digits}f}]"


def p_text(p: float) -> str:
    return "—" if p != p else f"{p:.2g}"


def quick_table() -> str:
    """The synthetic task's gap table exactly as `dropbench report results/quick/quick.csv --task synthetic`."""
    frame = read_results(QUICK)
    frame = frame[frame["task"] == "synthetic"]
    console = Console(file=io.StringIO(), width=100, color_system=None, legacy_windows=False)
    for table in grid_tables(build_report(frame, order=suite_order([QUICK])).grids):
        console.print(table)
    text = "\n".join(line.rstrip() for line in console.file.getvalue().splitlines())
    return f"```\n{text}\n```\n"


def quick_claims() -> str:
    """What the quick suite shows about dropout alone (keep 0.5, no other regularizer), task by task."""
    frame = read_results(QUICK)
    summary = summarize(frame)
    tests = tests_for(frame, summary, "gap")
    lines = []
    for task, rows in tests.groupby("task", sort=False):
        row = rows[(rows["regularizer"] == "none") & (rows["keep_rate"] == 0.5)].iloc[0]
        classification = bool(summary.loc[summary["task"] == task, "classification"].iloc[0])
        scale, unit, name = (100, " pp", "gap_acc") if classification else (1, "", "gap_loss")
        digits = 1 if classification else 3
        verdict = (
            "significantly smaller"
            if row["change"] == "improvement"
            else ("significantly larger" if row["change"] == "degradation" else "no significant change")
        )
        lines.append(
            f"| {task} | {name} | {row['delta'] * scale:+.{digits}f}{unit} | "
            f"{interval(row['delta_low'], row['delta_high'], scale, digits)} | {p_text(row['p_raw'])} | "
            f"{p_text(row['p_value'])} | {verdict} |"
        )
    seeds = int(tests["pairs"].min())
    head = (
        "| task | gap | Δ keep 0.5 − keep 1.0 | 95% CI of Δ | p | p (Holm) | verdict |\n"
        "|---|---|---:|---:|---:|---:|---|\n"
    )
    note = (
        f"\nDropout alone (keep 0.5, no other regularizer) against the baseline, paired by seed over {seeds} "
        f"seeds; {TEST_NAMES['sign-flip']}, Holm across each task's {int(tests['family'].max())} comparisons, "
        f"α = 0.05. From `results/quick/quick.csv`.\n"
    )
    return head + "\n".join(lines) + "\n" + note


FIGURE9_FLAT = (0.4, 0.8)  # the paper's reading of its Figure 9(a) (section 7.3): a flat test error over 0.4-0.8


def figure9(name: str = "figure9") -> str:
    """Figure 9 (a: n fixed; b: p·n fixed): test and training error against p, the p chosen on validation, each p
    against p = 1 (the same regularizer and input keep rate), paired by seed, Holm across the keep rates; then the
    paper's three readings, each with its own test (`_figure9_reading`)."""
    frame = read_results(SRIVASTAVA / f"{name}.csv")
    summary = summarize(frame).sort_values("keep_rate")
    rates = summary["keep_rate"].tolist()
    reg, input_keep = frame["regularizer"].iloc[0], float(frame["input_keep_rate"].iloc[0])
    tests = {p: _paired(frame, reg, input_keep, 1.0, p) for p in rates[:-1]}
    adjusted = dict(zip(tests, holm([t.p_value for t in tests.values()])))
    out = ["| p | " + " | ".join(f"{p:g}" for p in rates) + " |", "|---|" + "---|" * len(rates)]
    widths = _fixed_pn_widths(str(frame["model"].iloc[0]), rates)
    if widths:
        out.append("| units a layer (n = p·n / p) | " + " | ".join(widths) + " |")
    for figure, column in (("test", "test_error"), ("train", "train_error")):
        means = (1 - summary["train_acc_mean"]) if column == "train_error" else summary["test_error_mean"]
        out.append(f"| {figure} | " + " | ".join(pct(v) for v in means) + " |")
    out.append("| validation | " + " | ".join(pct(1 - v) for v in summary["val_acc_mean"]) + " |")
    lowest = _lowest_validation_error(frame, name)
    if lowest is not None:
        out.append("| validation, lowest of any epoch | " + " | ".join(pct(lowest[p]) for p in rates) + " |")
    deltas = (
        "◆" if p not in tests else f"{100 * tests[p].mean_diff:+.2f} {interval(tests[p].ci_low, tests[p].ci_high)}"
        for p in rates
    )
    out.append("| Δ test vs p = 1 (95% CI) | " + " | ".join(deltas) + " |")
    out.append("| p-value (Holm) | " + " | ".join("" if p not in tests else p_text(adjusted[p]) for p in rates) + " |")
    chosen = summary[summary["best"]].iloc[0]
    seeds = min(t.n for t in tests.values())
    out.append("")
    out.append(
        f"Errors in % (mean over {seeds} seeds). Chosen on validation: p = {chosen['keep_rate']:g} "
        f"(validation {pct(1 - chosen['val_acc_mean'])}%), test error {pct(chosen['test_error_mean'])} ± "
        f"{pct(chosen['test_error_ci'])}%. Δ: the paired test-error difference to p = 1, 95% t-interval; "
        f"exact sign-flip test, Holm across the {len(tests)} keep rates, α = 0.05."
    )
    significant = [p for p in tests if adjusted[p] < 0.05]
    out.append(_significance_sentence(significant, seeds, len(tests)))
    out += _figure9_reading(frame, summary, float(chosen["keep_rate"]))
    return "\n".join(out) + "\n"


def _lowest_validation_error(frame: pd.DataFrame, name: str) -> dict[float, float] | None:
    """Each keep rate's lowest validation error over the epochs (per cell, then the mean over seeds), from the
    epochs sidecar: beside the final one it shows a training that got worse as it went on. None without curves."""
    curves = read_epochs(SRIVASTAVA / f"{name}.csv")
    if curves is None:
        return None
    best = 1 - curves.groupby("cell_id")["val_acc"].max()
    keeps = frame.set_index("cell_id")["keep_rate"]
    return best.groupby(keeps.reindex(best.index)).mean().to_dict()


def _paired(frame: pd.DataFrame, reg: str, input_keep: float, a: float, b: float) -> PairedTest:
    """The paired test of keep rate b against keep rate a (b − a), over the seeds both have."""
    first, second = _cells(frame, reg, a, input_keep), _cells(frame, reg, b, input_keep)
    seeds = first.index.intersection(second.index)
    return paired_difference(first.loc[seeds].tolist(), second.loc[seeds].tolist())


def _fixed_pn_widths(model: str, rates: list[float]) -> list[str]:
    """Each keep rate's hidden width where the model holds p·n fixed (its label ends in '-pn': 'mlp-128-128-pn'),
    as config.ModelConfig.widths widens it; empty for a model of fixed n."""
    parts = model.split("-")
    if parts[-1] != "pn":
        return []
    pn = [int(part) for part in parts[1:-1] if part.isdigit()]
    return ["-".join(str(max(1, round(n / p))) for n in pn) for p in rates]


def _figure9_reading(frame: pd.DataFrame, summary: pd.DataFrame, chosen: float) -> list[str]:
    """The paper's readings of Figure 9, each tested on its own: the training error rises as p falls (the means in
    order); the test error is flat over FIGURE9_FLAT (every pair of p there, paired by seed, Holm across those
    pairs, and the largest difference's interval); and p = 0.1 is worse than the p chosen on validation (one
    paired test: the choice is made on validation, so it is no look at the test split)."""
    reg, input_keep = frame["regularizer"].iloc[0], float(frame["input_keep_rate"].iloc[0])
    rates = summary["keep_rate"].tolist()
    errors = dict(zip(rates, 1 - summary["train_acc_mean"]))
    falling = sorted(rates, reverse=True)
    drops = [(a, b) for a, b in zip(falling, falling[1:]) if errors[b] < errors[a]]
    shape = (
        "it never falls as p falls"
        if not drops
        else "it falls as p falls from " + ", ".join(f"{a:g} to {b:g}" for a, b in drops)
    )
    out = [
        "",
        "Training error as p falls from 1: "
        + ", ".join(f"{pct(errors[p])}%" for p in falling)
        + f" ({shape}; eval mode, on the training set).",
    ]
    flat = [p for p in rates if FIGURE9_FLAT[0] <= p <= FIGURE9_FLAT[1]]
    pairs = [(a, b) for i, a in enumerate(flat) for b in flat[i + 1 :]]
    if pairs:
        tests = [_paired(frame, reg, input_keep, a, b) for a, b in pairs]
        adjusted = holm([t.p_value for t in tests])
        means = [float(summary.loc[summary["keep_rate"] == p, "test_error_mean"].iloc[0]) for p in flat]
        widest = max(range(len(tests)), key=lambda i: abs(tests[i].mean_diff))
        (a, b), test = pairs[widest], tests[widest]
        differing = sum(p < 0.05 for p in adjusted)
        out.append(
            f"Test error over {FIGURE9_FLAT[0]:g} ≤ p ≤ {FIGURE9_FLAT[1]:g}: {pct(min(means))}-{pct(max(means))}%; "
            f"{differing} of the {len(pairs)} pairs of p there differ significantly (sign-flip, Holm); the largest "
            f"paired difference, p = {b:g} − p = {a:g}, is {100 * test.mean_diff:+.2f} "
            f"{interval(test.ci_low, test.ci_high)} points."
        )
    smallest = min(rates)
    if smallest < FIGURE9_FLAT[0] and chosen != smallest:
        test = _paired(frame, reg, input_keep, chosen, smallest)
        verdict = (
            "worse"
            if test.p_value < 0.05 and test.mean_diff > 0
            else "better"
            if test.p_value < 0.05
            else "not shown to differ"
        )
        out.append(
            f"p = {smallest:g} against p = {chosen:g} (chosen on validation): {100 * test.mean_diff:+.2f} "
            f"{interval(test.ci_low, test.ci_high)} points, sign-flip p = {p_text(test.p_value)}: {verdict}."
        )
    return out


def _significance_sentence(significant: list, seeds: int, family: int) -> str:
    smallest = smallest_p_value(seeds)
    if not significant and smallest * family >= 0.05:
        return (
            f"No difference here can be significant: at {seeds} seeds the exact sign-flip test's smallest p is "
            f"{smallest:g} (and {family} comparisons share α = 0.05), so the table shows shapes and intervals, "
            "not verdicts."
        )
    if not significant:
        return f"No difference is significant (sign-flip test, Holm across {family} comparisons, α = 0.05)."
    return f"{len(significant)} of {family} differences are significant (sign-flip test, Holm, α = 0.05)."


TABLE9_ROWS = (
    ("L2", "l2", 1.0, 1.0),
    ("L2 + L1", "l1+l2", 1.0, 1.0),
    ("L2 + KL-sparsity", "l2+kl-sparsity", 1.0, 1.0),
    ("max-norm", "max-norm", 1.0, 1.0),
    ("dropout + L2", "l2", 0.5, 0.8),
    ("dropout + max-norm", "max-norm", 0.5, 0.8),
)
TABLE9_PAPER = {
    "L2": 1.62,
    "L2 + L1": 1.60,
    "L2 + KL-sparsity": 1.55,
    "max-norm": 1.35,
    "dropout + L2": 1.25,
    "dropout + max-norm": 1.05,
}


def _cells(frame: pd.DataFrame, reg: str, keep: float, input_keep: float) -> pd.Series:
    rows = frame[(frame["regularizer"] == reg) & (frame["keep_rate"] == keep)]
    rows = rows[rows["input_keep_rate"] == input_keep]
    return (1 - rows.set_index("seed")["test_acc"]).sort_index()


def table9() -> str:
    """Table 9: each row's test error with its interval, and every dropout row against every row without
    dropout: the paired difference, its interval and the sign-flip test, Holm across all of those pairs."""
    frame = read_results(SRIVASTAVA / "table9.csv")
    summary = summarize(frame)
    out = ["| | " + " | ".join(name for name, *_ in TABLE9_ROWS) + " |", "|---|" + "---|" * len(TABLE9_ROWS)]
    cells = []
    for _, reg, keep, input_keep in TABLE9_ROWS:
        row = summary[
            (summary["regularizer"] == reg)
            & (summary["keep_rate"] == keep)
            & (summary["input_keep_rate"] == input_keep)
        ].iloc[0]
        cells.append(f"{pct(row['test_error_mean'])} ± {pct(row['test_error_ci'])}")
    seeds = int(frame.groupby(["regularizer", "keep_rate", "input_keep_rate"])["seed"].nunique().min())
    out.append(f"| ours, test error % (95% CI, {seeds} seeds) | " + " | ".join(cells) + " |")
    out.append("| paper | " + " | ".join(f"{TABLE9_PAPER[name]:.2f}" for name, *_ in TABLE9_ROWS) + " |")
    out.append("")
    out += _table9_pairs(frame)
    out.append("")
    out += _table9_curves(frame)
    return "\n".join(out) + "\n"


def _table9_curves(frame: pd.DataFrame) -> list[str]:
    """Each row's validation error at every fifth epoch (mean over seeds), with its final training error (eval
    mode), and a line of the figures that say whether the rows had stopped improving when the training ended."""
    curves = read_epochs(SRIVASTAVA / "table9.csv")
    if curves is None:
        return []
    last = int(curves["epoch"].max())
    marks = sorted({*range(5, last + 1, 5), 1, last})
    out = ["| validation error % at epoch | " + " | ".join(str(e) for e in marks) + " | training error % at the end |"]
    out.append("|---|" + "---|" * (len(marks) + 1))
    by_row = {}
    for name, reg, keep, input_keep in TABLE9_ROWS:
        rows = frame[(frame["regularizer"] == reg) & (frame["keep_rate"] == keep)]
        rows = rows[rows["input_keep_rate"] == input_keep]
        mine = curves[curves["cell_id"].isin(rows["cell_id"])]
        by_row[name] = (1 - mine.groupby("epoch")["val_acc"].mean(), 1 - rows["train_acc"].mean())
        by_epoch, train_error = by_row[name]
        out.append(f"| {name} | " + " | ".join(pct(by_epoch[e]) for e in marks) + f" | {pct(train_error)} |")
    out.append("")
    out.append("Mean over seeds, from `table9.epochs.csv` (the validation split, evaluated after every epoch).")
    out.append(_still_learning(by_row, marks[-3:]))
    return out


def _still_learning(by_row: dict[str, tuple[pd.Series, float]], last_marks: list[int]) -> str:
    """Training error at the end with and without dropout, and the first dropout row's validation error at the
    last marks; `by_row`: each row's validation error by epoch and its final training error."""
    dropped = {name: keep < 1.0 for name, _, keep, _ in TABLE9_ROWS}
    train_error = {flag: [by_row[n][1] for n in by_row if dropped[n] == flag] for flag in (False, True)}
    name = next(n for n in by_row if dropped[n])
    by_epoch = by_row[name][0]
    return (
        f"Training error at the end: {pct(min(train_error[False]))}-{pct(max(train_error[False]))}% without dropout, "
        f"{pct(min(train_error[True]))}-{pct(max(train_error[True]))}% with it; {name}'s validation error at epochs "
        + ", ".join(str(e) for e in last_marks)
        + ": "
        + ", ".join(f"{pct(by_epoch[e])}%" for e in last_marks)
        + "."
    )


def _table9_pairs(frame: pd.DataFrame) -> list[str]:
    """Dropout rows (keep < 1) against the rows without dropout, paired by seed (the same initialization
    and batch order), test error; Holm across every pair, the family the claim "dropout beats them all" needs."""
    dropout_rows = [row for row in TABLE9_ROWS if row[2] < 1.0]
    plain_rows = [row for row in TABLE9_ROWS if row[2] == 1.0]
    tests = []
    for name, *with_dropout in dropout_rows:
        b = _cells(frame, *with_dropout)
        for other, *without in plain_rows:
            a = _cells(frame, *without)
            seeds = a.index.intersection(b.index)
            tests.append((name, other, paired_difference(a.loc[seeds].tolist(), b.loc[seeds].tolist())))
    adjusted = holm([test.p_value for *_, test in tests])
    out = ["| Δ test error, points (95% CI) · Holm p | " + " | ".join(name for name, *_ in plain_rows) + " |"]
    out.append("|---|" + "---|" * len(plain_rows))
    for name, *_ in dropout_rows:
        entries = [
            f"{100 * test.mean_diff:+.2f} {interval(test.ci_low, test.ci_high)} · {p_text(p)}"
            for (row, _, test), p in zip(tests, adjusted)
            if row == name
        ]
        out.append(f"| {name} | " + " | ".join(entries) + " |")
    wins = sum(p < 0.05 and test.mean_diff < 0 for (*_, test), p in zip(tests, adjusted))
    losses = sum(p < 0.05 and test.mean_diff > 0 for (*_, test), p in zip(tests, adjusted))
    pairs, smallest = tests[0][2].n, tests[0][2].min_p
    out.append("")
    out.append(
        f"Δ = the dropout row − the row without dropout, paired by seed over {pairs} seeds; exact sign-flip test "
        f"(smallest possible p at {pairs} seeds: {smallest:g}), Holm across the {len(tests)} pairs, α = 0.05."
    )
    if wins == len(tests):
        out.append("Both dropout rows have a significantly lower test error than every row without dropout.")
    else:
        out.append(
            f"{wins} of the {len(tests)} pairs {'shows' if wins == 1 else 'show'} a significantly lower test error "
            "with dropout"
            + (f", {losses} a significantly higher one" if losses else "")
            + "; the others are not shown to differ."
        )
    excess = [test.mean_diff for (*_, test), p in zip(tests, adjusted) if p < 0.05 and test.mean_diff > 0]
    if excess:
        out.append(
            f"Where dropout is significantly worse, by {100 * min(excess):.2f} to {100 * max(excess):.2f} points."
        )
    return out


def figure10() -> str:
    """Figure 10: test error with dropout (in all layers) and without, per training-set size, paired by seed
    within each size; Holm across the sizes."""
    frame = read_results(SRIVASTAVA / "figure10.csv")
    summary = summarize(frame)
    sizes = sorted(int(s) for s in frame["train_size"].unique())
    arms = (("dropout (0.5 / 0.8)", 0.5, 0.8), ("no dropout", 1.0, 1.0))
    out = ["| training images | " + " | ".join(f"{s:,}" for s in sizes) + " |", "|---|" + "---|" * len(sizes)]
    for label, keep, input_keep in arms:
        rows = summary[(summary["keep_rate"] == keep) & (summary["input_keep_rate"] == input_keep)]
        rows = rows.set_index("train_size")
        figures = (f"{pct(rows.loc[s, 'test_error_mean'])} ± {pct(rows.loc[s, 'test_error_ci'])}" for s in sizes)
        out.append(f"| {label} | " + " | ".join(figures) + " |")
    tests = []
    for size in sizes:
        of_size = frame[frame["train_size"] == size]
        reg = of_size["regularizer"].iloc[0]
        plain, dropout = (_cells(of_size, reg, keep, input_keep) for _, keep, input_keep in reversed(arms))
        seeds = plain.index.intersection(dropout.index)
        tests.append(paired_difference(plain.loc[seeds].tolist(), dropout.loc[seeds].tolist()))
    adjusted = holm([test.p_value for test in tests])
    out.append(
        "| Δ (95% CI) | "
        + " | ".join(f"{100 * t.mean_diff:+.2f} {interval(t.ci_low, t.ci_high)}" for t in tests)
        + " |"
    )
    out.append("| p (Holm) | " + " | ".join(p_text(p) for p in adjusted) + " |")
    seeds = min(test.n for test in tests)
    gains = [f"{s:,}" for s, t, p in zip(sizes, tests, adjusted) if p < 0.05 and t.mean_diff < 0]
    losses = [f"{s:,}" for s, t, p in zip(sizes, tests, adjusted) if p < 0.05 and t.mean_diff > 0]
    out.append("")
    out.append(
        f"Test error in % ± 95% CI over {seeds} seeds; Δ = dropout − no dropout, paired by seed (the same "
        f"initialization and batch order); exact sign-flip test (smallest possible p: {smallest_p_value(seeds):g}), "
        f"Holm across the {len(sizes)} sizes, α = 0.05."
    )
    if gains or losses:
        parts = [
            f"significantly better at {', '.join(gains)}" if gains else "",
            f"significantly worse at {', '.join(losses)}" if losses else "",
        ]
        rest = "" if len(gains) + len(losses) == len(sizes) else "; elsewhere not shown to differ"
        out.append(f"Dropout is {' and '.join(p for p in parts if p)} training images{rest}.")
    else:
        out.append("No size shows a significant difference.")
    if len(sizes) > 2:
        by_size = sorted(zip((t.mean_diff for t in tests), sizes))
        far, near = by_size[0], by_size[-1]
        out.append(
            f"The mean difference is furthest below zero at {far[1]:,} images and nearest to it (or above) at "
            f"{near[1]:,} (the intervals are in the table; sizes are not tested against each other)."
        )
    return "\n".join(out) + "\n"


def _halving_compare() -> dict:
    """benchmarks/halving_vs_grid.py's figures for the committed quick-tuned runs (a script, not a module)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("halving_vs_grid", ROOT / "benchmarks" / "halving_vs_grid.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compare(QUICK_TUNED / "grid.csv", QUICK_TUNED / "halving.csv")


def _run_record(path: Path) -> dict:
    """The last run's provenance in a results file's JSON sidecar (its date, machine and seconds)."""
    import json

    return json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))["runs"][-1]


def tuned_halving() -> str:
    """What halving spent and chose against the full grid on quick-tuned, and the grid's time: from
    results/quick-tuned/{grid,halving}.csv and their sidecars."""
    figures = _halving_compare()
    grid, halving = figures["grid"], figures["halving"]
    when = _run_record(QUICK_TUNED / "grid.csv")
    date, cores = when["started_at"][:10], when["machine"]["cpu_count"]
    lines = [
        f"- **Halving measured on `quick-tuned`** ({date}, {cores} cores; "
        "`dropbench run quick-tuned --out grid.csv`,\n",
        "  `dropbench run quick-tuned-halving --out halving.csv`, `python benchmarks/halving_vs_grid.py grid.csv\n",
        "  halving.csv`; the runs are committed in `results/quick-tuned/`). Halving trained "
        f"{figures['epochs_ratio']:.0%} of the grid's\n",
        f"  tune epochs ({halving['tune_epochs']:,.0f} against {grid['tune_epochs']:,.0f}; "
        f"{halving['tune_cells']:,} tune rows against {grid['tune_cells']:,}, a rung's row\n",
        f"  being a trial's training so far) and chose the same setting for {figures['same_choice']} of "
        f"{figures['pairs']} (task, method)s;\n",
        f"  the runs took {grid['seconds']:.0f} s (grid) and {halving['seconds']:.0f} s (halving) of running, "
        "both phases, on an otherwise\n",
        "  idle machine (`quick-tuned`, the grid, is meant to stay under 2 minutes on 2 cores). On these small "
        "tasks most\n",
        "  trials sit within seed noise of each other, so the rule stops few of them"
        + (
            ", and the saving in epochs does not\n  pay for halving's extra rows, checkpoints and rung-by-rung passes "
            "over nets this small: here it costs\n  time. It can pay only where trials separate early and an epoch "
            "costs more than a cell's overhead\n  (wide spaces, long trainings); no such run is measured here.\n"
            if halving["seconds"] > grid["seconds"]
            else ". Halving pays most where trials separate early\n  (wide spaces, long trainings).\n"
        ),
    ]
    differ = figures["different"]
    if differ:
        lines.append("  Where the choices differ (a trial the grid chose was stopped at a rung):\n")
        lines += [f"  {line}{';' if i < len(differ) - 1 else '.'}\n" for i, line in enumerate(differ)]
    return "".join(lines)


BLOCKS: dict[str, Callable[[], str]] = {
    "quick-table": quick_table,
    "quick-claims": quick_claims,
    "srivastava-figure9": figure9,
    "srivastava-figure9b": lambda: figure9("figure9b"),
    "srivastava-table9": table9,
    "srivastava-figure10": figure10,
    "tuned-halving": tuned_halving,
}


def cli_output(*args: str) -> str:
    """What `dropbench ARGS` prints off a terminal (plain text, the wide layout)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli_main(list(args))
    if code != 0:
        raise SystemExit(f"dropbench {' '.join(args)} exited {code}")
    return buffer.getvalue()


def report_files() -> dict[Path, str]:
    """The report outputs committed beside each reproduction CSV, as `dropbench report` prints them now."""
    files = {}
    for name in ("figure9", "figure9b", "table9", "figure10"):
        csv = str((SRIVASTAVA / f"{name}.csv").relative_to(ROOT))
        files[SRIVASTAVA / f"{name}.table.txt"] = cli_output("report", csv, "--paired")
        files[SRIVASTAVA / f"{name}.report.txt"] = cli_output(
            "report", csv, "--metric", "test_error", "--paired", "--reference", "srivastava2014"
        )
    return files


def regenerate(text: str) -> str:
    """README text with every generated block rewritten; an unknown block name is an error."""

    def replace(match: re.Match) -> str:
        name = match["name"]
        if name not in BLOCKS:
            raise SystemExit(f"README.md: unknown generated block '{name}'; known: {', '.join(BLOCKS)}")
        return match.group(1) + BLOCKS[name]() + match.group(4)

    return BLOCK.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when README.md differs from its results")
    args = parser.parse_args(argv)
    os.chdir(ROOT)  # paths in the reports read as a user in the checkout types them
    wanted = {README: regenerate(README.read_text(encoding="utf-8")), **report_files()}
    stale = 0
    for path, fresh in wanted.items():
        current = path.read_text(encoding="utf-8") if path.is_file() else ""
        if fresh == current:
            continue
        stale += 1
        if args.check:
            name = str(path.relative_to(ROOT))
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(True), fresh.splitlines(True), name, f"{name} (from the results)"
                )
            )
        else:
            path.write_text(fresh, encoding="utf-8")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
