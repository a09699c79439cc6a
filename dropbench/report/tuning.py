"""Tuned results: each method's setting chosen on the validation split, then its test figures reported.

A tuned run (a suite with a [tuning] table) writes, beside the ordinary columns, `method` (the tuned method:
'none', 'l2', 'dropout', 'max-norm+dropout', ...), `phase` ('tune' or 'eval') and `trial` (the index of the
sampled setting within its task and method; a trial's tune and eval rows share it). Per task and method:

- `choose_on_validation` picks the trial with the best mean validation figure over its ok *tune* rows
  (validation accuracy, higher is better, for classification; validation loss, lower is better, for
  regression), ties to the lowest trial. It selects its columns before anything else: no test_* column, and
  no row of the eval phase, is ever read to make the choice.
- `tuned_report` then reports the chosen trial: under the "fresh" protocol from its eval rows (seeds the
  choice never saw: unbiased), under the "same" protocol from its tune rows (cheap, slightly optimistic), with
  its test figure and gap (mean ± 95% CI) and the paired test-figure difference to the tuned baseline (method
  'none') over the seeds both were evaluated on, tested and Holm-corrected across the task's methods as
  `report` marks its tables (summary.paired_record, summary.holm_marks).
"""

import math

import pandas as pd

from ..catalogue import DEFAULT_METHOD, MARK_METHODS, METRICS
from ..errors import UserError
from .labels import SETUP_COLUMNS, config_label, varying
from .order import SuiteOrder
from .stats import mean_ci
from .summary import CONFIG_COLUMNS, holm_marks, paired_record

TUNE, EVAL = "tune", "eval"
BASELINE_METHOD = "none"
AUTO = "auto"
# Selection metrics and whether higher is better. Only validation figures: the test split never chooses.
SELECTION_METRICS = {name: METRICS[name].higher_is_better for name in ("val_acc", "val_loss")}
# The columns that make a trial's setting, where the results have them.
SETTING_COLUMNS = (*(c for c in CONFIG_COLUMNS if c not in ("task", "setup")), *SETUP_COLUMNS, "setup_id")
CHOICE_COLUMNS = (
    "task",
    "method",
    "trial",
    "selection_metric",
    "selection_mean",
    "selection_seeds",
    "trials",
    "tune_epochs",
    "halved",
)


def has_tuning_rows(frame: pd.DataFrame) -> bool:
    """Whether a results frame holds rows of a tuning phase."""
    return "phase" in frame and bool((frame["phase"].astype("string").fillna("") == TUNE).any())


def _tune_rows(frame: pd.DataFrame, figures: tuple[str, ...]) -> pd.DataFrame:
    """The tune rows (the last written row of each cell), restricted to the columns a choice may read: identity,
    setting, status and the validation `figures`. Columns are selected first, so no test column is touched."""
    if not has_tuning_rows(frame):
        raise UserError("these results hold no tuning rows (run a suite with a [tuning] table)")
    wanted = ["cell_id", "task", "method", "phase", "trial", "seed", "status", "epochs_run", *SETTING_COLUMNS, *figures]
    rows = frame[[c for c in dict.fromkeys(wanted) if c in frame.columns]]
    rows = rows[rows["phase"].astype("string").fillna("") == TUNE]
    if "cell_id" in rows:
        rows = rows.drop_duplicates(subset="cell_id", keep="last")
    rows = rows.assign(
        trial=pd.to_numeric(rows["trial"], errors="coerce"),
        method=rows["method"].astype("string").fillna("").astype(str),
    )
    return rows[rows["trial"].notna()].assign(trial=lambda r: r["trial"].astype(int))


def _rung_epochs(rows: pd.DataFrame) -> pd.Series:
    """Each tune row's training length (`max_epochs`, its halving rung), -1 where the file has none."""
    if "max_epochs" not in rows:
        return pd.Series(-1, index=rows.index)
    return pd.to_numeric(rows["max_epochs"], errors="coerce").fillna(-1)


