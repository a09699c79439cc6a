"""Printing on the terminal: the consoles (wide off a terminal), an exporter's output, the dry-run plan."""

import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.table import Table

from ..errors import UserError
from ..files import prepare_output, replace_atomically

if TYPE_CHECKING:
    from ..runner import Plan

WIDE = 140  # off a terminal rich would assume 80 columns and wrap the tables


def stdout_console() -> Console:
    return Console(width=None if sys.stdout.isatty() else WIDE)


def stderr_console() -> Console:
    return Console(stderr=True, width=None if sys.stderr.isatty() else WIDE)


def write(output: str | bytes | RenderableType, out: Path | None = None) -> None:
    """An exporter's output on stdout, or in the file `out`: text as it is, a rich renderable through the console
    (as plain text in a file), bytes (a binary format) as they are, but never onto a terminal."""
    if out is not None:
        _write_file(output, out)
    elif isinstance(output, bytes):
        if sys.stdout.isatty():
            raise UserError("this format is a binary file: give --out FILE (or redirect stdout to one)")
        sys.stdout.buffer.write(output)
        sys.stdout.flush()
    elif isinstance(output, str):
        sys.stdout.write(output)
        sys.stdout.flush()
    else:
        stdout_console().print(output)


def _write_file(output: str | bytes | RenderableType, out: Path) -> None:
    """The output as one file, written whole and renamed into place (no half file on a failure)."""
    if isinstance(output, bytes):
        data = output
    elif isinstance(output, str):
        data = output.encode("utf-8")
    else:
        console = Console(file=io.StringIO(), width=WIDE, color_system=None)
        console.print(output)
        data = console.file.getvalue().encode("utf-8")  # type: ignore[attr-defined]  # the StringIO above
    prepare_output(out)
    replace_atomically(out, data)


def print_plan(plan: "Plan", executor: object) -> None:
    """--dry-run: per task, the cells of the grid (or shard), those done, those to run, a time estimate."""
    from ..planning import GPU_FLOPS_PER_SECOND, GPU_SECONDS_PER_STEP, one_device_estimates, plan_summary

    jobs = getattr(executor, "jobs", 1)
    lines, calibration = plan_summary(plan.cells, plan.todo, plan.written, jobs)
    phase = ": tuning phase" if plan.tuning_lines else ""
    table = Table(title=f"dry run -> {plan.csv_path}{phase}", title_justify="left")
    for column in ("task", "cells", "done", "to run", "estimated time"):
        table.add_column(column, justify="left" if column == "task" else "right")
    for line in lines:
        table.add_row(
            line.name,
            str(line.cells),
            str(line.done),
            str(line.todo),
            _duration(line.seconds),
            style="bold" if line.name == "all" else None,
        )
    stdout_console().print(table)
    basis = "measured on the cells already done" if calibration is not None else "this project's 2-core CPU rates"
    stdout_console().print(f"estimate from {basis}, over {jobs} worker process(es)", highlight=False)
    if plan.todo:
        core, gpu = one_device_estimates(plan.todo, 1.0 if calibration is None else calibration)
        stdout_console().print(
            f"on one CPU core: {_duration(core)}; on one GPU: {_duration(gpu)} (stacked as dropbench runs it, at "
            f"rates measured on an H200: {GPU_SECONDS_PER_STEP * 1e3:g} ms a step, "
            f"{GPU_FLOPS_PER_SECOND / 1e12:g} TFLOP/s)",
            highlight=False,
        )
    for text in _tuning_plan(plan, jobs):
        stdout_console().print(text, highlight=False, markup=False)


def _tuning_plan(plan: "Plan", jobs: int) -> list[str]:
    """A tuned suite's protocol and its evaluation phase, in lines below the tuning phase's table."""
    from ..planning import plan_summary

    if not plan.tuning_lines:
        return []
    lines = [f"tuning: {line}" for line in plan.tuning_lines] + _halving_plan(plan, jobs)
    evaluation = plan.evaluation
    if evaluation is None:
        return [*lines, "evaluation 'same': each chosen trial's tuning seeds are reported (no evaluation phase)"]
    if evaluation.deferred:
        return [*lines, evaluation.deferred]
    seconds = plan_summary(evaluation.cells, evaluation.todo, evaluation.written, jobs)[0][-1].seconds
    if evaluation.chosen is None:
        return [*lines, f"after tuning: {evaluation.count}, estimated {_duration(seconds)}"]
    done = len(evaluation.cells) - len(evaluation.todo)
    unchosen = f"; {len(evaluation.unchosen)} without an ok trial" if evaluation.unchosen else ""
    return [
        *lines,
        f"evaluation of the trials chosen on validation: {len(evaluation.cells)} cells{unchosen}, {done} done, "
        f"{len(evaluation.todo)} to run, estimated {_duration(seconds)}",
    ]


def _halving_plan(plan: "Plan", jobs: int) -> list[str]:
    """A halving suite's later rungs: the epochs they will train are known only as each rung is written, so a
    range (fewest: only the ⌈n/η⌉ ranked best go on at each rung; most: every trial goes on), with its time."""
    from ..planning import PER_CELL_OVERHEAD_S, epoch_seconds

    outlook = plan.halving
    if outlook is None:
        return []
    per_epoch = {cell.task.name: epoch_seconds(cell) for cell in plan.cells}  # a first-rung cell per task
    low, high = (
        sum(
            outlook.later[task][i] * per_epoch.get(task, 0.0) + outlook.later_cells[task][i] * PER_CELL_OVERHEAD_S
            for task in outlook.later
        )
        / jobs
        for i in (0, 1)
    )
    fewest, most = (sum(bounds[i] for bounds in outlook.later.values()) for i in (0, 1))
    return [
        f"halving: the later rungs train {_range(fewest, most)} epochs more (each trial continues from its checkpoint; "
        f"fewest if only the ⌈n/η⌉ ranked best go on at each rung, most if every trial does), estimated "
        f"{_range(_duration(low), _duration(high))}",
        f"halving: the whole tuning phase trains {_range(*outlook.total)} epochs, the full grid {outlook.grid:,} "
        "(upper bounds: early stopping and failed cells train fewer)",
    ]


def _range(low: object, high: object) -> str:
    """'120' where the bounds meet, else '120 to 340' (numbers with thousands separators)."""
    text = [f"{v:,}" if isinstance(v, int) else str(v) for v in (low, high)]
    return text[0] if text[0] == text[1] else f"{text[0]} to {text[1]}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
