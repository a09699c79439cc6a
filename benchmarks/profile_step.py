"""Where a training step goes: dropbench's step on the real Fashion-MNIST, op by op, against its matmul limit.

    python benchmarks/profile_step.py                # ~1 minute; at torch's default threads
    python benchmarks/profile_step.py --threads 1

The cell of benchmarks/fashion-one-cell.toml (784-1024-1024-10, batch 128, inputs keep 0.8, hidden 0.5, SGD lr 0.05
momentum 0.9) trained by dropbench's single-cell step (`train.Training.step`), and the same cell without dropout.
In turn, in blocks: a dropout step, a plain step, and the step's matrix products alone (each layer's forward
product and its two backward ones, at the step's shapes, on random values: the matmul limit of this step). Then
torch's profiler over steps of each: the operations by their own CPU time. Medians of the blocks; the profile's
shares are of the profiled time (the profiler adds its own cost to every operation).
"""

import argparse
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from dropbench.data import load_task_data
from dropbench.devices import configure
from dropbench.suite import load_suite
from dropbench.train import Training

SUITE = Path(__file__).resolve().parent / "fashion-one-cell.toml"


def steps_of(training: Training, batch: int, count: int, start: int) -> float:
    """Seconds for `count` steps over consecutive batches of the training split, from its start again at its end
    (no sync needed on the CPU)."""
    rows = len(training.data.y_train)
    started = time.perf_counter()
    for i in range(count):
        training.step(torch.arange((start + i) * batch, (start + i + 1) * batch) % rows)
    return time.perf_counter() - started


def products_of(widths: list[int], batch: int, count: int) -> float:
    """Seconds for `count` steps' matrix products alone: per layer, x·Wᵀ + b, then dL/dx = g·W and dL/dW = gᵀ·x."""
    g = torch.Generator().manual_seed(0)
    layers = [
        (
            torch.randn(batch, a, generator=g),
            torch.randn(b, a, generator=g),
            torch.randn(b, generator=g),
            torch.randn(batch, b, generator=g),
        )
        for a, b in zip(widths[:-1], widths[1:])
    ]
    started = time.perf_counter()
    for _ in range(count):
        for i, (x, w, bias, grad) in enumerate(layers):
            F.linear(x, w, bias)
            if i:  # the first layer's input needs no gradient
                grad.mm(w)
            grad.t().mm(x)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads [torch's default]")
    parser.add_argument("--blocks", type=int, default=8, help="timed blocks of each, in turn [8]")
    parser.add_argument("--steps", type=int, default=25, help="steps a block [25]")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    configure("cpu")  # as a training process is set up (its malloc thresholds)
    [cell] = load_suite(str(SUITE)).cells()
    data = load_task_data(cell.task.key)
    batch = cell.task.batch_size
    variants = {
        "dropout step": Training(cell, data),
        "plain step": Training(replace(cell, keep_rate=1.0, input_keep_rate=1.0), data),
    }
    widths = [784, *cell.task.model.hidden, 10]
    for training in variants.values():
        training.model.train()
        steps_of(training, batch, 10, 0)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in [*variants, "matrix products"]}
    start = 10
    for _ in range(args.blocks):
        for name, training in variants.items():
            times[name].append(steps_of(training, batch, args.steps, start) / args.steps)
        times["matrix products"].append(products_of(widths, batch, args.steps) / args.steps)
        start += args.steps
    medians = {name: statistics.median(values) for name, values in times.items()}
    flops = 6 * sum(a * b for a, b in zip(widths[:-1], widths[1:])) * batch
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {batch}, widths {widths}")
    print(f"{args.blocks} blocks of {args.steps} steps each, in turn; medians of the blocks:\n")
    print("| | ms a step | GFLOP/s of the step's products | vs the matrix products alone |")
    print("|---|---|---|---|")
    for name, seconds in medians.items():
        ratio = seconds / medians["matrix products"]
        print(f"| {name} | {1e3 * seconds:.2f} | {flops / seconds / 1e9:.1f} | {ratio:.2f}× |")
    print(f"\na dropout step over a plain one: {medians['dropout step'] / medians['plain step']:.2f}×\n")
    for name, training in variants.items():
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            steps_of(training, batch, args.steps, start)
        events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
        total = sum(e.self_cpu_time_total for e in events)
        print(f"{name}: operations by their own CPU time, {args.steps} steps profiled")
        print("| operation | calls a step | ms a step | share |")
        print("|---|---|---|---|")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:12]:
            share = e.self_cpu_time_total / total
            per_step = e.self_cpu_time_total / 1e3 / args.steps
            print(f"| {e.key} | {e.count / args.steps:g} | {per_step:.3f} | {100 * share:.0f}% |")
        print()


if __name__ == "__main__":
    main()