def last_rung(rows: pd.DataFrame) -> pd.DataFrame:
    """The tune rows of each task's longest training (`max_epochs`): with successive halving the last rung's,
    the full training; without it every tune row. Earlier rungs' rows never take part in a choice, so a trial
    stopped early never wins by a figure measured at fewer epochs."""
    epochs = _rung_epochs(rows)
    longest = epochs.groupby(rows["task"]).transform("max")
    return rows[epochs == longest]


def _selection_metric(task_rows: pd.DataFrame, metric: str) -> str:
    """The metric a task is chosen on: for 'auto', val_acc where any of its tune rows measured a validation
    accuracy (a classification task), else val_loss (regression)."""
    if metric != AUTO:
        return metric
    if "val_acc" in task_rows and pd.to_numeric(task_rows["val_acc"], errors="coerce").notna().any():
        return "val_acc"
    return "val_loss"


def _check_metric(metric: str) -> None:
    if metric != AUTO and metric not in SELECTION_METRICS:
        raise UserError(
            f"cannot choose on '{metric}': tuning chooses on the validation split, one of "
            f"{', '.join((AUTO, *SELECTION_METRICS))}"
        )


def _method_rank(methods: list[str], order: SuiteOrder | None) -> dict[str, int]:
    """The baseline method first, then the suite's list of methods where the metadata has one, then by
    first appearance."""
    listed = order.methods if order else ()
    return {m: i for i, m in enumerate(dict.fromkeys([BASELINE_METHOD, *listed, *methods]))}


def choose_on_validation(frame: pd.DataFrame, metric: str = AUTO, *, order: SuiteOrder | None = None) -> pd.DataFrame:
    """Per (task, method) of a tuned run, the trial with the best mean validation figure over its ok tune rows.

    Only rows with phase 'tune' and status 'ok' count, and only their validation figures: the test columns are
    never read (the needed columns are selected first) and neither are the eval phase's rows, so shuffling or
    corrupting either changes no choice. `metric` is 'auto' (val_acc, higher is better, for classification
    tasks; val_loss, lower is better, for regression: a task whose tune rows hold no validation accuracy),
    'val_acc' or 'val_loss'. A trial's figure is its mean over its seeds (NaN ones left out); ties go to the
    lowest trial; a trial without a single finite figure cannot be chosen.

    Returns one row per (task, method), tasks in the suite's order (`order`, see report.order) and methods the
    baseline ('none') first, then as the suite lists them or as they appear: `task`, `method`, `trial`, the
    chosen setting (SETTING_COLUMNS present in `frame`), `selection_metric`, `selection_mean`,
    `selection_seeds` (ok seeds behind the mean), `trials` (trials with at least one ok tune row, at any rung),
    `tune_epochs` (epochs trained by the method's tune cells, every trial and seed: `trained_epochs`) and
    `halved` (whether its tune rows come at more than one training length: successive halving). With halving
    only the last rung's rows (the task's longest `max_epochs`, `last_rung`) are chosen among.
    """
    figures = trial_figures(frame, metric)
    settings = [c for c in SETTING_COLUMNS if c in figures.columns]
    every = _tune_rows(frame, ())  # every rung's rows: the trials tried and the epochs spent
    tried = every[every["status"] == "ok"].groupby(["task", "method"])["trial"].nunique()
    epochs = trained_epochs(every)
    halved = _rung_epochs(every).groupby([every["task"], every["method"]]).nunique() > 1
    records = []
    for (task, method), trials in figures.groupby(["task", "method"], sort=False):
        chosen_on = str(trials["selection_metric"].iloc[0])
        record: dict[str, object] = {"task": task, "method": method, "selection_metric": chosen_on}
        candidates = trials[trials["seeds"] > 0]
        if candidates.empty:
            record.update(trial=math.nan, selection_mean=math.nan, selection_seeds=0)
        else:
            higher = SELECTION_METRICS[chosen_on]
            best = candidates.sort_values(["mean", "trial"], ascending=[not higher, True], kind="stable").iloc[0]
            record.update({c: best[c] for c in settings})
            record.update(
                trial=int(best["trial"]), selection_mean=float(best["mean"]), selection_seeds=int(best["seeds"])
            )
        record["trials"] = int(tried.get((task, method), len(trials)))
        record["tune_epochs"] = int(epochs.get((task, method), 0))
        record["halved"] = bool(halved.get((task, method), False))
        records.append(record)
    columns = ["task", "method", "trial", *settings, *CHOICE_COLUMNS[3:]]
    chosen = pd.DataFrame.from_records(records, columns=columns)
    if chosen.empty:
        return chosen
    tasks = list(dict.fromkeys([*(order.tasks if order else ()), *figures["task"]]))
    task_rank = {t: i for i, t in enumerate(tasks)}
    method_rank = _method_rank(list(figures["method"]), order)
    ranked = chosen.assign(_task=chosen["task"].map(task_rank), _method=chosen["method"].map(method_rank))
    return (
        ranked.sort_values(["_task", "_method"], kind="stable")
        .drop(columns=["_task", "_method"])
        .reset_index(drop=True)
    )


