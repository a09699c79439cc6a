"""Compare a NEW results table against a BASE one, cell by cell, and decide which configurations regressed.

Cells are matched by cell_id (the suite name is not part of it), so the same cell in two files pairs up
seed by seed. Each configuration gets a paired test of NEW - BASE over its seeds; p-values are
Holm-corrected within each task, since a suite tests many configurations of a task at once.

As a CI gate the comparison must not pass on nothing: a configuration without a single pair that is ok on
both sides is "not comparable", and when no configuration is comparable the exit code is 2, not 0.
"""

import math
from dataclasses import dataclass

import pandas as pd

from ..catalogue import DEFAULT_METHOD, GAP, HIGHER_IS_BETTER, MARK_METHODS, METRICS, PERCENT_METRICS
from ..errors import UserError
from .labels import cell_label, varying
from .order import SuiteOrder, in_suite_order
from .stats import holm, paired_difference
from .summary import CONFIG_COLUMNS, latest_rows, with_config_defaults

VERDICTS = ("regression", "improvement", "inconclusive", "no change", "not comparable")
# The whole comparison's verdict, one per exit code.
OVERALL_VERDICTS = {0: "no regression", 1: "regression", 2: "not comparable"}


@dataclass(frozen=True)
class Comparison:
    """One configuration: BASE and NEW means over the paired seeds, delta = NEW - BASE in the metric's
    units with its confidence interval, the Holm-adjusted p-value (`p_raw` before adjustment), the
    verdict, how many cells matched and how many of them were not ok on each side (those are not in the
    statistics). With no pair ok on both sides (n_pairs 0) the verdict is "not comparable"."""

    task: str
    model: str
    regularizer: str
    strength: str
    keep_rate: float
    layer_keep_rates: str
    input_keep_rate: float
    dropout: str
    train_size: int
    setup: str  # the training setup (report.CONFIG_COLUMNS): cells of other setups are other configurations
    n_pairs: int
    base_mean: float
    new_mean: float
    delta: float
    ci_low: float
    ci_high: float
    p_value: float
    p_raw: float
    verdict: str
    base_not_ok: int = 0
    new_not_ok: int = 0
    n_matched: int = 0

    @property
    def config(self) -> dict[str, object]:
        return {column: getattr(self, column) for column in CONFIG_COLUMNS}


@dataclass(frozen=True)
class CompareResult:
    """All compared configurations plus the cells found on one side only; `reason` says why nothing was
    comparable, and is empty whenever at least one configuration was."""

    rows: list[Comparison]
    missing_in_new: list[str]
    missing_in_base: list[str]
    metric: str
    max_drop: float
    alpha: float
    method: str = DEFAULT_METHOD
    reason: str = ""

    @property
    def comparable(self) -> list[Comparison]:
        return [row for row in self.rows if row.verdict != "not comparable"]

    @property
    def exit_code(self) -> int:
        """2 when nothing was comparable (a gate that tested nothing must not pass), 1 on a regression, else 0.
        Configurations that are not comparable beside comparable ones are reported, not fatal."""
        if not self.comparable:
            return 2
        return 1 if any(row.verdict == "regression" for row in self.rows) else 0

    @property
    def verdict(self) -> str:
        return OVERALL_VERDICTS[self.exit_code]


def _with_metric(frame: pd.DataFrame, metric: str, side: str) -> pd.DataFrame:
    frame = with_config_defaults(frame)  # files of earlier schemas lack the newer configuration columns
    needed = {"cell_id", "seed", "status", *CONFIG_COLUMNS, "test_acc" if metric == "test_error" else metric}
    missing = sorted(needed - set(frame.columns))
    if missing:
        raise UserError(f"{side} results lack the columns {', '.join(missing)}")
    frame = latest_rows(frame)
    values = 1.0 - frame["test_acc"].astype(float) if metric == "test_error" else frame[metric].astype(float)
    frame["_value"] = values
    return frame


