"""The one result type every exporter of `dropbench report` reads: the summary over seeds, the tests against
the baseline and the grids, computed once; exporters only lay it out."""

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..catalogue import DEFAULT_METHOD, GAP
from .compare import CompareResult
from .grid import Grid, task_grids
from .history import History
from .order import SuiteOrder
from .summary import best_report, failed_cells, summarize, tests_for


@dataclass(frozen=True)
class ReferenceRows:
    """Published numbers (`name`, a packaged reference) beside the configurations of ours that match them."""

    name: str
    rows: pd.DataFrame  # reference.match_reference's rows, of the report's tasks only


@dataclass(frozen=True)
class Report:
    """What `dropbench report` shows. `summary` has one row per configuration and `tests` one per configuration
    tested against its baseline, both in the summary's order; `grids` lay the summary out per task. With `best`
    (report --best) that table is the whole report, and so is `tuned` (report --tuned: tuning.tuned_report).
    `failed` lists the cells not ok; `paired` asks for the paired differences behind the marks as well.
    `results` is the frame all of it was computed from and `sources` the files it was read from (a page shows
    their provenance and draws their figures); `comparison` and `history` are the verdicts of report --compare
    and --history, shown beside the tables; `order` the suite's order the rows follow (a page's figures too)."""

    summary: pd.DataFrame
    tests: pd.DataFrame
    grids: list[Grid]
    metric: str = GAP
    method: str = DEFAULT_METHOD
    alpha: float = 0.05
    paired: bool = False
    best: pd.DataFrame | None = None
    tuned: pd.DataFrame | None = None
    failed: pd.DataFrame = field(default_factory=pd.DataFrame)
    reference: ReferenceRows | None = None
    results: pd.DataFrame = field(default_factory=pd.DataFrame)
    sources: tuple[Path, ...] = ()
    comparison: CompareResult | None = None
    history: History | None = None
    order: SuiteOrder | None = None

    @property
    def verdicts_exit_code(self) -> int:
        """The exit code the verdicts give, as compare and history give theirs: 2 when one compared nothing, 1 on
        a regression, 0 otherwise (and without verdicts)."""
        codes = [v.exit_code for v in (self.comparison, self.history) if v is not None]
        return 2 if 2 in codes else max(codes, default=0)


def build_report(
    frame: pd.DataFrame,
    *,
    metric: str = GAP,
    method: str = DEFAULT_METHOD,
    alpha: float = 0.05,
    paired: bool = False,
    best: bool = False,
    tuned: bool = False,
    reference: str | None = None,
    failed: bool = True,
    order: SuiteOrder | None = None,
    sources: tuple[Path, ...] = (),
    comparison: CompareResult | None = None,
    history: History | None = None,
) -> Report:
    """Summarize a results frame and test it against the baseline (or, with `best`, choose each task's best
    configuration on validation; with `tuned`, each tuned method's trial, see report.tuning, `metric` then being
    the selection metric: val_acc, val_loss, or anything else for each task's own); with `reference`, match the
    summary against that packaged reference. Rows follow the suite's order: `order`, from the results'
    metadata (report.order.suite_order). `sources`, `comparison`, `history` and `order` are kept as given (see
    Report)."""
    summary = pd.DataFrame() if tuned else summarize(frame, order=order)
    shown_failed = failed_cells(frame) if failed else pd.DataFrame()
    options = {
        "metric": metric,
        "method": method,
        "alpha": alpha,
        "paired": paired,
        "failed": shown_failed,
        "results": frame,
        "sources": sources,
        "comparison": comparison,
        "history": history,
        "order": order,
    }
    if tuned:
        from .tuning import SELECTION_METRICS, tuned_report

        chosen_on = metric if metric in SELECTION_METRICS else "auto"
        rows = tuned_report(frame, test=method, alpha=alpha, metric=chosen_on, order=order)
        return Report(pd.DataFrame(), pd.DataFrame(), [], tuned=rows, **options)
    if best:
        chosen = best_report(frame, summary, method=method, alpha=alpha)
        return Report(summary, pd.DataFrame(), [], best=chosen, **options)
    tests = tests_for(frame, summary, metric, method=method, alpha=alpha)
    matched = None
    if reference:
        from .reference import load_reference, match_reference

        rows = match_reference(summary, load_reference(reference))
        matched = ReferenceRows(reference, rows[rows["task"].isin(summary["task"].unique())])
    grids = task_grids(summary, metric, tests, alpha)
    return Report(summary, tests, grids, reference=matched, **options)