def trained_epochs(rows: pd.DataFrame) -> pd.Series:
    """Epochs trained per (task, method): each trial's training at each seed counted once, at its longest
    `epochs_run`. With successive halving a trial's rungs are one training continued from rung to rung (each rung's
    row holds the epochs so far), so summing its rows would count the first rung's epochs again at every rung; a
    rung cell that had to retrain from scratch (its checkpoint was missing) trained more than this counts."""
    spent = pd.to_numeric(rows.get("epochs_run", pd.Series(0, index=rows.index)), errors="coerce").fillna(0)
    seed = rows["seed"] if "seed" in rows else pd.Series(0, index=rows.index)
    longest = spent.groupby([rows["task"], rows["method"], rows["trial"], seed]).max()
    return longest.groupby(level=[0, 1]).sum()


def trial_figures(frame: pd.DataFrame, metric: str = AUTO) -> pd.DataFrame:
    """Per (task, method, trial) with at least one ok tune row of the last rung (`last_rung`: every tune row
    without halving), in order of appearance: its setting
    (SETTING_COLUMNS present), the `selection_metric` (see choose_on_validation) and its `mean` over the trial's
    ok tune seeds with the half-width of its 95% t-interval (`ci`) and the `seeds` behind them (NaN figures left
    out). What the choice is made on, and what the tuning plot draws; never a test column, never an eval row."""
    _check_metric(metric)
    rows = last_rung(_tune_rows(frame, tuple(SELECTION_METRICS) if metric == AUTO else (metric,)))
    settings = [c for c in SETTING_COLUMNS if c in rows.columns]
    ok = rows[rows["status"] == "ok"]
    records = []
    for task, task_rows in ok.groupby("task", sort=False):
        chosen_on = _selection_metric(task_rows, metric)
        for (method, trial), trial_rows in task_rows.groupby(["method", "trial"], sort=False):
            estimate = mean_ci(pd.to_numeric(trial_rows[chosen_on], errors="coerce").astype(float).tolist())
            first = trial_rows.iloc[0]
            records.append(
                {
                    "task": task,
                    "method": method,
                    "trial": int(trial),
                    **{c: first[c] for c in settings},
                    "selection_metric": chosen_on,
                    "mean": estimate.mean,
                    "ci": estimate.half_width,
                    "seeds": estimate.n,
                }
            )
    columns = ["task", "method", "trial", *settings, "selection_metric", "mean", "ci", "seeds"]
    return pd.DataFrame.from_records(records, columns=columns)


