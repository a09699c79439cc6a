"""`--format json`: one JSON document, NaN written as null: every configuration with its statistics and its
test against the baseline; with --best, the best configurations; with --tuned, the tuned methods and a
legend per task; with --reference, also the published rows; with --compare and --history, their documents
under `comparison` and `history`, as compare and history write them."""

import json
from dataclasses import asdict

import pandas as pd

from ..compare import CompareResult
from ..data import Report
from ..history import History
from ..summary import CONFIG_COLUMNS
from ..text import history_summary, tuned_legend, tuned_tasks, verdict_summary
from . import Exporter, register

SCHEMA = 1


def _clean(value: object) -> object:
    """A value as JSON has it: NaN as null, numpy scalars as Python numbers."""
    if isinstance(value, float) and value != value:
        return None
    return value.item() if hasattr(value, "item") else value


def frame_records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


@register
class JsonExporter(Exporter):
    name = "json"
    suffix = ".json"

    def export(self, report: Report) -> str:
        document: dict[str, object]
        if report.best is not None:
            document = {"kind": "best", "schema": SCHEMA, "rows": frame_records(report.best)}
        elif report.tuned is not None:
            legends = {task: tuned_legend(rows) for task, rows in tuned_tasks(report.tuned)}
            document = {"kind": "tuned", "schema": SCHEMA, "rows": frame_records(report.tuned), "legends": legends}
        else:
            merged = report.summary
            if not report.tests.empty:
                merged = merged.merge(report.tests, on=list(CONFIG_COLUMNS), how="left")
            document = {
                "metric": report.metric,
                "schema": SCHEMA,
                "configurations": [{k: _clean(v) for k, v in row.items()} for _, row in merged.iterrows()],
            }
            if report.reference is not None:
                document["reference"] = {"name": report.reference.name, "rows": frame_records(report.reference.rows)}
        if report.comparison is not None:
            document["comparison"] = comparison_document(report.comparison)
        if report.history is not None:
            document["history"] = history_document(report.history)
        return json.dumps(document, indent=2, default=str) + "\n"

    def export_comparison(self, result: CompareResult) -> str:
        return json.dumps(comparison_document(result), indent=2, default=str) + "\n"

    def export_history(self, history: History) -> str:
        return json.dumps(history_document(history), indent=2, default=str) + "\n"


def comparison_document(result: CompareResult) -> dict[str, object]:
    """compare's verdict, exit code and every configuration's comparison."""
    return {
        "metric": result.metric,
        "max_drop": result.max_drop,
        "alpha": result.alpha,
        "method": result.method,
        "verdict": result.verdict,
        "exit_code": result.exit_code,
        "summary": verdict_summary(result),
        "reason": result.reason or None,
        "rows": [{k: _clean(v) for k, v in asdict(r).items()} for r in result.rows],
        "missing_in_new": result.missing_in_new,
        "missing_in_base": result.missing_in_base,
    }


def history_document(history: History) -> dict[str, object]:
    """history's verdict (the newest step's), its runs with their provenance, and per configuration its point in
    each run (null where the run lacks it) and its step from the run before with the flag (`change`)."""
    configurations = []
    for trend in history.trends:
        steps = [
            None
            if step is None
            else {
                **{k: _clean(getattr(step, k)) for k in STEP_FIELDS},
                "change": change,
            }
            for step, change in zip(trend.steps, trend.changes)
        ]
        points = [None if p is None else {k: _clean(v) for k, v in asdict(p).items()} for p in trend.points]
        configurations.append(
            {**{k: _clean(v) for k, v in trend.config.items()}, "label": trend.label, "points": points, "steps": steps}
        )
    return {
        "kind": "history",
        "schema": SCHEMA,
        "metric": history.metric,
        "max_drop": history.max_drop,
        "alpha": history.alpha,
        "method": history.method,
        "verdict": history.verdict,
        "exit_code": history.exit_code,
        "summary": history_summary(history),
        "reason": history.reason or None,
        "runs": [{**asdict(run), "paths": [str(p) for p in run.paths], "label": run.label} for run in history.runs],
        "configurations": configurations,
    }


STEP_FIELDS = ("n_pairs", "base_mean", "new_mean", "delta", "ci_low", "ci_high", "p_raw", "p_value", "verdict")
