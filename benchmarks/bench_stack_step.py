"""A small net's training step, as `dropbench run` trains it: the stacked trainer, alone (K = 1) and K = 16 at once.

    python benchmarks/bench_stack_step.py              # ~1 minute on 2 CPU cores
    python benchmarks/bench_stack_step.py --blocks 3   # quicker, noisier

The default suite's cells (tasks/quick.toml: breast cancer, 30-128-128-2, batch 64, hidden keep 0.5, SGD momentum
0.9, one torch thread as in a pool worker) train in the stacked trainer whether alone or beside others. In one
process, in turn, in blocks of whole epochs on the real training split:
  - dropbench's step (`stacked._train_one_epoch`: the stack's own backward pass, SGD without the Optimizer wrapper)
  - the same step through autograd and torch.optim.SGD.step (the trainer's step before it did its own backward)
  - the step's matrix products alone (baddbmm forward, bmm backward, at the step's shapes)
each at K = 1 and K = 16 members, with dropout and without. "Overhead" is a step less its products. Medians of
the blocks. Both steps give the same bits (tests/test_stacked.py); only their cost differs.
"""

import argparse
import math
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from dropbench import stacked
from dropbench.data import load_task_data
from dropbench.devices import configure
from dropbench.models import build_model, init_parameters_
from dropbench.seeding import make_generator
from dropbench.suite import load_suite
from dropbench.train import make_optimizer

SUITE = Path(__file__).resolve().parent.parent / "tasks" / "quick.toml"


def quick_cells(keep: float, count: int) -> list:
    """`count` of the quick suite's breast-cancer cells without a regularizer, at hidden keep rate `keep` (seeds
    beyond the suite's 9 are the same cells with further seeds)."""
    [cell] = [
        c
        for c in load_suite(str(SUITE)).cells()
        if c.task.name == "breast-cancer"
        and c.seed == 0
        and c.keep_rate == 0.5
        and c.regularizer.parts == (("none", None),)
    ]
    return [replace(cell, seed=seed, keep_rate=keep) for seed in range(count)]


