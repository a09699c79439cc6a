"""Published numbers to set beside a run: `dropbench report --reference srivastava2014`.

A reference is a CSV packaged in `dropbench/references/`, one row per published table row. The columns
`model`, `regularizer`, `keep_rate`, `input_keep_rate` and `dropout` say which dropbench configuration the
row corresponds to; they are empty where it corresponds to none (a pretrained net, maxout units, a rate the
paper does not state). A row is *mapped* when its keep rates are given; only mapped rows are matched.

Matching a summary (the output of `report.summarize`) against a reference:

- task, architecture (`model`, dropbench's label such as mlp-1024-1024-2048), keep rate and input keep rate
  must agree (rates within `RATE_TOLERANCE`): a smaller net's figure is never set beside the paper's row;
- the regularizer must agree, unless the reference leaves it empty because the paper does not state it,
  in which case every regularizer is a candidate and the note says which one was taken;
- the dropout kind must agree when the reference row drops anything (a keep rate below 1); with both
  keep rates at 1.0 nothing is dropped and the kind is moot;
- of several candidates (other strengths, other setups), the one with the best mean *validation* accuracy
  is taken, as the paper tuned on validation data, and `match_note` names the others; the test split only
  reports the choice. `ours_configuration` says which of ours stands beside the row. Candidates without a
  successful cell are skipped.
"""

import io
import math
from importlib import resources
from typing import Any

import pandas as pd

from ..catalogue import REFERENCES
from ..errors import UserError
from .labels import config_label

REFERENCE_COLUMNS = (
    "source",
    "table",
    "task",
    "method",
    "architecture",
    "model",
    "regularizer",
    "keep_rate",
    "input_keep_rate",
    "dropout",
    "test_error_pct",
    "test_error_sd_pct",
    "note",
)
FLOAT_COLUMNS = ("keep_rate", "input_keep_rate", "test_error_pct", "test_error_sd_pct")
INT_COLUMNS = ("table",)
MATCH_COLUMNS = (
    "ours_test_error_pct",
    "ours_ci_pct",
    "ours_n",
    "ours_model",
    "ours_strength",
    "ours_configuration",
    "difference_pct",
    "match_note",
)
SUMMARY_COLUMNS = (
    "task",
    "model",
    "regularizer",
    "strength",
    "keep_rate",
    "input_keep_rate",
    "dropout",
    "n",
    "val_acc_mean",
    "test_acc_mean",
    "test_acc_ci",
)
RATE_TOLERANCE = 1e-9


def load_reference(name: str) -> pd.DataFrame:
    """The packaged reference `name`: numeric columns as numbers (NaN where empty), text columns as
    strings ("" where empty), rows in the order of the paper's tables."""
    if name not in REFERENCES:
        raise UserError(f"unknown reference '{name}'; known: {', '.join(REFERENCES)}")
    resource = resources.files("dropbench") / "references" / f"{name}.csv"
    # Traversable.open takes no newline=: decode the bytes ourselves, line endings left to the CSV reader.
    with resource.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle:
        frame = pd.read_csv(handle, dtype=str, keep_default_na=False)
    if tuple(frame.columns) != REFERENCE_COLUMNS:
        raise ValueError(f"reference {name}: columns {list(frame.columns)}, expected {list(REFERENCE_COLUMNS)}")
    for column in FLOAT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column].where(frame[column] != ""), errors="raise").astype(float)
    for column in INT_COLUMNS:
        frame[column] = pd.to_numeric(frame[column], errors="raise").astype(int)
    return frame


def is_mapped(reference: pd.DataFrame) -> pd.Series:
    """Rows that correspond to a dropbench configuration (their keep rates are given)."""
    return reference["keep_rate"].notna() & reference["input_keep_rate"].notna()


