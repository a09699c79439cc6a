"""Terminal output of reports: tables, the best configurations, references, comparisons, the dry-run plan.
A run's progress and its last lines are in `progress.py`."""

import json
import sys
from collections import Counter
from dataclasses import asdict

import pandas as pd
from rich.console import Console
from rich.text import Text

from .compare import PERCENT_METRICS, VERDICTS, CompareResult
from .runner import Plan
from .stats import TEST_NAMES

WIDE = 140  # off a terminal rich would assume 80 columns and wrap the tables


def stdout_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else WIDE)


def print_plan(plan: Plan, executor: object) -> None:
    """--dry-run: per task, the cells of the grid (or shard), those done, those to run, a time estimate."""
    from rich.table import Table

    from .planning import plan_summary

    jobs = getattr(executor, "jobs", 1)
    lines, calibrated = plan_summary(plan.cells, plan.todo, plan.written, jobs)
    table = Table(title=f"dry run -> {plan.csv_path}", title_justify="left")
    for column in ("task", "cells", "done", "to run", "estimated time"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for line in lines:
        table.add_row(line.name, str(line.cells), str(line.done), str(line.todo), _duration(line.seconds),
                      style="bold" if line.name == "all" else None)  # fmt: skip
    stdout_console().print(table)
    basis = "measured on the cells already done" if calibrated else "this project's 2-core CPU rates"
    stdout_console().print(f"estimate from {basis}, over {jobs} worker process(es)", highlight=False)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def print_failed(failed: pd.DataFrame) -> None:
    """The cells a file holds as failed or diverged, one line each (at most 20)."""
    if failed.empty:
        return
    console = stdout_console()
    console.print(f"{len(failed)} cell(s) not ok:", style="red")
    for _, row in failed.head(20).iterrows():
        reg = row["regularizer"] + (
            f"({row['strength']})" if isinstance(row["strength"], str) and row["strength"] else ""
        )
        console.print(f"  {row['task']} {reg} keep={row['keep_rate']:g} seed={row['seed']}: {row['status']}: "
                      f"{row['error']}", highlight=False, markup=False)  # fmt: skip


def print_best(best: pd.DataFrame, fmt: str) -> None:
    """report --best in the asked format: per task the configuration chosen on validation and its gain."""
    from .render import best_markdown, best_table, csv_text, frame_json

    if fmt == "json":
        sys.stdout.write(frame_json(best, "best"))
    elif fmt == "csv":
        sys.stdout.write(csv_text(best))
    elif fmt == "markdown":
        sys.stdout.write(best_markdown(best))
    else:
        stdout_console().print(best_table(best))


def print_reference(matched: pd.DataFrame, name: str, fmt: str, tasks: list[str]) -> None:
    """The published numbers of the run's tasks beside its matching rows."""
    shown = matched[matched["task"].isin(tasks)]
    if fmt == "json":
        stdout_console().print_json(shown.to_json(orient="records"))
        return
    from rich.table import Table

    table = Table(title=f"{name}: published test error beside this run's (its tasks only)", title_justify="left",
                  caption="ours: of this run's configurations with the paper's architecture, regularizer and keep "
                  "rates, the one with the best mean validation accuracy; its test error ± 95% CI over seeds",
                  caption_justify="left")  # fmt: skip
    for column in ("table", "task", "method", "architecture", "paper %", "ours", "ours %", "ours − paper", "seeds"):
        table.add_column(column)
    for _, row in shown.iterrows():
        matched = not pd.isna(row["ours_test_error_pct"])
        ci = "" if pd.isna(row["ours_ci_pct"]) else f" ± {row['ours_ci_pct']:.2f}"
        ours = f"{row['ours_test_error_pct']:.2f}{ci}" if matched else ""
        diff = f"{row['difference_pct']:+.2f}" if matched else ""
        seeds = str(int(row["ours_n"])) if matched else ""
        which = row["ours_configuration"] if matched else row["match_note"]
        table.add_row(str(row["table"]), row["task"], row["method"], row["architecture"],
                      f"{row['test_error_pct']:.2f}", which, ours, diff, seeds)  # fmt: skip
    stdout_console().print(table)


VERDICT_STYLES = {"regression": "bold red", "improvement": "green", "inconclusive": "yellow", "no change": "",
                  "not comparable": "bold yellow", "no regression": "bold green"}  # fmt: skip
LISTED_CELLS = 20  # missing cells listed per side in the table and markdown; JSON lists all of them


def _units(result: CompareResult) -> tuple[int, str]:
    """Scale and unit suffix for display: percentage points for accuracy-like metrics."""
    return (100, " pp") if result.metric in PERCENT_METRICS else (1, "")


def verdict_summary(result: CompareResult) -> str:
    """The whole comparison in one line that ends with the exit code, e.g. '1 of 12 configurations worse in
    test_acc beyond 0.5 pp (exact sign-flip test, Holm per task, α = 0.05); 11 no change; exit 1'."""
    if result.exit_code == 2:
        return f"{result.reason or 'nothing to compare'}; exit 2"
    _, unit = _units(result)
    counts = Counter(r.verdict for r in result.rows)
    noun = "configuration" if len(result.rows) == 1 else "configurations"
    test = f"{TEST_NAMES[result.method]}, Holm per task, α = {result.alpha:g}"
    worse = f"worse in {result.metric} beyond {result.max_drop:g}{unit}"
    parts = [f"{counts['regression']} of {len(result.rows)} {noun} {worse} ({test})"]
    others = [f"{counts[v]} {v}" for v in VERDICTS if v != "regression" and counts[v]]
    others += [f"{len(cells)} cells only in {side}" for side, cells in
               (("BASE", result.missing_in_new), ("NEW", result.missing_in_base)) if cells]  # fmt: skip
    if others:
        parts.append(", ".join(others))
    return "; ".join([*parts, f"exit {result.exit_code}"])


def _shown(value: float, spec: str) -> str:
    """A figure, or a dash where there is none (a configuration without a single ok pair)."""
    return "–" if value != value else format(value, spec)


# What else names a configuration where it varies among the compared rows, and how it reads.
DISTINGUISHING = (("layer_keep_rates", "layers {}"), ("input_keep_rate", "in {:g}"), ("dropout", "{}"),
                  ("train_size", "n={}"), ("model", "{}"), ("setup", "setup {}"))  # fmt: skip


def _comparison_labels(result: CompareResult) -> list[str]:
    """'digits l2 0.01 keep 0.5', plus whatever else varies among the rows, so no two configurations read alike."""
    varying = [(column, form) for column, form in DISTINGUISHING
               if len({getattr(r, column) for r in result.rows}) > 1]  # fmt: skip
    labels = []
    for r in result.rows:
        label = f"{r.task} {r.regularizer} {r.strength} keep {r.keep_rate:g}".replace("  ", " ")
        labels.append(" · ".join([label, *(form.format(getattr(r, column)) for column, form in varying)]))
    return labels


def _comparison_lines(result: CompareResult) -> list[tuple[str, ...]]:
    """One tuple of display strings per configuration, the verdict last."""
    scale, unit = _units(result)
    lines = []
    for r, config in zip(result.rows, _comparison_labels(result)):
        delta = "–" if r.delta != r.delta else f"{r.delta * scale:+.2f}{unit}"
        if r.ci_low == r.ci_low:
            ci = f"[{r.ci_low * scale:+.2f}, {r.ci_high * scale:+.2f}]"
        else:
            ci = "n<2" if r.n_pairs == 1 else "–"
        p = f"{r.p_value:.3g}" if r.p_value == r.p_value else ""
        # Failed or diverged cells stay out of the statistics; shown here so that they cannot hide.
        not_ok = f"{r.base_not_ok}/{r.new_not_ok}" if r.base_not_ok or r.new_not_ok else ""
        lines.append((config, _shown(r.base_mean * scale, ".3f"), _shown(r.new_mean * scale, ".3f"), delta, ci, p,
                      str(r.n_pairs), not_ok, r.verdict))  # fmt: skip
    return lines


def comparison_columns(result: CompareResult) -> tuple[str, ...]:
    """The table's headers; the interval is at level 1 − alpha, and says so."""
    level = f"{100 * (1 - result.alpha):g}% CI"
    return ("configuration", "base", "new", "delta", level, "p (Holm)", "pairs", "not ok (base/new)", "verdict")


def _missing_lines(result: CompareResult) -> list[str]:
    """The cells found on one side only, at most LISTED_CELLS per side."""
    out = []
    for side, cells in (("new", result.missing_in_new), ("base", result.missing_in_base)):
        out += [f"missing in {side}: {cell}" for cell in cells[:LISTED_CELLS]]
        if len(cells) > LISTED_CELLS:
            out.append(f"missing in {side}: … and {len(cells) - LISTED_CELLS} more (--format json lists all)")
    return out


def _comparison_json(result: CompareResult) -> dict:
    return {
        "metric": result.metric, "max_drop": result.max_drop, "alpha": result.alpha, "method": result.method,
        "verdict": result.verdict, "exit_code": result.exit_code, "summary": verdict_summary(result),
        "reason": result.reason or None,
        "rows": [{k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(r).items()}
                 for r in result.rows],
        "missing_in_new": result.missing_in_new, "missing_in_base": result.missing_in_base,
    }  # fmt: skip


def _comparison_markdown(result: CompareResult) -> str:
    """A heading, the table (when anything matched), the missing cells, and last the verdict line a CI job
    summary shows."""
    _, unit = _units(result)
    out = [f"### compare · {result.metric} · max drop {result.max_drop:g}{unit} · alpha {result.alpha:g}"]
    if result.rows:
        out += ["", "| " + " | ".join(comparison_columns(result)) + " |", "|---|---:|---:|---:|---|---:|---:|---:|---|"]
        out += ["| " + " | ".join(line) + " |" for line in _comparison_lines(result)]
    out += [line for missing in _missing_lines(result) for line in ("", missing)]
    out += ["", f"**Verdict: {result.verdict}** — {verdict_summary(result)}"]
    return "\n".join(out) + "\n"


def print_comparison(result: CompareResult, fmt: str) -> None:
    """compare: each configuration's delta with its CI and verdict, the cells missing on either side, and the
    verdict of the whole comparison with its exit code, in every format."""
    if fmt == "json":
        sys.stdout.write(json.dumps(_comparison_json(result), indent=2, default=str) + "\n")
        return
    if fmt == "markdown":
        sys.stdout.write(_comparison_markdown(result))
        return
    from rich.table import Table

    _, unit = _units(result)
    console = stdout_console()
    if result.rows:
        table = Table(title=f"compare · {result.metric} (new − base) · max drop {result.max_drop:g}{unit} · "
                      f"alpha {result.alpha:g}", title_justify="left")  # fmt: skip
        for column in comparison_columns(result):
            table.add_column(column)
        for line in _comparison_lines(result):
            table.add_row(*line[:-1], Text(line[-1], style=VERDICT_STYLES[line[-1]]))
        console.print(table)
    for line in _missing_lines(result):
        console.print(line, highlight=False, markup=False)
    verdict = Text(f"Verdict: {result.verdict}", style=VERDICT_STYLES[result.verdict])
    console.print(verdict + Text(f" — {verdict_summary(result)}"), highlight=False)
