"""Training speed of dropbench against the obvious alternatives, measured in one run on this machine.

    python benchmarks/bench_training.py            # ~6 minutes on 2 CPU cores
    python benchmarks/bench_training.py --quick    # fewer samples and one repeat, ~2 minutes

Two problems: an MNIST-sized MLP (784-1024-1024-10, batch 128, input keep 0.8, hidden 0.5; one epoch of
12,800 rows) and a tabular-sized one (30-128-128-2, batch 32; 20 epochs of the breast-cancer training
split's 341 rows). Every variant times its training loop with a validation pass per epoch, after a warm-up
training in the same process. Variants:
  (a) tutorial: DataLoader(shuffle) + nn.Sequential with nn.Dropout + torch.optim.SGD
  (b) dropbench's single-cell loop (train.train_model), with dropout and without
  (c) dropbench's stacked trainer at K = 1, 4, 16, 64 models at once (samples/s counts all K models; a stack
      of K trains on 4/K of the rows per model, at least 8 batches, so large stacks do not dominate the run)
  (d) scikit-learn's MLPClassifier (SGD, momentum 0.9; it has no dropout)
Each variant runs in a fresh process (spawned), so its peak memory is its own; repeats go round-robin over
the variants and the figures are their medians. The matmul limit is the fp32 throughput of the model's own
forward matmul shapes, measured in each variant's process before it is timed (the table uses the median);
"% of limit" = 6 × weights × samples/s ÷ that throughput.

Shared hosts have slow spells (2-5x, for seconds to minutes, were seen here) that move samples/s between
processes. The ratios that matter are therefore also measured in one process, step by step and taken in
turn: the tutorial's step (its DataLoader fetch included), dropbench's step (`train.Training.step`) with
dropout and without, and the forward matmuls; medians of 300 each. A slow spell hits all four alike.
Inputs are random tensors of the real shapes: speed does not depend on pixel values.
"""

import argparse
import multiprocessing
import resource
import statistics
import sys
import time
from dataclasses import dataclass

PROBLEMS = {
    "mnist-mlp": {
        "n_in": 784,
        "hidden": (1024, 1024),
        "n_out": 10,
        "batch": 128,
        "samples": 12800,
        "epochs": 1,
        "input_keep": 0.8,
        "keep": 0.5,
    },
    "tabular-mlp": {
        "n_in": 30,
        "hidden": (128, 128),
        "n_out": 2,
        "batch": 32,
        "samples": 341,
        "epochs": 20,
        "input_keep": 0.8,
        "keep": 0.5,
    },
}
STACK_SIZES = (1, 4, 16, 64)
STACK_SAMPLE_FACTOR = 4  # a stack of K trains on at most 4/K of the rows per model (a rate does not need more)
STEP_PAIRS = 300  # interleaved dropout / no-dropout steps for the step-cost ratio


def _weights(p: dict) -> int:
    widths = [p["n_in"], *p["hidden"], p["n_out"]]
    return sum(a * b for a, b in zip(widths[:-1], widths[1:]))


def _task_data(p: dict, seed: int = 0):
    import torch

    from dropbench.data import TaskData

    g = torch.Generator().manual_seed(seed)
    n = p["samples"]
    x = torch.randn(n, p["n_in"], generator=g)
    y = torch.randint(0, p["n_out"], (n,), generator=g)
    small_x, small_y = x[:256], y[:256]
    return TaskData("bench", True, (p["n_in"],), p["n_out"], x, y, small_x, small_y, small_x, small_y)


def _cell(p: dict, seed: int, keep: float, input_keep: float):
    from dropbench.config import Cell, ModelConfig, OptimizerConfig, TaskConfig
    from dropbench.regularizers import parse_regularizer

    task = TaskConfig("bench", ModelConfig(hidden=p["hidden"]), OptimizerConfig(lr=0.01), p["batch"], p["epochs"])
    return Cell("bench", task, parse_regularizer("none"), keep, input_keep, "bernoulli", seed)


def _warm_up(p: dict) -> None:
    """One tiny training in the fresh process, so one-time costs (thread pools, first kernels) are not timed."""
    from dropbench.stacked import train_stacked
    from dropbench.train import train_model

    tiny = dict(p, samples=2 * p["batch"], epochs=1)
    data = _task_data(tiny)
    train_model(_cell(tiny, 0, p["keep"], p["input_keep"]), data)
    train_stacked([_cell(tiny, s, p["keep"], p["input_keep"]) for s in range(2)], data)


