"""Which cells a run does: what is already written, which shard is ours, what it should cost."""

import heapq
import math
import re
from dataclasses import dataclass

from .config import Cell
from .data import get_task
from .errors import UserError

# A cell's time on one CPU core is modelled as arithmetic plus per-step overhead (which dominates small
# tabular nets), both rates measured on this project's machine (docs/performance.md). Only used to balance
# shards and to print an estimate; a file with finished cells calibrates it.
FLOPS_PER_SECOND = 40e9
SECONDS_PER_STEP = 6e-4
PER_CELL_OVERHEAD_S = 0.05  # building the model, evaluating the three splits
# One GPU, for the dry run's second figure (what the `-full` suites would take on one), from one H200
# (benchmarks/results/gpu-h200-2026-11-30b.md): a unit of work's step costs a fixed time, bound by kernel
# launches and Python, plus each member's arithmetic at an effective fp32/TF32 rate on these shapes. The Table 9
# net at batch 100, an epoch of 550 steps with its validation pass: a stack of one 0.98 s, a stack of 23 2.13 s
# (0.095 ms a step for each member past the first), the single-cell trainer (cells that do not stack) 1.43 s.
GPU_FLOPS_PER_SECOND = 25e12
GPU_SECONDS_PER_STEP = 1.7e-3  # a stacked unit's step
GPU_SECONDS_PER_SINGLE_STEP = 2.5e-3  # a step of the single-cell trainer
# The most shards a grid may be split into: a CI matrix has tens of jobs (GitHub Actions caps one at
# 256), and a bound keeps `--shard 1/100000000000` from allocating a load per shard.
MAX_SHARDS = 10_000
SHARD_FORM = re.compile(r"([0-9]+)/([0-9]+)")


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as written on the command line
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """'2/3' -> Shard(2, 3); anything else is a UserError naming the allowed form."""
        match = SHARD_FORM.fullmatch(text.strip())
        if not match:
            raise UserError(f"--shard {text!r}: expected I/N with whole numbers, e.g. 1/3")
        index, count = int(match[1]), int(match[2])
        if not 1 <= count <= MAX_SHARDS:
            raise UserError(f"--shard {text!r}: N must be between 1 and {MAX_SHARDS:,}")
        if not 1 <= index <= count:
            raise UserError(f"--shard {text!r}: I must be between 1 and N")
        return cls(index, count)


def estimated_cost(cell: Cell, *, gpu: bool = False) -> float:
    """Estimated seconds for a cell on one core (or on one GPU, at the assumed GPU rates): 6 FLOPs per weight
    per training example (forward and backward) plus a fixed overhead per step, times the epochs. Conv nets
    count their 3x3 filters over each block's resolution. From registry size hints, before any data is loaded."""
    info = get_task(cell.task.key)
    model = cell.task.model
    widths = [info.n_inputs, *model.widths(cell.layer_keep_rates), 10]  # fixed p·n: as widened
    weights: float = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    if model.kind == "cnn":
        pixels, previous = info.n_inputs / 3, 3
        for channels in model.channels:
            weights += 9 * previous * channels * pixels
            pixels, previous = pixels / 4, channels
    rows = cell.train_size or info.train_rows
    steps = math.ceil(rows / cell.task.batch_size)
    flops, per_step = (GPU_FLOPS_PER_SECOND, GPU_SECONDS_PER_STEP) if gpu else (FLOPS_PER_SECOND, SECONDS_PER_STEP)
    per_epoch = 6 * weights * rows / flops + steps * per_step
    return cell.epochs * per_epoch  # a halving rung's cell: its rung's epochs


def epoch_seconds(cell: Cell) -> float:
    """Estimated seconds for one epoch of `cell` on one core (estimated_cost per epoch)."""
    return estimated_cost(cell) / cell.epochs


