"""What users run, timed: `dropbench run` at its default flags on real Fashion-MNIST against the tutorial loop.

    python benchmarks/bench_real.py                      # ~6 minutes on 2 CPU cores
    python benchmarks/bench_real.py --epochs 2 --repeats 1

One cell of the tutorial's problem (benchmarks/fashion-one-cell.toml: 784-1024-1024-10, batch 128, inputs keep 0.8,
hidden 0.5, SGD lr 0.05 momentum 0.9, 55,000 training images) is trained by:
  tutorial          benchmarks/tutorial_fashion_mnist.py: DataLoader + nn.Sequential + nn.Dropout, torch's default
                    threads, no dropbench code; seconds per epoch after 10 warm-up steps
  dropbench         `dropbench run benchmarks/fashion-one-cell.toml` with no other flag (--threads auto)
  dropbench -t 1    the same at --threads 1 (every CPU cell's count before auto)
Each is a fresh process, the variants taken in turn, `--repeats` rounds; minimum and median shown. Per epoch:
the tutorial's own timer, dropbench's `fit_seconds` over its epochs (both with a validation pass each epoch).
Whole: the process from start to exit (interpreter, imports, data, for dropbench the thread probe and the
final measuring of the three splits at one thread). The ratios are the tutorial's time over dropbench's: above
1, dropbench is faster. Time only on a quiet machine: these figures move with the host.
"""

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SUITE = HERE / "fashion-one-cell.toml"
SYSTEM_DATA = Path("/usr/share/datasets/fashion-mnist")


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return wall, done.stdout


def tutorial(data: Path, epochs: int, env: dict[str, str]) -> tuple[float, float, int]:
    wall, out = timed(
        [sys.executable, str(HERE / "tutorial_fashion_mnist.py"), "--data", str(data), "--epochs", str(epochs)], env
    )
    found = json.loads(out.strip().splitlines()[-1])
    return statistics.fmean(found["epoch_seconds"]), wall, found["threads"]


def dropbench(epochs: int, flags: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "r.csv"
        command = [sys.executable, "-m", "dropbench", "run", str(SUITE), "--epochs", str(epochs), "--out", str(out)]
        wall, _ = timed([*command, "-q", *flags], env)
        [row] = list(csv.DictReader(out.open()))
    if row["status"] != "ok":
        raise SystemExit(f"dropbench's cell: {row['status']} {row['error']}")
    return float(row["fit_seconds"]) / int(row["epochs_run"]), wall, int(row["threads"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per process [3]")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of the variants in turn [2]")
    parser.add_argument("--data", type=Path, default=None, help="folder with fashion-mnist/ (or the IDX files)")
    args = parser.parse_args()
    env = os.environ.copy()
    if args.data is not None:
        env["DROPBENCH_DATA"] = str(args.data)
    idx = args.data / "fashion-mnist" if args.data is not None else SYSTEM_DATA
    variants = {
        "tutorial": lambda: tutorial(idx, args.epochs, env),
        "dropbench": lambda: dropbench(args.epochs, [], env),
        "dropbench -t 1": lambda: dropbench(args.epochs, ["--threads", "1"], env),
    }
    per_epoch: dict[str, list[float]] = {name: [] for name in variants}
    whole: dict[str, list[float]] = {name: [] for name in variants}
    threads: dict[str, int] = {}
    for round_ in range(args.repeats):
        for name, run in variants.items():
            epoch, wall, threads[name] = run()
            per_epoch[name].append(epoch)
            whole[name].append(wall)
            print(
                f"round {round_ + 1}: {name:15s} {epoch:6.2f} s/epoch  {wall:6.1f} s whole  ({threads[name]} threads)",
                flush=True,
            )
    print(
        f"\n{args.epochs} epochs a process, {args.repeats} round(s) in turn; min / median; ratio: tutorial's "
        "time over this one's (tutorial ÷ it) on minima"
    )
    print("| variant | threads | s/epoch | whole run, s | per epoch vs tutorial | whole vs tutorial |")
    print("|---|---|---|---|---|---|")
    for name in variants:
        e, w = per_epoch[name], whole[name]
        ratio_e = min(per_epoch["tutorial"]) / min(e)
        ratio_w = min(whole["tutorial"]) / min(w)
        print(
            f"| {name} | {threads[name]} | {min(e):.2f} / {statistics.median(e):.2f} | "
            f"{min(w):.1f} / {statistics.median(w):.1f} | {ratio_e:.2f}× | {ratio_w:.2f}× |"
        )


if __name__ == "__main__":
    main()
