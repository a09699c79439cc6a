"""Aggregate a results table over seeds: one row per configuration with mean ± CI of each figure.

A configuration is everything that changes training. The grid's axes have columns of their own; the rest
(optimizer, lr, momentum, batch size, epochs, precision, MC samples, and whatever else the cell's setup_id
hashes) is folded into one `setup` key, so cells that differ in any training setting are never pooled as
seeds, and each configuration is paired with the baseline of its own setup.
"""

import hashlib
import math

import pandas as pd

from ..catalogue import DEFAULT_METHOD, GAP, HIGHER_IS_BETTER, METRICS
from ..errors import UserError
from .labels import SETUP_COLUMNS, config_label, varying
from .order import SuiteOrder, in_suite_order
from .stats import holm, mean_ci, paired_difference

CONFIG_COLUMNS = (
    "task",
    "model",
    "regularizer",
    "strength",
    "keep_rate",
    "layer_keep_rates",
    "input_keep_rate",
    "dropout",
    "train_size",
    "setup",
)
SUMMARY_METRICS = (
    "gap_acc",
    "gap_loss",
    "test_acc",
    "test_loss",
    "train_acc",
    "train_loss",
    "val_acc",
    "val_loss",
    "fit_seconds",
)
OPTIONAL_METRICS = ("test_error", "test_ece", "test_acc_mc", "test_loss_mc", "test_ece_mc")


def _setup_key(frame: pd.DataFrame) -> pd.Series:
    """The setup_id where the file has one; for files of earlier schemas, a hash of the setup columns they have."""
    present = [c for c in SETUP_COLUMNS if c in frame]
    if present:
        text = frame[present].apply(lambda column: column.map(str)).agg("|".join, axis=1)
    else:
        text = pd.Series("", index=frame.index)
    derived = text.map(lambda t: "~" + hashlib.blake2b(t.encode(), digest_size=6).hexdigest())
    if "setup_id" not in frame:
        return derived
    ids = frame["setup_id"].astype("string").fillna("")
    return ids.where(ids != "", derived).astype(str)


def with_config_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """Configuration columns filled where empty (and present in files of earlier schemas), plus `setup`."""
    frame = frame.copy()
    frame["strength"] = frame["strength"].fillna("")
    frame["layer_keep_rates"] = frame["layer_keep_rates"].fillna("") if "layer_keep_rates" in frame else ""
    if "train_size" in frame:
        frame["train_size"] = pd.to_numeric(frame["train_size"], errors="coerce").fillna(0).astype(int)
    else:
        frame["train_size"] = 0
    frame["setup"] = _setup_key(frame) if len(frame) else pd.Series(dtype=str)
    return frame


def latest_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per cell_id (the last written wins), so merged or retried files never count a cell twice."""
    return frame.drop_duplicates(subset="cell_id", keep="last")


def is_baseline(frame: pd.DataFrame) -> pd.Series:
    """The baseline of a task: no regularizer and no dropout anywhere (keep rate 1.0, input 1.0); one per
    model and training-set size, each configuration being compared with the baseline of its own."""
    return (frame["regularizer"] == "none") & (frame["keep_rate"] == 1.0) & (frame["input_keep_rate"] == 1.0)


def summarize(
    frame: pd.DataFrame, metrics: tuple[str, ...] = SUMMARY_METRICS, *, order: SuiteOrder | None = None
) -> pd.DataFrame:
    """Per configuration: `n` ok cells, `not_ok` others, and `<metric>_mean/_sd/_ci` over the ok cells'
    seeds (`_ci` is the half-width of the 95% t-interval). Cells that failed or diverged are counted,
    not averaged. Rows follow the suite's order (see report.order; `order` from the results' metadata)."""
    frame = with_config_defaults(latest_rows(frame))
    if "test_acc" in frame:
        frame["test_error"] = 1.0 - frame["test_acc"]
    metrics = tuple(dict.fromkeys([*metrics, *(m for m in OPTIONAL_METRICS if m in frame)]))
    records = []
    for key, group in frame.groupby(list(CONFIG_COLUMNS), sort=True, dropna=False):
        ok = group[group["status"] == "ok"]
        record = dict(zip(CONFIG_COLUMNS, key))
        record.update(n=len(ok), not_ok=len(group) - len(ok), seeds=len(group))
        record.update({column: group[column].iloc[0] for column in SETUP_COLUMNS if column in group})
        for metric in metrics:
            estimate = mean_ci(pd.to_numeric(ok[metric], errors="coerce").astype(float).tolist())
            record.update(
                {f"{metric}_mean": estimate.mean, f"{metric}_sd": estimate.sd, f"{metric}_ci": estimate.half_width}
            )
        records.append(record)
    summary = pd.DataFrame.from_records(records)
    if summary.empty:
        return summary
    summary = in_suite_order(summary, frame, order).reset_index(drop=True)
    summary["baseline"] = is_baseline(summary)
    # A task is a classification task when any of its cells measured an accuracy.
    has_acc = frame.groupby("task")["test_acc"].apply(lambda s: s.notna().any())
    summary["classification"] = summary["task"].map(has_acc).astype(bool)
    summary["best"] = chosen_on_validation(summary)
    return summary


def chosen_on_validation(summary: pd.DataFrame) -> pd.Series:
    """Per task, the configuration with the best mean *validation* figure (accuracy, or loss for regression):
    the test split is looked at once, to report the chosen configuration, never to choose it."""
    chosen = pd.Series(False, index=summary.index)
    for _, task_rows in summary[summary["n"] > 0].groupby("task", sort=False):
        if task_rows["classification"].iloc[0]:
            scores = task_rows["val_acc_mean"].dropna()
            index = scores.idxmax() if len(scores) else None
        else:
            scores = task_rows["val_loss_mean"].dropna()
            index = scores.idxmin() if len(scores) else None
        if index is not None:
            chosen[index] = True
    return chosen


# ---------------------------------------------------------------- against the baseline, over seeds


def with_metric(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The frame with `metric` present as a column (test_error is derived: 1 − test_acc)."""
    if metric not in METRICS:
        raise UserError(f"unknown metric '{metric}'; allowed: {', '.join(METRICS)}")
    if metric == "test_error" and "test_acc" in frame:
        return frame.assign(test_error=1.0 - frame["test_acc"])
    if metric not in frame:
        raise UserError(f"these results have no column '{metric}' (written by a dropbench without it?)")
    return frame