def _tutorial(p: dict, data):
    """(a): nn.Sequential with nn.Dropout (which takes the drop rate), torch.optim.SGD, a shuffling DataLoader."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    layers, width = [nn.Dropout(1 - p["input_keep"])], p["n_in"]
    for h in p["hidden"]:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(1 - p["keep"])]
        width = h
    model = nn.Sequential(*layers, nn.Linear(width, p["n_out"]))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=p["batch"], shuffle=True)
    return model, opt, loader


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _variant(problem: str, variant: str, threads: int, queue) -> None:
    """Runs in a spawned process: one measurement of samples/s and this process's peak memory."""
    import torch

    torch.set_num_threads(threads)
    if variant.startswith(("single", "stacked")):
        from dropbench.devices import configure

        configure("cpu")  # what a dropbench worker process sets up before it trains
    p = PROBLEMS[problem]
    data = _task_data(p)
    n = p["samples"] * p["epochs"]  # samples processed by a variant's training loop
    _warm_up(p)
    # The machine's speed right now, in this process: shares of it survive a slow spell of a shared host.
    limit = matmul_limit(p, threads)
    if variant == "tutorial":
        from torch import nn

        model, opt, loader = _tutorial(p, data)
        start = time.perf_counter()
        for _ in range(p["epochs"]):
            model.train()
            for xb, yb in loader:
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():  # the per-epoch validation pass the other loops make too
                model(data.x_val).argmax(1)
        seconds = time.perf_counter() - start
        samples = n
    elif variant in ("single", "single-no-dropout"):
        from dropbench.train import train_model

        keep, input_keep = (p["keep"], p["input_keep"]) if variant == "single" else (1.0, 1.0)
        _, result = train_model(_cell(p, 0, keep, input_keep), data)
        seconds, samples = result.fit_seconds, n
    elif variant.startswith("stacked-"):
        from dropbench.stacked import train_stacked

        k = int(variant.split("-")[1])
        # K models see K times the samples: fewer rows each keeps large stacks to the others' running time.
        rows = max(8 * p["batch"], min(p["samples"], STACK_SAMPLE_FACTOR * p["samples"] // k))
        p = dict(p, samples=rows)
        data = _task_data(p)
        cells = [_cell(p, seed, p["keep"], p["input_keep"]) for seed in range(k)]
        start = time.perf_counter()
        train_stacked(cells, data)  # the training loop with per-epoch validation, as train_model
        seconds, samples = time.perf_counter() - start, rows * p["epochs"] * k
    elif variant == "sklearn":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(
            hidden_layer_sizes=p["hidden"],
            solver="sgd",
            momentum=0.9,
            learning_rate_init=0.01,
            batch_size=p["batch"],
            max_iter=p["epochs"],
            shuffle=True,
            random_state=0,
        )
        x, y = data.x_train.numpy(), data.y_train.numpy()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(x, y)
        seconds, samples = time.perf_counter() - start, n
    else:
        raise ValueError(variant)
    queue.put((samples / seconds, _peak_mib(), limit))


def _forward_matmuls(p: dict):
    """The model's forward matmul shapes (batch × in @ in × out) as random operands: the limit's workload."""
    import torch

    widths = [p["n_in"], *p["hidden"], p["n_out"]]
    mats = [(torch.randn(p["batch"], a), torch.randn(a, b)) for a, b in zip(widths[:-1], widths[1:])]

    def run() -> None:
        for a, b in mats:
            a @ b

    return run


def matmul_limit(p: dict, threads: int) -> float:
    """fp32 GFLOP/s of the model's own forward shapes, timed here for one second."""
    import torch

    torch.set_num_threads(threads)
    matmuls = _forward_matmuls(p)
    matmuls()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < 1.0:
        matmuls()
        reps += 1
    return 2 * p["batch"] * _weights(p) * reps / (time.perf_counter() - start) / 1e9


def _spawned(target, *args):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    result = queue.get(timeout=900)
    proc.join()
    return result


@dataclass
class Measured:
    rate: float  # median samples/s
    share: float  # that rate's FLOPs over the median matmul limit of the problem's processes
    peak: float  # largest peak RSS, MiB


def measure(problem: str, variants: list[str], threads: int, repeats: int, log) -> dict[str, Measured]:
    """Per variant: median samples/s, its share of the matmul limit, max peak MiB. Repeats go round-robin
    over the variants, so a slow spell of a shared machine lands on every variant rather than on one."""
    rates: dict[str, list[float]] = {v: [] for v in variants}
    peaks: dict[str, list[float]] = {v: [] for v in variants}
    limits: list[float] = []
    for repeat in range(repeats):
        for variant in variants:
            rate, peak, limit = _spawned(_variant, problem, variant, threads)
            log(f"  {problem} {variant} ({repeat + 1}/{repeats}): {rate:,.0f} samples/s, limit {limit:.0f} GFLOP/s")
            rates[variant].append(rate)
            peaks[variant].append(peak)
            limits.append(limit)
    limit = statistics.median(limits) * 1e9
    flops_per_sample = 6 * _weights(PROBLEMS[problem])
    return {
        v: Measured(statistics.median(rates[v]), flops_per_sample * statistics.median(rates[v]) / limit, max(peaks[v]))
        for v in variants
    }


def _step_costs(problem: str, threads: int, queue) -> None:
    """Runs in a spawned process: median seconds of a training step of the tutorial style (its DataLoader
    fetch included), of dropbench's step (`train.Training.step`) with dropout and without, and of the
    forward-shape matmuls, taken in turn, over and over: ratios of these survive a shared host's slow spells."""
    import torch
    from torch import nn

    from dropbench.devices import configure
    from dropbench.train import Training

    torch.set_num_threads(threads)
    configure("cpu")
    p = PROBLEMS[problem]
    data = _task_data(dict(p, samples=max(p["samples"], 4096)))
    _warm_up(p)
    model, opt, loader = _tutorial(p, data)
    batches = iter(loader)

    def tutorial_step() -> None:
        nonlocal batches
        xb, yb = next(batches, (None, None))
        if xb is None or len(xb) < p["batch"]:  # a new epoch (full batches only, as below)
            batches = iter(loader)
            xb, yb = next(batches)
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    trainings = {
        "dropout": Training(_cell(p, 0, p["keep"], p["input_keep"]), data),
        "no dropout": Training(_cell(p, 0, 1.0, 1.0), data),
    }
    matmuls = _forward_matmuls(p)
    times: dict[str, list[float]] = {"tutorial": [], "dropout": [], "no dropout": [], "matmuls": []}
    order = torch.randperm(len(data.y_train)).split(p["batch"])
    model.train()
    for training in trainings.values():
        training.model.train()
    for i in range(STEP_PAIRS + 20):
        idx = order[i % (len(order) - 1)]  # full batches only
        start = time.perf_counter()
        tutorial_step()
        times["tutorial"].append(time.perf_counter() - start)
        for name, training in trainings.items():
            start = time.perf_counter()
            training.step(idx)
            times[name].append(time.perf_counter() - start)
        start = time.perf_counter()
        matmuls()
        times["matmuls"].append(time.perf_counter() - start)
    queue.put({name: statistics.median(t[20:]) for name, t in times.items()})  # the first 20 warm up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples and one repeat")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: all cores]")
    args = parser.parse_args()
    import os

    threads = args.threads or len(os.sched_getaffinity(0))
    repeats = 1 if args.quick else 3
    if args.quick:
        for p in PROBLEMS.values():
            p["samples"] = min(p["samples"], 3200)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for problem, p in PROBLEMS.items():
        variants = ["tutorial", "single", "single-no-dropout", *(f"stacked-{k}" for k in STACK_SIZES), "sklearn"]
        results = measure(problem, variants, threads, repeats, lambda line: console.print(line, highlight=False))
        table = Table(
            title=f"{problem}: {p['n_in']}-{'-'.join(map(str, p['hidden']))}-{p['n_out']}, batch "
            f"{p['batch']}, {threads} threads",
            title_justify="left",
        )
        for column in ("variant", "samples/s", "× tutorial", "% of matmul limit", "peak MiB"):
            table.add_column(column, justify="right" if column != "variant" else "left")
        base = results["tutorial"].rate
        for variant in variants:
            m = results[variant]
            table.add_row(variant, f"{m.rate:,.0f}", f"{m.rate / base:.2f}", f"{100 * m.share:.0f}%", f"{m.peak:.0f}")
        console.print(table)
        steps = _spawned(_step_costs, problem, threads)
        # The forward matmuls do 2 of the step's 6 FLOPs per weight and sample: share = 3 x their time / step's.
        share = {name: 300 * steps["matmuls"] / steps[name] for name in ("tutorial", "dropout", "no dropout")}
        console.print(
            f"training steps (medians of {STEP_PAIRS}, taken in turn): tutorial {1e3 * steps['tutorial']:.2f} ms "
            f"({share['tutorial']:.0f}% of the matmul limit); dropbench {1e3 * steps['dropout']:.2f} ms "
            f"({share['dropout']:.0f}%, [bold]{steps['tutorial'] / steps['dropout']:.2f}×[/] the tutorial's speed); "
            f"without dropout {1e3 * steps['no dropout']:.2f} ms ({share['no dropout']:.0f}%): the dropout step costs "
            f"[bold]{steps['dropout'] / steps['no dropout']:.2f}×[/] (input keep {p['input_keep']}, "
            f"hidden {p['keep']})",
            highlight=False,
        )
        stacked = results[f"stacked-{STACK_SIZES[2]}"].rate / results["single"].rate
        console.print(f"stacked K=16: {stacked:.1f}× the cells per second of one-at-a-time training\n")


if __name__ == "__main__":
    sys.exit(main())