class Stack:
    """A stack of cells as the stacked trainer builds it, with its optimizer and batch-order generators."""

    def __init__(self, cells: list, data) -> None:
        self.cells, self.data = cells, data
        models, keeps, masks = [], [], []
        for cell in cells:
            model = build_model(
                cell.task.model,
                data.input_shape,
                data.n_outputs,
                cell.layer_keep_rates,
                cell.input_keep_rate,
                cell.dropout,
            )
            init_parameters_(model, make_generator(cell.task.name, cell.seed, "init"))
            models.append(model)
            keeps.append((cell.input_keep_rate, *cell.layer_keep_rates))
            masks.append(make_generator(cell.seed_key, "masks"))
        self.stack = stacked.StackedMLP.from_members(models, keeps, masks)
        self.optimizer = make_optimizer(cells[0].task.optimizer, self.stack.params, fused=False)
        self.orders = [make_generator(cell.task.name, cell.seed, "order") for cell in cells]
        self.members = stacked._Members.of(cells, torch.device("cpu"))

    def dropbench_epoch(self) -> None:
        stacked._train_one_epoch(self.stack, self.optimizer, self.members, self.cells, self.data, self.orders)

    def autograd_epoch(self) -> None:
        """The same epoch through autograd and torch.optim's step()."""
        data, stack = self.data, self.stack
        n, batch = len(data.y_train), self.cells[0].task.batch_size
        perms = torch.stack([torch.randperm(n, generator=order) for order in self.orders])
        loss_sum = torch.zeros(stack.size, dtype=torch.float64)
        for idx in perms.split(batch, dim=1):
            out = stack.forward(data.inputs(data.x_train[idx]), train=True)
            losses = stacked.member_losses(out, data.y_train[idx], data.classification)
            self.optimizer.zero_grad(set_to_none=True)
            losses.sum().backward()
            self.optimizer.step()
            loss_sum += losses.detach().double() * idx.shape[1]

    def products_epoch(self) -> None:
        """The epoch's matrix products alone, at its shapes, on the stack's own weights."""
        stack, batch = self.stack, self.cells[0].task.batch_size
        steps = math.ceil(len(self.data.y_train) / batch)
        with torch.no_grad():
            for _ in range(steps):
                h = torch.zeros(stack.size, batch, stack.weights[0].shape[1])
                inputs = []
                for w, b in zip(stack.weights, stack.biases):
                    inputs.append(h)
                    h = torch.baddbmm(b.unsqueeze(1), h, w)
                grad = h
                for layer in range(len(inputs) - 1, -1, -1):
                    inputs[layer].transpose(1, 2).bmm(grad)
                    if layer:
                        grad = grad.bmm(stack.weights[layer].transpose(1, 2))

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.data.y_train) / self.cells[0].task.batch_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=15, help="timed blocks of each variant, in turn [15]")
    parser.add_argument("--epochs", type=int, default=3, help="epochs a block at K = 1 (K = 16: a third) [3]")
    args = parser.parse_args()
    torch.set_num_threads(1)
    configure("cpu")  # as a training process is set up (its malloc thresholds)
    data = load_task_data("breast-cancer")
    variants = {}  # compared pairs side by side: a slow spell of the host hits both
    for k in (1, 16):
        epochs = args.epochs if k == 1 else max(1, args.epochs // 3)
        for keep in (0.5, 1.0):
            stack = Stack(quick_cells(keep, k), data)
            label = f"K={k:<2} keep {keep}"
            variants[f"dropbench  {label}"] = (stack.dropbench_epoch, epochs, stack)
            variants[f"autograd   {label}"] = (stack.autograd_epoch, epochs, stack)
        variants[f"products   K={k:<2}"] = (stack.products_epoch, epochs, stack)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for run, _epochs, _ in variants.values():  # warm-up
        run()
    for _ in range(args.blocks):
        for name, (run, epochs, stack) in variants.items():
            started = time.perf_counter()
            for _ in range(epochs):
                run()
            times[name].append((time.perf_counter() - started) / epochs / stack.steps_per_epoch())
    ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
    print(
        f"torch {torch.__version__}, 1 thread; breast cancer 30-128-128-2, batch 64, {args.blocks} blocks in turn; "
        "medians, ms a step (of the whole stack)\n"
    )
    print("| step | K | keep | ms a step | ms a member-step | overhead (step - products), ms |")
    print("|---|---|---|---|---|---|")
    for name, value in ms.items():
        kind, rest = name.split(maxsplit=1)
        k = int(rest.split()[0].removeprefix("K="))
        keep = rest.split()[-1] if "keep" in rest else ""
        overhead = value - ms[f"products   K={k:<2}"] if kind != "products" else math.nan
        print(f"| {kind} | {k} | {keep} | {value:.3f} | {value / k:.3f} | {overhead:.3f} |")

    def ratio(a: str, b: str) -> float:
        return ms[a] / ms[b]

    def overhead(name: str, k: int) -> float:
        return ms[name] - ms[f"products   K={k:<2}"]

    print()
    print(
        f"K = 1, keep 0.5: autograd step / dropbench step: "
        f"{ratio('autograd   K=1  keep 0.5', 'dropbench  K=1  keep 0.5'):.2f}x; overhead "
        f"{overhead('autograd   K=1  keep 0.5', 1):.3f} -> {overhead('dropbench  K=1  keep 0.5', 1):.3f} ms "
        f"({overhead('dropbench  K=1  keep 0.5', 1) / overhead('autograd   K=1  keep 0.5', 1):.2f}x)"
    )
    print(
        f"dropout step / plain step, K = 1: dropbench "
        f"{ratio('dropbench  K=1  keep 0.5', 'dropbench  K=1  keep 1.0'):.2f}x, autograd "
        f"{ratio('autograd   K=1  keep 0.5', 'autograd   K=1  keep 1.0'):.2f}x"
    )
    for kind in ("dropbench", "autograd"):
        name = f"{kind:<10} K=16 keep 0.5"
        print(f"K = 16 vs 16 one at a time ({kind} step): {16 * ms[f'{kind:<10} K=1  keep 0.5'] / ms[name]:.2f}x")
    print(
        f"K = 16 (dropbench step) vs 16 one at a time by the autograd step: "
        f"{16 * ms['autograd   K=1  keep 0.5'] / ms['dropbench  K=16 keep 0.5']:.2f}x"
    )


if __name__ == "__main__":
    main()