def baseline_tests(
    frame: pd.DataFrame, metric: str, *, method: str = DEFAULT_METHOD, alpha: float = 0.05
) -> pd.DataFrame:
    """Each configuration against its task's baseline (none, keep 1.0, input 1.0; same model, training-set
    size and setup), paired by seed: delta = configuration − baseline with its 95% t-interval, the p-value
    of a paired test (the exact sign-flip test by default), Holm-corrected across the task's `family`
    configurations, and whether the change is a significant improvement or degradation of `metric`.
    `min_p` is the smallest p-value the test can give at that many pairs."""
    frame = with_metric(with_config_defaults(latest_rows(frame)), metric)
    frame = frame[frame["status"] == "ok"]
    records = []
    for _, task_rows in frame.groupby("task", sort=False):
        base_rows = task_rows[is_baseline(task_rows)]
        task_records = []
        for key, group in task_rows.groupby(list(CONFIG_COLUMNS), sort=False, dropna=False):
            config = dict(zip(CONFIG_COLUMNS, key))
            base = base_rows[
                (base_rows["model"] == config["model"])
                & (base_rows["train_size"] == config["train_size"])
                & (base_rows["setup"] == config["setup"])
            ]
            if base.empty or bool(is_baseline(group).all()):
                continue
            task_records.append({**config, **paired_record(base, group, metric, method=method)})
        records += holm_marks(task_records, metric, method=method, alpha=alpha)
    return pd.DataFrame.from_records(records, columns=list(TEST_COLUMNS))


def paired_record(base: pd.DataFrame, rows: pd.DataFrame, metric: str, *, method: str = DEFAULT_METHOD) -> dict:
    """`rows` against `base` (ok cells of two configurations), paired by seed over the seeds both have: `pairs`,
    `delta` = rows − base with its 95% t-interval `delta_low`..`delta_high`, the paired test's `p_raw` and the
    smallest p it could give at that many pairs, `min_p`."""
    base_by_seed, mine = _by_seed(base, metric), _by_seed(rows, metric)
    seeds = sorted(set(mine.index) & set(base_by_seed.index))
    test = paired_difference(base_by_seed.loc[seeds].tolist(), mine.loc[seeds].tolist(), method=method)
    return {
        "pairs": test.n,
        "delta": test.mean_diff,
        "delta_low": test.ci_low,
        "delta_high": test.ci_high,
        "p_raw": test.p_value,
        "min_p": test.min_p,
    }


def holm_marks(records: list[dict], metric: str, *, method: str = DEFAULT_METHOD, alpha: float = 0.05) -> list[dict]:
    """One task's paired records (see paired_record) as one Holm family: each gets its Holm-adjusted `p_value`,
    `significant` (p < alpha), the test `method`, the `family` size (the tests that gave a p) and its `change`
    of `metric`: 'improvement', 'degradation' or '' where not significant."""
    family = sum(1 for r in records if r["p_raw"] == r["p_raw"])  # Holm's m: tests that gave a p
    for record, p in zip(records, holm([r["p_raw"] for r in records])):
        better = record["delta"] > 0 if metric in HIGHER_IS_BETTER else record["delta"] < 0
        significant = p == p and p < alpha
        record.update(
            p_value=p,
            significant=significant,
            method=method,
            family=family,
            change=("improvement" if better else "degradation") if significant else "",
        )
    return records


