"""Successive halving against the full grid: what a tuned run with `[tuning] halving` spent and chose, beside
the same suite run without it (README, "Tuned comparisons").

    dropbench run quick-tuned --out results/grid.csv
    dropbench run quick-tuned-halving --out results/halving.csv
    python benchmarks/halving_vs_grid.py results/grid.csv results/halving.csv

Reads only the two results files and their NAME.json metadata: tune cells and the epochs they trained (each
trial's training at each seed counted once, at its longest `epochs_run`: a halving trial's rungs continue one
training from checkpoints; `report.tuning.trained_epochs`), the runs' wall time (`runs[].seconds` summed), and per
(task, method) the trial each chose on validation (`report.tuning.choose_on_validation`, which with halving
reads the last rung's rows only), counted as k of N where both chose the same trial (the same setting: both
sample the same trials).
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from dropbench.report.tuning import choose_on_validation, trained_epochs
from dropbench.results import read_results


def spent(path: Path) -> dict[str, float]:
    """Tune cells, the epochs they trained, and the runs' wall seconds (NaN without metadata)."""
    frame = read_results(path).drop_duplicates(subset="cell_id", keep="last")
    tune = frame[frame["phase"].astype("string").fillna("") == "tune"]
    meta = path.with_suffix(".json")
    seconds = float("nan")
    if meta.exists():
        seconds = sum(float(run.get("seconds") or 0) for run in json.loads(meta.read_text()).get("runs", []))
    epochs = trained_epochs(tune.assign(trial=pd.to_numeric(tune["trial"], errors="coerce"))).sum()
    return {"tune_cells": len(tune), "tune_epochs": float(epochs), "seconds": seconds}


def choices(path: Path) -> dict[tuple[str, str], int | None]:
    chosen = choose_on_validation(read_results(path))
    return {
        (str(r.task), str(r.method)): (int(r.trial) if r.trial == r.trial else None)
        for r in chosen.itertuples(index=False)
    }


def compare(grid: Path, halving: Path) -> dict[str, object]:
    """The figures the README quotes, as a dict."""
    a, b = spent(grid), spent(halving)
    ca, cb = choices(grid), choices(halving)
    pairs = sorted(set(ca) & set(cb))
    same = [p for p in pairs if ca[p] == cb[p]]
    return {
        "grid": a,
        "halving": b,
        "epochs_ratio": b["tune_epochs"] / a["tune_epochs"] if a["tune_epochs"] else float("nan"),
        "same_choice": len(same),
        "pairs": len(pairs),
        "different": [
            f"{t} {m}: grid trial {ca[t, m]}, halving trial {cb[t, m]}" for t, m in pairs if (t, m) not in same
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", type=Path, help="results of the suite without halving")
    parser.add_argument("halving", type=Path, help="results of the same suite with [tuning] halving")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = compare(args.grid, args.halving)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for name in ("grid", "halving"):
        figures = result[name]
        assert isinstance(figures, dict)
        print(
            f"{name:8} {figures['tune_cells']:5d} tune cells, {figures['tune_epochs']:8.0f} tune epochs, "
            f"{figures['seconds']:6.1f} s wall (both phases)"
        )
    print(f"halving trained {result['epochs_ratio']:.0%} of the grid's tune epochs")
    print(f"same choice: {result['same_choice']} of {result['pairs']} (task, method)s")
    for line in result["different"]:  # type: ignore[attr-defined]
        print(f"  differs: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
