"""Aggregate a results table over seeds: one row per configuration with mean ± CI of each figure."""

import pandas as pd

from .errors import UserError
from .stats import holm, mean_ci, paired_difference

CONFIG_COLUMNS = (
    "task", "model", "regularizer", "strength", "keep_rate", "layer_keep_rates", "input_keep_rate", "dropout",
    "train_size",
)  # fmt: skip
SUMMARY_METRICS = ("gap_acc", "gap_loss", "test_acc", "test_loss", "train_acc", "train_loss", "fit_seconds")
OPTIONAL_METRICS = ("test_error", "test_ece", "test_nll", "test_acc_mc", "test_nll_mc", "test_ece_mc")


def with_config_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Configuration columns filled where empty (and present in files of earlier schemas)."""
    frame = frame.copy()
    frame["strength"] = frame["strength"].fillna("")
    frame["layer_keep_rates"] = frame["layer_keep_rates"].fillna("") if "layer_keep_rates" in frame else ""
    sizes = pd.to_numeric(frame["train_size"], errors="coerce") if "train_size" in frame else 0
    frame["train_size"] = sizes.fillna(0).astype(int) if "train_size" in frame else 0
    return frame


def latest_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_id (the last written wins), so merged or retried files never count a cell twice."""
    return frame.drop_duplicates(subset="cell_id", keep="last")


def is_baseline(frame: pd.DataFrame) -> pd.Series:
    """The baseline of a task: no regularizer and no dropout anywhere (keep rate 1.0, input 1.0); one per
    model and training-set size, each configuration being compared with the baseline of its own."""
    return (frame["regularizer"] == "none") & (frame["keep_rate"] == 1.0) & (frame["input_keep_rate"] == 1.0)


