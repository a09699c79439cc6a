"""How dropbench names a configuration, or a cell, wherever it names one: tables, --best, compare, reference
notes, plot legends, lists of failed or missing cells and progress lines share this one vocabulary.

A configuration: 'l2 0.0001' (the regularizer and its strength), then whatever else sets it apart from the
rows it stands among, each after ' · ': per-layer keep rates ('layers 0.8/0.5'), training-set size
('n=1000', 'n=all'), input keep rate ('in 0.8'), dropout kind, model, and the training setting that differs
('epochs 3', 'opt adam', ...; 'setup <id>' where no column says which). With the task and the keep rate:
'digits l2 0.0001 keep 0.5 · in 0.8'.

A cell (a configuration at one seed, in logs and in lists of cells) reads as key=value pairs, for greps:
'digits l2(0.0001) keep=0.5 in=0.8 gaussian n=100 seed=2'.

Rows are anything indexable by column name (a pandas Series, a dict); nothing heavy is imported here.
"""

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# Training settings named in a label where they vary within a task (files merged from runs of other settings).
SETUP_COLUMNS = ("optimizer", "lr", "momentum", "batch_size", "max_epochs", "precision", "mc_samples")
SETUP_LABELS = {
    "optimizer": "opt",
    "lr": "lr",
    "momentum": "momentum",
    "batch_size": "batch",
    "max_epochs": "epochs",
    "precision": "precision",
    "mc_samples": "mc",
}
# What else can set two configurations of one task apart, in the order a label names it.
DISTINGUISHING = ("layer_keep_rates", "train_size", "input_keep_rate", "dropout", "model", *SETUP_COLUMNS, "setup")


def varying(rows: "pd.DataFrame", columns: Collection[str] = DISTINGUISHING) -> set[str]:
    """The `columns` of a DataFrame that hold more than one value (NaN counts as one): what a label must name
    so that no two of these rows read alike."""
    return {c for c in columns if c in rows and rows[c].nunique(dropna=False) > 1}


def keep_label(keep: float) -> str:
    """'keep 0.5', 'keep 1.0', 'keep 0.8': the keep rate as the tables' columns are headed."""
    return f"keep {keep:.1f}" if keep in (0.5, 1.0) else f"keep {keep:g}"


def _text(value: object) -> str:
    """A text field as written ('' for a missing one: NaN, None)."""
    return value if isinstance(value, str) else ""


def _size(value: object) -> int:
    """A training-set size (0, the whole split, for a missing one: files of earlier schemas)."""
    try:
        return int(value)  # type: ignore[call-overload]  # any cell value: the except below is the check
    except (TypeError, ValueError):  # None, NaN
        return 0


def config_label(row: Mapping, varying: Collection[str] = (), *, task: bool = False, keep: bool = False) -> str:
    """'l2 0.0001' then, after ' · ', each of the DISTINGUISHING columns in `varying`; with `task` the task
    first, with `keep` the keep rate after the regularizer ('digits l2 0.0001 keep 0.5 · in 0.8')."""
    strength = _text(row["strength"])
    head = [str(row["task"])] if task else []
    head.append(row["regularizer"] + (f" {strength}" if strength else ""))
    if keep:
        head.append(keep_label(float(row["keep_rate"])))
    parts = [" ".join(head)]
    if "layer_keep_rates" in varying and _text(row.get("layer_keep_rates")):
        parts.append(f"layers {row['layer_keep_rates']}")
    if "train_size" in varying:
        parts.append(f"n={_size(row['train_size']) or 'all'}")
    if "input_keep_rate" in varying:
        parts.append(f"in {float(row['input_keep_rate']):g}")
    if "dropout" in varying:
        parts.append(str(row["dropout"]))
    if "model" in varying:
        parts.append(str(row["model"]))
    parts += [f"{SETUP_LABELS[c]} {row[c]}" for c in SETUP_COLUMNS if c in varying and c in row]
    if "setup" in varying and not any(c in varying for c in SETUP_COLUMNS):
        parts.append(f"setup {row['setup']}")
    return " · ".join(parts)


def cell_label(row: Mapping, varying: Collection[str] = ()) -> str:
    """'digits l2(0.0001) keep=0.5 seed=2', with the input keep rate, dropout kind and training-set size where
    they are not the defaults, and whatever of DISTINGUISHING is in `varying`: no two cells read alike."""
    strength = _text(row["strength"])
    layers = _text(row.get("layer_keep_rates"))
    text = f"{row['task']} {row['regularizer']}" + (f"({strength})" if strength else "")
    text += f" keep={layers or format(float(row['keep_rate']), 'g')}"
    if "input_keep_rate" in varying or float(row["input_keep_rate"]) != 1.0:
        text += f" in={float(row['input_keep_rate']):g}"
    if "dropout" in varying or row["dropout"] != "bernoulli":
        text += f" {row['dropout']}"
    size = _size(row.get("train_size"))
    if "train_size" in varying or size:
        text += f" n={size or 'all'}"
    if "model" in varying:
        text += f" {row['model']}"
    seed = float(row["seed"])
    return f"{text} seed={int(seed) if seed.is_integer() else row['seed']}"
