"""Rich tables of generalization gaps. Rendering only: every number comes from report.summarize."""

import math

import pandas as pd
from rich.table import Table
from rich.text import Text

BASELINE_MARK = "◆"
BEST_MARK = "★"


def _fmt(mean: float, half: float, scale: float, digits: int, signed: bool) -> str:
    if math.isnan(mean):
        return "—"
    text = f"{mean * scale:{'+' if signed else ''}.{digits}f}"
    return text if math.isnan(half) else f"{text} ± {half * scale:.{digits}f}"


def _row_label(row: pd.Series, varying: set[str]) -> str:
    label = row["regularizer"] + (f" {row['strength']}" if row["strength"] else "")
    if "input_keep_rate" in varying:
        label += f" · in {row['input_keep_rate']:g}"
    if "dropout" in varying:
        label += f" · {row['dropout']}"
    if "model" in varying:
        label += f" · {row['model']}"
    return label


def _cell(row: pd.Series, best: bool) -> Text:
    if row["n"] == 0:
        return Text(f"failed ×{row['not_ok']}", style="red")
    if row["classification"]:
        gap = _fmt(row["gap_acc_mean"], row["gap_acc_ci"], 100, 1, signed=True)
        test = f"test {row['test_acc_mean'] * 100:.1f}%"
    else:
        gap = _fmt(row["gap_loss_mean"], row["gap_loss_ci"], 1, 3, signed=True)
        test = f"test mse {row['test_loss_mean']:.3f}"
    marks = (f" {BASELINE_MARK}" if row["baseline"] else "") + (f" {BEST_MARK}" if best else "")
    text = Text(gap + "\n")
    text.append(test + marks, style="bold green" if best else "dim")
    if row["not_ok"]:
        text.append(f"\n{row['not_ok']} not ok", style="red")
    return text


def _best_index(task_rows: pd.DataFrame) -> object:
    ok = task_rows[task_rows["n"] > 0]
    if ok.empty:
        return None
    if ok["classification"].iloc[0]:
        return ok["test_acc_mean"].idxmax()
    return ok["test_loss_mean"].idxmin()


def gap_table(task_rows: pd.DataFrame) -> Table:
    """One task: rows = regularizer (and any other varying setting), columns = keep rate."""
    task = task_rows["task"].iloc[0]
    classification = bool(task_rows["classification"].iloc[0])
    varying = {c for c in ("input_keep_rate", "dropout", "model") if task_rows[c].nunique() > 1}
    keep_rates = sorted(task_rows["keep_rate"].unique())
    seeds = int(task_rows["seeds"].max())
    if classification:
        what, how = "gap_acc (pp)", "gap_acc = train acc − test acc in percentage points, eval mode"
    else:
        what, how = "gap_loss", "gap_loss = test MSE − train MSE, on the standardized target, eval mode"
    best_what = "accuracy" if classification else "MSE"
    title = f"{task} · {what} · mean ± 95% CI over {seeds} seed{'s' * (seeds != 1)}"
    table = Table(
        title=title,
        min_width=len(title),  # rich wraps a title to the table's width; a narrow table would split it
        caption=f"{how}\n{BASELINE_MARK} baseline (none, keep 1.0)  {BEST_MARK} best test {best_what}",
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("regularizer", style="bold")
    for keep in keep_rates:
        table.add_column(f"keep {keep:.1f}" if keep in (0.5, 1.0) else f"keep {keep:g}", justify="right")
    best = _best_index(task_rows)
    task_rows = task_rows.assign(label=[_row_label(r, varying) for _, r in task_rows.iterrows()])
    for label, group in task_rows.groupby("label", sort=False):
        cells: list[Text | str] = []
        for keep in keep_rates:
            match = group[group["keep_rate"] == keep]
            cells.append(_cell(match.iloc[0], match.index[0] == best) if len(match) else "")
        table.add_row(label, *cells)
    return table


def gap_tables(summary: pd.DataFrame) -> list[Table]:
    """One table per task, in the order the tasks first appear."""
    return [gap_table(rows) for _, rows in summary.groupby("task", sort=False)]