# ---------------------------------------------------------------- the chosen trials, tested


FRESH, SAME = "fresh", "same"
PROTOCOLS = {
    FRESH: "fresh evaluation seeds, never seen by the choice: unbiased",
    SAME: "the tuning seeds themselves: cheap, slightly optimistic",
}
TUNED_COLUMNS = (
    "task",
    "method",
    "trial",
    "configuration",
    "protocol",
    "trials",
    "tune_epochs",
    "halved",
    "selection_metric",
    "selection_mean",
    "selection_seeds",
    "n",
    "not_ok",
    "test_metric",
    "test_mean",
    "test_ci",
    "gap_metric",
    "gap_mean",
    "gap_ci",
    "pairs",
    "delta",
    "delta_low",
    "delta_high",
    "p_raw",
    "min_p",
    "p_value",
    "test",
    "family",
    "alpha",
    "significant",
    "change",
)


def _evaluation_rows(rows: pd.DataFrame, choice: pd.Series) -> tuple[str, pd.DataFrame]:
    """The chosen trial's protocol and the rows its test figures come from: its eval rows where it has any
    (fresh), else its tune rows (same)."""
    trial = rows[
        (rows["task"] == choice["task"]) & (rows["method"] == choice["method"]) & (rows["_trial"] == choice["trial"])
    ]
    evaluated = trial[trial["_phase"] == EVAL]
    if len(evaluated):
        return FRESH, evaluated
    return SAME, trial[trial["_phase"] == TUNE]


def _reportable_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a chosen trial's figures may come from: the last written row of each cell, eval rows and the last
    rung's tune rows (halving), with `_phase` and `_trial` to select them by."""
    rows = frame.drop_duplicates(subset="cell_id", keep="last") if "cell_id" in frame else frame
    rows = rows.assign(
        _phase=rows["phase"].astype("string").fillna("").astype(str),
        _trial=pd.to_numeric(rows["trial"], errors="coerce"),
        method=rows["method"].astype("string").fillna("").astype(str),
    )
    tuned = rows[rows["_phase"] == TUNE]
    return rows[(rows["_phase"] != TUNE) | rows.index.isin(last_rung(tuned).index)]  # halving: the last rung's


def chosen_rows(frame: pd.DataFrame, metric: str = AUTO, *, order: SuiteOrder | None = None) -> pd.DataFrame:
    """The ok rows each (task, method)'s reported figures come from, as `tuned_report` reads them: the chosen
    trial's eval rows (protocol 'fresh') or, where it has none, its tune rows (protocol 'same'), with a `protocol`
    column; (task, method)s in choose_on_validation's order. For figures tuned_report does not compute (any
    column of the results)."""
    rows = _reportable_rows(frame)
    parts = []
    for _, choice in choose_on_validation(frame, metric, order=order).iterrows():
        if choice["trial"] != choice["trial"]:  # no trial with a figure: nothing to report
            continue
        protocol, evaluated = _evaluation_rows(rows, choice)
        parts.append(evaluated[evaluated["status"] == "ok"].assign(protocol=protocol))
    if not parts:
        return rows.iloc[:0].assign(protocol="").drop(columns=["_phase", "_trial"])
    return pd.concat(parts).drop(columns=["_phase", "_trial"])


def _setting_label(choice: pd.Series, swept: set[str], task_rows: pd.DataFrame) -> str:
    """'l2 0.001', 'none keep 0.5 · lr 0.01': the chosen setting with what its task's trials swept (the keep
    rate where the method's trials try more than one, or the chosen one drops units)."""
    tried = task_rows[(task_rows["_phase"] == TUNE) & (task_rows["method"] == choice["method"])]
    keep = float(choice["keep_rate"]) != 1.0 or tried["keep_rate"].nunique() > 1
    return config_label(choice, swept, keep=keep)