def match_reference(summary: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """One row per reference row: its columns, then ours (test error %, CI half-width %, n, model,
    strength), the difference ours − paper in points, and a note on how the match was made. Rows with
    no mapping or no matching configuration keep NaN (and "" for text) in ours."""
    if not summary.empty:
        missing = [c for c in SUMMARY_COLUMNS if c not in summary.columns]
        if missing:
            raise UserError(f"the summary has no column(s) {', '.join(missing)}; pass the output of summarize()")
    records = [{**row, **_match_row(row, summary)} for row in reference.to_dict("records")]
    matched = pd.DataFrame.from_records(records, columns=[*reference.columns, *MATCH_COLUMNS])
    matched["ours_n"] = matched["ours_n"].astype("Int64")
    for column in ("ours_test_error_pct", "ours_ci_pct", "difference_pct"):
        matched[column] = matched[column].astype(float)
    return matched


def _no_match(note: str) -> dict[str, object]:
    return {
        "ours_test_error_pct": math.nan,
        "ours_ci_pct": math.nan,
        "ours_n": pd.NA,
        "ours_model": "",
        "ours_strength": "",
        "ours_configuration": "",
        "difference_pct": math.nan,
        "match_note": note,
    }


def _close(values: pd.Series, target: float) -> pd.Series:
    return (values.astype(float) - target).abs() <= RATE_TOLERANCE


def _text(value: object) -> str:
    return "" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


def _match_row(row: dict[str, Any], summary: pd.DataFrame) -> dict[str, object]:
    """`row` is a record of the reference frame (pandas scalars: numbers, NaN, strings)."""
    keep, input_keep = row["keep_rate"], row["input_keep_rate"]
    if pd.isna(keep) or pd.isna(input_keep):
        return _no_match("no dropbench configuration corresponds to this row")
    if summary.empty:
        return _no_match("no matching configuration in these results")
    candidates = summary[
        (summary["task"] == row["task"])
        & _close(summary["keep_rate"], float(keep))
        & _close(summary["input_keep_rate"], float(input_keep))
    ]
    any_regularizer = not row["regularizer"]
    if not any_regularizer:
        candidates = candidates[candidates["regularizer"] == row["regularizer"]]
    drops = float(keep) < 1.0 or float(input_keep) < 1.0
    if drops and row["dropout"]:
        candidates = candidates[candidates["dropout"] == row["dropout"]]
    other_architectures = sorted(set(candidates["model"]) - {row["model"]})
    candidates = candidates[candidates["model"] == row["model"]]
    # The paper's rows trained on the whole training split with one rate for every hidden layer.
    subsets = sorted(set(candidates["train_size"]) - {0}) if "train_size" in candidates else []
    if "train_size" in candidates:
        candidates = candidates[candidates["train_size"] == 0]
    if "layer_keep_rates" in candidates:
        candidates = candidates[candidates["layer_keep_rates"].fillna("") == ""]
    if candidates.empty:
        note = "no matching configuration in these results"
        if subsets:
            note += f" on the whole training split (these results trained on {', '.join(map(str, subsets))} images)"
        elif other_architectures:
            note += (
                f" of the paper's architecture ({row['model']}; these results have {', '.join(other_architectures)})"
            )
        return _no_match(note)
    usable = candidates[(candidates["n"] > 0) & candidates["test_acc_mean"].notna()]
    if usable.empty:
        return _no_match(f"{len(candidates)} matching configuration(s), none with a successful cell")
    # Chosen on validation accuracy, best first; the test split only reports the choice.
    usable = usable.sort_values("val_acc_mean", ascending=False, kind="stable", na_position="last")
    usable = usable.assign(_error=100.0 * (1.0 - usable["test_acc_mean"].astype(float)))
    best = usable.iloc[0]
    notes = []
    if any_regularizer:
        notes.append(f"the paper states no regularizer for this row; took {best['regularizer']}")
    if len(usable) > 1:
        others = ", ".join(
            f"{config_label(c, ('model',))} (val {100 * c['val_acc_mean']:.2f}%)" for _, c in usable.iloc[1:].iterrows()
        )
        notes.append(f"best validation accuracy of {len(usable)} matching configurations; the others: {others}")
    ours = float(best["_error"])
    return {
        "ours_test_error_pct": ours,
        "ours_ci_pct": 100.0 * float(best["test_acc_ci"]),
        "ours_n": int(best["n"]),
        "ours_model": _text(best["model"]),
        "ours_strength": _text(best["strength"]),
        "ours_configuration": configuration_label(best),
        "difference_pct": ours - float(row["test_error_pct"]),
        "match_note": "; ".join(notes),
    }


def configuration_label(candidate: pd.Series) -> str:
    """'max-norm 3 keep 0.5 · in 0.8 · gaussian · mlp-1024-1024-2048': which of ours stands beside a paper's row
    (the dropout kind named where it is not Bernoulli's)."""
    named = ["input_keep_rate", "model"] + (["dropout"] if _text(candidate["dropout"]) not in ("", "bernoulli") else [])
    return config_label(candidate, named, keep=True)
