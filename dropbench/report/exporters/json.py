"""`--format json`: one JSON document, NaN written as null: every configuration with its statistics and its
test against the baseline; with --best, the best configurations; with --tuned, the tuned methods and a
legend per task; with --reference, also the published rows."""

import json
from dataclasses import asdict

import pandas as pd

from ..compare import CompareResult
from ..data import Report
from ..summary import CONFIG_COLUMNS
from ..text import tuned_legend, tuned_tasks, verdict_summary
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
        if report.best is not None:
            return json.dumps({"kind": "best", "schema": SCHEMA, "rows": frame_records(report.best)}, indent=2) + "\n"
        if report.tuned is not None:
            legends = {task: tuned_legend(rows) for task, rows in tuned_tasks(report.tuned)}
            document = {"kind": "tuned", "schema": SCHEMA, "rows": frame_records(report.tuned), "legends": legends}
            return json.dumps(document, indent=2) + "\n"
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
        return json.dumps(document, indent=2) + "\n"

    def export_comparison(self, result: CompareResult) -> str:
        document = {
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
        return json.dumps(document, indent=2, default=str) + "\n"