def tuned_report(
    frame: pd.DataFrame,
    *,
    test: str = DEFAULT_METHOD,
    alpha: float = 0.05,
    metric: str = AUTO,
    order: SuiteOrder | None = None,
) -> pd.DataFrame:
    """`report --tuned`: per (task, method) the trial chosen on validation (choose_on_validation), reported.

    Columns (TUNED_COLUMNS, then the chosen setting's): `configuration` (its label), `protocol` ('fresh' where
    the chosen trial has eval rows, which then give its test figures; 'same' where it has tune rows only, which
    give them), `trials` spent, the choice's `selection_*`, `n` ok evaluation seeds (`not_ok` others), the test
    figure `test_metric` (test_acc for classification, test_loss for regression) and the gap `gap_metric`
    (gap_acc or gap_loss) as mean with the half-width of its 95% t-interval (`_ci`), and the paired difference to
    the tuned baseline (method 'none') over the seeds both were evaluated on: `delta` = method − none of the test
    figure with its 95% t-interval, the `test`'s raw p (`p_raw`, as `report` marks its tables: sign-flip or
    wilcoxon), Holm-adjusted across the task's methods (`p_value`, `family`), `significant` at `alpha` and
    `change` ('improvement', 'degradation' or ''). Figures are fractions or losses, unscaled. Eval rows never
    influence the choice.
    """
    if test not in MARK_METHODS:
        raise UserError(f"unknown test '{test}'; allowed: {', '.join(MARK_METHODS)}")
    chosen = choose_on_validation(frame, metric, order=order)
    settings = [c for c in SETTING_COLUMNS if c in chosen.columns]
    rows = _reportable_rows(frame)
    records = []
    for task, choices in chosen.groupby("task", sort=False):
        task_rows = rows[rows["task"] == task]
        classification = any(
            c in task_rows and pd.to_numeric(task_rows[c], errors="coerce").notna().any()
            for c in ("test_acc", "val_acc")
        )
        test_metric, gap_metric = ("test_acc", "gap_acc") if classification else ("test_loss", "gap_loss")
        swept = varying(task_rows[task_rows["_phase"] == TUNE])
        evaluations = {}
        for _, choice in choices.iterrows():
            protocol, evaluated = (
                _evaluation_rows(task_rows, choice) if choice["trial"] == choice["trial"] else ("", task_rows.iloc[:0])
            )
            evaluations[choice["method"]] = evaluated[evaluated["status"] == "ok"]
            test_figure = mean_ci(pd.to_numeric(evaluations[choice["method"]][test_metric], errors="coerce").tolist())
            gap = mean_ci(pd.to_numeric(evaluations[choice["method"]][gap_metric], errors="coerce").tolist())
            records.append(
                {
                    **choice.to_dict(),
                    "configuration": _setting_label(choice, swept, task_rows) if protocol else "no trial with a figure",
                    "protocol": protocol,
                    "n": len(evaluations[choice["method"]]),
                    "not_ok": len(evaluated) - len(evaluations[choice["method"]]),
                    "test_metric": test_metric,
                    "test_mean": test_figure.mean,
                    "test_ci": test_figure.half_width,
                    "gap_metric": gap_metric,
                    "gap_mean": gap.mean,
                    "gap_ci": gap.half_width,
                    "alpha": alpha,
                    "test": test,
                    "significant": False,
                    "change": "",
                }
            )
        task_records = records[len(records) - len(choices) :]
        base = evaluations.get(BASELINE_METHOD)
        compared = [r for r in task_records if r["method"] != BASELINE_METHOD and base is not None and len(base)]
        paired = [paired_record(base, evaluations[r["method"]], test_metric, method=test) for r in compared]
        for record, marked in zip(compared, holm_marks(paired, test_metric, method=test, alpha=alpha)):
            record.update(marked, test=marked["method"], method=record["method"])
    columns = [*TUNED_COLUMNS, *settings]
    return pd.DataFrame.from_records(records, columns=columns)