def _verdict(worse_mean: float, worse_low: float, worse_high: float, p: float, alpha: float, limit: float) -> str:
    """From the worsening (positive = worse) and its interval; `limit` is max_drop in the metric's units."""
    if math.isnan(p):
        # n < 2: no interval, so a large worsening can be neither confirmed nor dismissed.
        return "inconclusive" if worse_mean > limit else "no change"
    significant = p < alpha
    if significant and worse_mean > 0 and worse_low > limit:
        return "regression"
    if significant and worse_mean < 0:
        return "improvement"
    # Part of the interval lies beyond the threshold (or all of it, but Holm left it short of significance):
    # a regression is not ruled out, so a human should look rather than the gate pass silently.
    if worse_high > limit:
        return "inconclusive"
    return "no change"


def _tasks_without_the_metric(frame: pd.DataFrame) -> set[str]:
    """Tasks whose ok cells all lack the metric (accuracies of a regression task)."""
    ok = frame[frame["status"] == "ok"]
    return set(ok["task"]) - set(ok.dropna(subset="_value")["task"])


def _cells_of(frame: pd.DataFrame) -> str:
    """'36 cells of wine, digits', or 'no cells'."""
    if frame.empty:
        return "no cells"
    return f"{len(frame)} cells of {', '.join(dict.fromkeys(frame['task'].astype(str)))}"


def _why_nothing_compares(
    base: pd.DataFrame, new: pd.DataFrame, pairs: pd.DataFrame, metric: str, unmeasured: set[str]
) -> str:
    """Why not a single pair could be tested (the first reason that holds): the line a user sees with exit 2."""
    if pairs.empty:
        return f"BASE and NEW have no cell in common (BASE: {_cells_of(base)}; NEW: {_cells_of(new)})"
    shared_tasks = ", ".join(dict.fromkeys(pairs["task"].astype(str)))
    pairs = pairs[~pairs["task"].isin(unmeasured)]
    if pairs.empty:
        return f"{metric} is not measured in any ok cell of the tasks BASE and NEW share ({shared_tasks})"
    total = len(pairs)
    base_bad, new_bad = int((pairs["status_base"] != "ok").sum()), int((pairs["status_new"] != "ok").sum())
    if base_bad == total and new_bad == total:
        return f"every matched cell failed or diverged in both BASE and NEW ({total} of {total})"
    for side, bad in (("NEW", new_bad), ("BASE", base_bad)):
        if bad == total:
            return f"every matched cell of {side} failed or diverged ({total} of {total})"
    both_ok = int(((pairs["status_base"] == "ok") & (pairs["status_new"] == "ok")).sum())
    if both_ok == 0:
        return (
            f"no matched cell is ok on both sides (failed or diverged: BASE {base_bad} of "
            f"{total}, NEW {new_bad} of {total})"
        )
    return f"none of the {both_ok} cells ok on both sides has a {metric} value on both"


def check_verdict_options(command: str, metric: str, method: str, alpha: float, max_drop: float) -> None:
    """The options a regression verdict (compare, history) takes, each refused in one line: one metric with
    one unit for --max-drop, a known test, 0 < alpha < 1, a drop of zero or more."""
    if metric == GAP:
        raise UserError(
            f"{command} holds every configuration to one --max-drop, so it takes gap_acc or gap_loss, not gap"
        )
    if metric not in METRICS:
        raise UserError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    if method not in MARK_METHODS:
        raise UserError(f"unknown test {method!r}; choose one of {', '.join(MARK_METHODS)}")
    if not 0 < alpha < 1:
        raise UserError(f"alpha must be between 0 and 1, got {alpha:g}")
    if not max_drop >= 0:
        raise UserError(f"max drop must be zero or more, got {max_drop:g}")