def _in_order_of_appearance(summary: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Tasks and regularizers in the order the suite listed them (the CSV's order), keep rates ascending."""
    task_rank = {t: i for i, t in enumerate(frame["task"].drop_duplicates())}
    reg_rank = {r: i for i, r in enumerate((frame["regularizer"] + " " + frame["strength"]).drop_duplicates())}
    ranks = summary.assign(
        _task=summary["task"].map(task_rank),
        _reg=(summary["regularizer"] + " " + summary["strength"]).map(reg_rank),
    )
    ordered = ranks.sort_values(["_task", "_reg", "input_keep_rate", "dropout", "model", "keep_rate"], kind="stable")
    return ordered.drop(columns=["_task", "_reg"]).reset_index(drop=True)


def summarize(frame: pd.DataFrame, metrics: tuple[str, ...] = SUMMARY_METRICS) -> pd.DataFrame:
    """Per configuration: `n` ok cells, `not_ok` others, and `<metric>_mean/_sd/_ci` over the ok cells'
    seeds (`_ci` is the half-width of the 95% t-interval). Cells that failed or diverged are counted,
    not averaged."""
    frame = with_config_defaults(latest_rows(frame))
    if "test_acc" in frame:
        frame["test_error"] = 1.0 - frame["test_acc"]
    metrics = tuple(dict.fromkeys([*metrics, *(m for m in OPTIONAL_METRICS if m in frame)]))
    records = []
    for key, group in frame.groupby(list(CONFIG_COLUMNS), sort=True, dropna=False):
        ok = group[group["status"] == "ok"]
        record = dict(zip(CONFIG_COLUMNS, key))
        record.update(n=len(ok), not_ok=len(group) - len(ok), seeds=len(group))
        for metric in metrics:
            estimate = mean_ci(pd.to_numeric(ok[metric], errors="coerce").astype(float).tolist())
            record.update({f"{metric}_mean": estimate.mean, f"{metric}_sd": estimate.sd,
                           f"{metric}_ci": estimate.half_width})  # fmt: skip
        records.append(record)
    summary = pd.DataFrame.from_records(records)
    if summary.empty:
        return summary
    summary = _in_order_of_appearance(summary, frame)
    summary["baseline"] = is_baseline(summary)
    # A task is a classification task when any of its cells measured an accuracy.
    has_acc = frame.groupby("task")["test_acc"].apply(lambda s: s.notna().any())
    summary["classification"] = summary["task"].map(has_acc).astype(bool)
    return summary


# ---------------------------------------------------------------- against the baseline, over seeds

REPORT_METRICS = ("gap_acc", "gap_loss", "test_acc", "test_error", "test_loss", "test_ece", "fit_seconds")
HIGHER_IS_BETTER = frozenset({"test_acc", "train_acc", "val_acc"})


def with_metric(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The frame with `metric` present as a column (test_error is derived: 1 − test_acc)."""
    if metric not in REPORT_METRICS:
        raise UserError(f"unknown metric '{metric}'; allowed: {', '.join(REPORT_METRICS)}")
    if metric == "test_error" and "test_acc" in frame:
        return frame.assign(test_error=1.0 - frame["test_acc"])
    if metric not in frame:
        raise UserError(f"these results have no column '{metric}' (written by a dropbench without it?)")
    return frame


def baseline_tests(frame: pd.DataFrame, metric: str, *, method: str = "t", alpha: float = 0.05) -> pd.DataFrame:
    """Each configuration against its task's baseline (none, keep 1.0, input 1.0; same model), paired
    by seed: delta = configuration − baseline with its CI, a paired test (t or Wilcoxon), p-values
    Holm-corrected across the task's configurations, and whether the change is a significant
    improvement or degradation of `metric`."""
    frame = with_metric(with_config_defaults(latest_rows(frame)), metric)
    frame = frame[frame["status"] == "ok"]
    records = []
    for _, task_rows in frame.groupby("task", sort=False):
        base_rows = task_rows[is_baseline(task_rows)]
        task_records = []
        for key, group in task_rows.groupby(list(CONFIG_COLUMNS), sort=False, dropna=False):
            config = dict(zip(CONFIG_COLUMNS, key))
            base = base_rows[
                (base_rows["model"] == config["model"]) & (base_rows["train_size"] == config["train_size"])
            ]
            if base.empty or bool(is_baseline(group).all()):
                continue
            base_by_seed = base.drop_duplicates("seed").set_index("seed")[metric]
            mine = group.set_index("seed")[metric]
            seeds = sorted(set(mine.index) & set(base_by_seed.index))
            test = paired_difference(base_by_seed.loc[seeds].tolist(), mine.loc[seeds].tolist(), method=method)
            task_records.append({**config, "pairs": test.n, "delta": test.mean_diff, "delta_low": test.ci_low,
                                 "delta_high": test.ci_high, "p_raw": test.p_value})  # fmt: skip
        for record, p in zip(task_records, holm([r["p_raw"] for r in task_records])):
            better = record["delta"] > 0 if metric in HIGHER_IS_BETTER else record["delta"] < 0
            significant = p == p and p < alpha
            record.update(p_value=p, significant=significant,
                          change=("improvement" if better else "degradation") if significant else "")  # fmt: skip
            records.append(record)
    columns = [
        *CONFIG_COLUMNS,
        "pairs",
        "delta",
        "delta_low",
        "delta_high",
        "p_raw",
        "p_value",
        "significant",
        "change",
    ]
    return pd.DataFrame.from_records(records, columns=columns)


def best_configurations(summary: pd.DataFrame) -> pd.DataFrame:
    """Per task, the configuration with the best mean test figure (accuracy, or MSE for regression)."""
    rows = []
    for _, task_rows in summary[summary["n"] > 0].groupby("task", sort=False):
        if task_rows["classification"].iloc[0]:
            rows.append(task_rows.loc[task_rows["test_acc_mean"].idxmax()])
        else:
            rows.append(task_rows.loc[task_rows["test_loss_mean"].idxmin()])
    return pd.DataFrame(rows).reset_index(drop=True)


def failed_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells written as failed or diverged (the last row of each cell)."""
    latest = latest_rows(frame)
    return latest[latest["status"] != "ok"]


def tests_for(
    frame: pd.DataFrame, summary: pd.DataFrame, metric: str, *, method: str = "t", alpha: float = 0.05
) -> pd.DataFrame:
    """Baseline tests of `metric`; for 'gap', of gap_acc on classification tasks and gap_loss on regression."""
    if metric != "gap":
        return baseline_tests(frame, metric, method=method, alpha=alpha)
    classification = dict(zip(summary["task"], summary["classification"]))
    parts = []
    for column, wanted in (("gap_acc", True), ("gap_loss", False)):
        tasks = [t for t, c in classification.items() if c == wanted]
        if tasks:
            parts.append(baseline_tests(frame[frame["task"].isin(tasks)], column, method=method, alpha=alpha))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def config_label(row: pd.Series, varying: set[str] | list[str], *, parenthesized: bool = False) -> str:
    """'l2 0.0001' (or 'l2 (0.0001)'), then whatever else varies within the task: per-layer keep rates,
    training-set size, input keep rate, dropout kind, model."""
    strength = row["strength"] if isinstance(row["strength"], str) else ""
    label = row["regularizer"] + ((f" ({strength})" if parenthesized else f" {strength}") if strength else "")
    if "layer_keep_rates" in varying and row["layer_keep_rates"]:
        label += f" · layers {row['layer_keep_rates']}"
    if "train_size" in varying:
        label += f" · n={row['train_size'] or 'all'}"
    if "input_keep_rate" in varying:
        label += f" · in {row['input_keep_rate']:g}"
    if "dropout" in varying:
        label += f" · {row['dropout']}"
    if "model" in varying:
        label += f" · {row['model']}"
    return label
