"""The order reports list tasks and configurations in: the suite's, never the order cells happened to finish.

A process pool, a stack of cells or a resume writes rows in the order they end, so the first appearance of a
configuration in a results file says little. Every table, export and comparison lists:

- tasks as the suite listed them;
- within a task, the baseline's regularizer (none) first: every mark is relative to it; then the other
  regularizers (with their strengths) as the suite listed them; then input keep rate, dropout kind and model
  ascending, with the keep rates as columns (or rows) ascending.

The suite's lists come from the run metadata beside each results file (NAME.json), file by file in the order
the files were given. Whatever no metadata lists (a merged file, whose metadata names its shards but no suite;
a CSV without its sidecar; a frame built in Python; cells a resume with other flags added) follows in the order
it first appears in the results.
"""

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..results import sidecar_paths

BASELINE_REGULARIZER = "none"
SORT_COLUMNS = ("input_keep_rate", "dropout", "model", "keep_rate")


def regularizer_key(name: str, strength: str) -> str:
    """A regularizer with its strength, as suites list them and the results hold them: 'l2 0.01', 'none '."""
    return f"{name} {strength}"


@dataclass(frozen=True)
class SuiteOrder:
    """Tasks and regularizer keys (see regularizer_key) as the suites behind some results listed them."""

    tasks: tuple[str, ...] = ()
    regularizers: tuple[str, ...] = ()
    methods: tuple[str, ...] = ()  # a tuned suite's methods ([tuning] methods), for report --tuned


def suite_order(paths: Iterable[str | Path]) -> SuiteOrder:
    """The suites' lists from the metadata beside each results file; a file without readable metadata adds none."""
    tasks: dict[str, None] = {}
    regularizers: dict[str, None] = {}
    methods: dict[str, None] = {}
    for path in paths:
        try:
            suite = json.loads(sidecar_paths(Path(path))[1].read_text(encoding="utf-8"))["suite"]
            tasks.update(dict.fromkeys(str(task["name"]) for task in suite["tasks"]))
            regularizers.update(
                dict.fromkeys(regularizer_key(str(r["name"]), str(r["strength"])) for r in suite["regularizers"])
            )
            methods.update(dict.fromkeys(str(m) for m in (suite.get("tuning") or {}).get("methods", ())))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            continue  # no sidecar, not JSON, or not a run's: order by appearance
    return SuiteOrder(tuple(tasks), tuple(regularizers), tuple(methods))


def in_suite_order(rows: pd.DataFrame, seen: pd.DataFrame, order: SuiteOrder | None = None) -> pd.DataFrame:
    """`rows` (configurations: task, regularizer, strength and the SORT_COLUMNS) sorted as the module says, with
    `seen` (the results they come from, in file order) deciding among what `order` does not list."""
    order = order or SuiteOrder()
    strengths = seen["strength"].fillna("").astype(str)
    tasks = dict.fromkeys([*order.tasks, *seen["task"]])
    keys = dict.fromkeys(
        [regularizer_key(BASELINE_REGULARIZER, ""), *order.regularizers, *(seen["regularizer"] + " " + strengths)]
    )
    task_rank = {task: i for i, task in enumerate(tasks)}
    key_rank = {key: i for i, key in enumerate(keys)}
    ranked = rows.assign(
        _task=rows["task"].map(task_rank),
        _reg=(rows["regularizer"] + " " + rows["strength"].fillna("").astype(str)).map(key_rank),
    )
    ordered = ranked.sort_values(["_task", "_reg", *SORT_COLUMNS], kind="stable")
    return ordered.drop(columns=["_task", "_reg"])
