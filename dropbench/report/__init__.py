"""Everything dropbench says about results: statistics (stats), the summary over seeds and the tests against
the baseline (summary), the suite's row order (order), the one vocabulary for naming configurations (labels),
grids per task (grid), compare, history (runs lined up by configuration; runs: their provenance), reference,
plots, and the outputs: one exporter per format in exporters/ (table, markdown, csv, json, html) fed by the
result types data.Report, compare.CompareResult and history.History. docs/architecture.md tells where each output
lives and how to add a format (one file in exporters/).

Names are imported on first use, so that the CLI can list what is here without importing pandas.
"""

from importlib import import_module

_EXPORTS = {
    "summarize": "summary",
    "baseline_tests": "summary",
    "best_report": "summary",
    "choose_on_validation": "tuning",
    "tuned_report": "tuning",
    "tests_for": "summary",
    "failed_cells": "summary",
    "CONFIG_COLUMNS": "summary",
    "SETUP_COLUMNS": "labels",
    "config_label": "labels",
    "gap_tables": "exporters.table",
    "build_report": "data",
    "Report": "data",
    "task_grids": "grid",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'dropbench.report' has no attribute {name!r}")
