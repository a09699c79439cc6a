"""Aggregate a results table over seeds: one row per configuration with mean ± CI of each figure."""

import pandas as pd

from .stats import mean_ci

CONFIG_COLUMNS = ("task", "model", "regularizer", "strength", "keep_rate", "input_keep_rate", "dropout")
SUMMARY_METRICS = ("gap_acc", "gap_loss", "test_acc", "test_loss", "train_acc", "train_loss", "fit_seconds")


def latest_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_id (the last written wins), so merged or retried files never count a cell twice."""
    return frame.drop_duplicates(subset="cell_id", keep="last")


def is_baseline(frame: pd.DataFrame) -> pd.Series:
    """The baseline of a task: no regularizer and no dropout anywhere (keep rate 1.0, input 1.0)."""
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
    frame = latest_rows(frame).copy()
    frame["strength"] = frame["strength"].fillna("")
    records = []
    for key, group in frame.groupby(list(CONFIG_COLUMNS), sort=True, dropna=False):
        ok = group[group["status"] == "ok"]
        record = dict(zip(CONFIG_COLUMNS, key))
        record.update(n=len(ok), not_ok=len(group) - len(ok), seeds=len(group))
        for metric in metrics:
            estimate = mean_ci(ok[metric].astype(float).tolist())
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
