"""dropbench: how much does dropout, alone or beside L1, L2, max-norm and early stopping, shrink the
generalization gap, and what does it cost?

A library first: load a suite, run it, read the results as a DataFrame, aggregate them.

    >>> import dropbench
    >>> suite = dropbench.load_suite("quick")
    >>> summary = dropbench.run_suite(suite, "results/quick.csv")
    >>> table = dropbench.summarize(dropbench.read_results("results/quick.csv"))

Names are imported on first use so that `import dropbench` (and `dropbench --help`) stays fast.
"""

from importlib import import_module, metadata

try:
    __version__ = metadata.version("dropbench")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "load_suite": "suite",
    "apply_overrides": "suite",
    "Overrides": "suite",
    "Suite": "suite",
    "run_suite": "runner",
    "RunSummary": "runner",
    "read_results": "results",
    "summarize": "report",
    "choose_on_validation": "report.tuning",
    "tuned_report": "report.tuning",
    "gap_tables": "report.exporters.table",
    "fit_cell": "train",
    "load_task_data": "data",
    "TASKS": "data",
    "REGULARIZERS": "regularizers",
    "UserError": "errors",
}
__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'dropbench' has no attribute {name!r}")