TEST_COLUMNS = (
    *CONFIG_COLUMNS,
    "pairs",
    "delta",
    "delta_low",
    "delta_high",
    "p_raw",
    "min_p",
    "p_value",
    "method",
    "family",
    "significant",
    "change",
)


def _by_seed(rows: pd.DataFrame, metric: str) -> pd.Series:
    """`metric` indexed by seed; one configuration holds each seed once (its cells share a setup), so a
    repeat means the rows were not one configuration after all, and pairing them would pool trainings."""
    repeated = rows["seed"][rows["seed"].duplicated()]
    if len(repeated):
        row = rows.iloc[0]
        raise UserError(
            f"{row['task']} {row['regularizer']} keep {row['keep_rate']:g}: seed {repeated.iloc[0]} "
            "appears in more than one cell of one configuration; these results mix trainings"
        )
    return rows.set_index("seed")[metric]


def best_configurations(summary: pd.DataFrame) -> pd.DataFrame:
    """Per task, the configuration chosen on validation (see chosen_on_validation), with its test figures."""
    return summary[summary["best"]].reset_index(drop=True)


BEST_COLUMNS = (
    "task",
    "configuration",
    "keep_rate",
    "chosen_on",
    "val_mean",
    "test_metric",
    "test_mean",
    "test_ci",
    "gain",
    "gain_low",
    "gain_high",
    "p_value",
    "method",
    "family",
    "seeds",
)


def best_report(
    frame: pd.DataFrame, summary: pd.DataFrame, *, method: str = DEFAULT_METHOD, alpha: float = 0.05
) -> pd.DataFrame:
    """`report --best`: per task the configuration chosen on mean validation accuracy (loss for regression),
    its test figure with its 95% CI, and its paired test-figure gain over the baseline with the gain's 95%
    t-interval and Holm-adjusted p (the family: all of the task's configurations, since the choice was one
    of them). Figures are fractions (accuracy) or losses, unscaled."""
    records = []
    for _, row in best_configurations(summary).iterrows():
        classification = bool(row["classification"])
        metric = "test_acc" if classification else "test_loss"
        tests = baseline_tests(frame[frame["task"] == row["task"]], metric, method=method, alpha=alpha)
        mine = tests[(tests[list(CONFIG_COLUMNS)].astype(str) == row[list(CONFIG_COLUMNS)].astype(str)).all(axis=1)]
        test = mine.iloc[0] if len(mine) else None
        differs = varying(summary[summary["task"] == row["task"]])  # named as the task's table names it
        records.append(
            {
                "task": row["task"],
                "configuration": config_label(row, differs, keep=True),
                "keep_rate": row["keep_rate"],
                "chosen_on": "val_acc" if classification else "val_loss",
                "val_mean": row["val_acc_mean" if classification else "val_loss_mean"],
                "test_metric": metric,
                "test_mean": row[f"{metric}_mean"],
                "test_ci": row[f"{metric}_ci"],
                "gain": math.nan if test is None else test["delta"],
                "gain_low": math.nan if test is None else test["delta_low"],
                "gain_high": math.nan if test is None else test["delta_high"],
                "p_value": math.nan if test is None else test["p_value"],
                "method": method,
                "family": 0 if test is None else int(test["family"]),
                "seeds": int(row["n"]),
            }
        )
    return pd.DataFrame.from_records(records, columns=list(BEST_COLUMNS))


def failed_cells(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells written as failed or diverged (the last row of each cell)."""
    latest = latest_rows(frame)
    return latest[latest["status"] != "ok"]


def tests_for(
    frame: pd.DataFrame, summary: pd.DataFrame, metric: str, *, method: str = DEFAULT_METHOD, alpha: float = 0.05
) -> pd.DataFrame:
    """Baseline tests of `metric`, in the summary's order; for 'gap', of gap_acc on classification tasks and
    gap_loss on regression."""
    if metric != GAP:
        return _in_order_of(summary, baseline_tests(frame, metric, method=method, alpha=alpha))
    classification = dict(zip(summary["task"], summary["classification"]))
    parts = []
    for column, wanted in (("gap_acc", True), ("gap_loss", False)):
        tasks = [t for t, c in classification.items() if c == wanted]
        if tasks:
            parts.append(baseline_tests(frame[frame["task"].isin(tasks)], column, method=method, alpha=alpha))
    return _in_order_of(summary, pd.concat(parts, ignore_index=True)) if parts else pd.DataFrame()


def _in_order_of(summary: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """`tests` sorted as their configurations stand in `summary`."""
    if tests.empty:
        return tests
    position = {tuple(map(str, key)): i for i, key in enumerate(summary[list(CONFIG_COLUMNS)].itertuples(index=False))}
    ranks = [
        position.get(tuple(map(str, key)), len(position)) for key in tests[list(CONFIG_COLUMNS)].itertuples(index=False)
    ]
    return tests.assign(_rank=ranks).sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)