def compare(
    base: pd.DataFrame,
    new: pd.DataFrame,
    *,
    metric: str = "test_acc",
    max_drop: float = 0.5,
    alpha: float = 0.05,
    method: str = DEFAULT_METHOD,
    order: SuiteOrder | None = None,
) -> CompareResult:
    """Pair BASE and NEW cells by cell_id and test each configuration's NEW - BASE difference over seeds.

    `max_drop` is in percentage points for accuracy-like metrics (PERCENT_METRICS), in the metric's units
    otherwise. The interval is the t-interval at level 1 - alpha; the verdict's p-value is the sign-flip (or
    Wilcoxon) test's, which at few seeds can stay above alpha where the interval already excludes zero.
    Configurations are listed in the suite's order (report.order; `order` from BASE's metadata)."""
    check_verdict_options("compare", metric, method, alpha, max_drop)
    base = _with_metric(base, metric, "BASE")
    new = _with_metric(new, metric, "NEW")
    limit = max_drop / 100 if metric in PERCENT_METRICS else max_drop
    sign = -1.0 if metric in HIGHER_IS_BETTER else 1.0  # worsening = sign * (NEW - BASE)

    differs = varying(pd.concat([base, new], ignore_index=True))  # named in each cell, so no two read alike
    base_ids, new_ids = set(base["cell_id"]), set(new["cell_id"])
    missing_in_new = [cell_label(row, differs) for _, row in base[~base["cell_id"].isin(new_ids)].iterrows()]
    missing_in_base = [cell_label(row, differs) for _, row in new[~new["cell_id"].isin(base_ids)].iterrows()]

    # BASE's configuration columns describe the pair (they equal NEW's: both are part of the cell_id).
    pairs = base.merge(new[["cell_id", "status", "_value"]], on="cell_id", suffixes=("_base", "_new"))
    # Accuracy metrics of a regression task are NaN in every ok cell: the metric does not apply, nothing to
    # compare. A task without a single ok cell tells nothing of the kind: it stays, to be seen as not comparable.
    unmeasured = _tasks_without_the_metric(pd.concat([base, new]))
    drafts = []
    for key, group in pairs.groupby(list(CONFIG_COLUMNS), sort=False, dropna=False):
        ok = group[(group["status_base"] == "ok") & (group["status_new"] == "ok")]
        finite = ok[ok["_value_base"].notna() & ok["_value_new"].notna()]
        config = dict(zip(CONFIG_COLUMNS, key))
        if config["task"] in unmeasured:
            continue
        for column in CONFIG_COLUMNS:
            if column.endswith("keep_rate"):
                config[column] = float(config[column])
            else:
                config[column] = int(config[column]) if column == "train_size" else str(config[column])
        test = paired_difference(
            finite["_value_base"].tolist(), finite["_value_new"].tolist(), method=method, confidence=1 - alpha
        )
        drafts.append(
            dict(
                config,
                n_pairs=test.n,
                base_mean=float(finite["_value_base"].mean()) if test.n else math.nan,
                new_mean=float(finite["_value_new"].mean()) if test.n else math.nan,
                delta=test.mean_diff,
                ci_low=test.ci_low,
                ci_high=test.ci_high,
                p_raw=test.p_value,
                base_not_ok=int((group["status_base"] != "ok").sum()),
                new_not_ok=int((group["status_new"] != "ok").sum()),
                n_matched=len(group),
            )
        )

    if drafts:  # listed in the suite's order (Holm's families are per task: the order changes no p)
        drafts = [drafts[i] for i in in_suite_order(pd.DataFrame.from_records(drafts), base, order).index]
    adjusted: dict[int, float] = {}
    tasks = [d["task"] for d in drafts]
    for task in dict.fromkeys(tasks):
        indices = [i for i, t in enumerate(tasks) if t == task]
        adjusted.update(zip(indices, holm([drafts[i]["p_raw"] for i in indices])))

    rows = []
    for i, draft in enumerate(drafts):
        p = adjusted[i]
        # The worsening interval is the delta interval mirrored for higher-is-better metrics.
        worse = sorted((sign * draft["ci_low"], sign * draft["ci_high"]))
        if draft["n_pairs"] == 0:
            # No pair is ok with a value on both sides: there is no difference to test, so no "no change"
            # either (its p is NaN, so Holm leaves it out of the task's family).
            verdict = "not comparable"
        else:
            verdict = _verdict(sign * draft["delta"], worse[0], worse[1], p, alpha, limit)
        rows.append(Comparison(**draft, p_value=p, verdict=verdict))
    comparable = any(row.verdict != "not comparable" for row in rows)
    reason = "" if comparable else "nothing to compare: " + _why_nothing_compares(base, new, pairs, metric, unmeasured)
    return CompareResult(rows, missing_in_new, missing_in_base, metric, max_drop, alpha, method, reason)
