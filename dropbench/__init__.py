"""dropbench: how much does dropout, alone or beside L1, L2, max-norm and early stopping, shrink the
generalization gap, and what does it cost?

A library first: run a suite, get its results as a DataFrame, aggregate them.

    >>> import dropbench
    >>> results = dropbench.run("quick", tasks=["synthetic"], epochs=10, set={"optimizer.lr": 0.05})
    >>> table = dropbench.report_table(results)  # `dropbench report`'s table, as a DataFrame
    >>> summary = dropbench.summarize(results)  # mean, sd, CI per configuration

Names are imported on first use so that `import dropbench` (and `dropbench --help`) stays fast.
"""

from importlib import import_module, metadata

from .threads import request_strict_blas

# First, before any of dropbench loads torch: MKL_CBWR=AUTO,STRICT (unless set already), so that MKL's products give
# the same bits at every thread count here and in every worker process (dropbench.threads; README, "Threads").
request_strict_blas()

try:
    __version__ = metadata.version("dropbench")
except metadata.PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

_EXPORTS = {
    "load_suite": "suite",
    "apply_overrides": "suite",
    "Overrides": "suite",
    "Suite": "suite",
    "run": "api",
    "report_table": "api",
    "RunFailed": "api",
    "CellsFailedWarning": "api",
    "run_suite": "runner",
    "RunSummary": "runner",
    "read_results": "results",
    "read_epochs": "results",
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