def shard_cells(cells: list[Cell], shard: Shard | None) -> list[Cell]:
    """This shard's cells: the grid split by longest-processing-time-first, deterministic.

    Cells are sorted by estimated cost (ties by cell_id), each given to the shard with the least work so
    far: every runner computes the same split from the same grid, and the shards end close in time.
    """
    if shard is None or shard.count == 1:
        return cells
    # (load, shard) pairs: the heap's smallest is the least-loaded shard, ties to the lowest index.
    loads = [(0.0, i) for i in range(shard.count)]
    mine: set[str] = set()
    for cost, cell_id in sorted((-estimated_cost(c), c.cell_id) for c in cells):
        load, target = heapq.heappop(loads)
        heapq.heappush(loads, (load - cost, target))
        if target == shard.index - 1:
            mine.add(cell_id)
    return [cell for cell in cells if cell.cell_id in mine]


def estimate_seconds(cells: list[Cell], jobs: int, scale: float = 1.0, *, gpu: bool = False) -> float:
    """Wall time for `cells` spread over `jobs` worker processes (on as many GPUs with `gpu`)."""
    total = sum(estimated_cost(c, gpu=gpu) * scale + PER_CELL_OVERHEAD_S for c in cells)
    return total / max(1, min(jobs, len(cells) or 1))


def one_gpu_seconds(cells: list[Cell]) -> float:
    """Seconds for the cells on one GPU, trained as dropbench trains them there: stackable cells in stacks, a
    stack's step costing one fixed GPU_SECONDS_PER_STEP and every member's arithmetic; a cell that does not
    stack, the single-cell trainer's GPU_SECONDS_PER_SINGLE_STEP and its arithmetic."""
    from .stacked import work_units  # loads torch: only the dry run asks for this figure

    total = 0.0
    for unit in work_units(cells, jobs=1, stack=True, device="cuda"):
        first = unit.cells[0]
        rows = first.train_size or get_task(first.task.key).train_rows
        steps = first.epochs * math.ceil(rows / first.task.batch_size)
        arithmetic = sum(estimated_cost(cell, gpu=True) - steps * GPU_SECONDS_PER_STEP for cell in unit.cells)
        per_step = GPU_SECONDS_PER_STEP if unit.stacked else GPU_SECONDS_PER_SINGLE_STEP
        total += steps * per_step + arithmetic + PER_CELL_OVERHEAD_S * len(unit.cells)
    return total


def one_device_estimates(todo: list[Cell], scale: float = 1.0) -> tuple[float, float]:
    """Seconds for the cells to run on one CPU core (`scale`: the calibration on cells already done) and on
    one GPU at the rates measured on an H200 (GPU_FLOPS_PER_SECOND, GPU_SECONDS_PER_STEP): the dry run's last
    line, so that a grid too long for this machine is sized for the hardware it needs."""
    return estimate_seconds(todo, 1, scale), one_gpu_seconds(todo)


def calibration(done_cells: list[Cell], fit_seconds: list[float]) -> float:
    """Measured over estimated time of the cells a file already holds (1.0 without any)."""
    pairs = [(estimated_cost(c), s) for c, s in zip(done_cells, fit_seconds) if s == s and s > 0]
    if not pairs:
        return 1.0
    return math.fsum(s for _, s in pairs) / math.fsum(c for c, _ in pairs)


@dataclass(frozen=True)
class PlanLine:
    """One line of a dry run: a task (or 'all'), its cells, those done, those to run, the estimated time."""

    name: str
    cells: int
    done: int
    todo: int
    seconds: float


def plan_summary(
    cells: list[Cell], todo: list[Cell], written: dict[str, dict[str, str]], jobs: int
) -> tuple[list[PlanLine], float | None]:
    """Per task and in all, what a run would do and how long it should take; and the calibration applied:
    measured over estimated time of the cells the file already holds (their fit_seconds), None where it holds
    none and the default rates stand."""
    pending = {c.cell_id for c in todo}
    done_cells = [c for c in cells if c.cell_id in written and c.cell_id not in pending]
    scale = calibration(done_cells, [float(written[c.cell_id]["fit_seconds"] or "nan") for c in done_cells])
    lines = []
    for task in dict.fromkeys(c.task.name for c in cells):
        mine = [c for c in cells if c.task.name == task]
        left = [c for c in todo if c.task.name == task]
        lines.append(PlanLine(task, len(mine), len(mine) - len(left), len(left), estimate_seconds(left, jobs, scale)))
    lines.append(PlanLine("all", len(cells), len(cells) - len(todo), len(todo), estimate_seconds(todo, jobs, scale)))
    return lines, scale if done_cells else None
