"""Join results files (the shards of one grid, or reruns) into one, without counting a cell twice."""

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .results import COLUMNS, EPOCH_COLUMNS, CsvTable, sidecar_paths

# Columns that legitimately differ between two runs of the same cell: when, where and how fast.
CIRCUMSTANCE_COLUMNS = frozenset({"fit_seconds", "started_at", "device", "threads", "host", "cpu", "git_commit"})


@dataclass(frozen=True)
class Merged:
    rows: int
    duplicates: int


def _read(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != columns:
            raise UserError(f"{path}: its columns are not this dropbench's results schema")
        return list(reader)


def _same_cell(a: dict[str, str], b: dict[str, str]) -> bool:
    return all(a[c] == b[c] for c in COLUMNS if c not in CIRCUMSTANCE_COLUMNS)


def merge_results(inputs: list[Path], out: Path) -> Merged:
    """Rows of every input, one per cell_id. A cell present twice with the same figures is a duplicate
    (the first kept); with different figures it is a conflict and nothing is written."""
    if out.exists():
        raise UserError(f"{out}: exists; merge writes a new file (remove it or choose another -o)")
    kept: dict[str, dict[str, str]] = {}
    origin: dict[str, Path] = {}
    duplicates, conflicts = 0, []
    for path in inputs:
        for row in _read(path, COLUMNS):
            first = kept.get(row["cell_id"])
            if first is None:
                kept[row["cell_id"]], origin[row["cell_id"]] = row, path
            elif _same_cell(first, row):
                duplicates += 1
            else:
                conflicts.append(f"{row['cell_id']} ({origin[row['cell_id']]} vs {path})")
    if conflicts:
        raise UserError(f"conflicting rows for {len(conflicts)} cell(s), nothing written: {', '.join(conflicts[:5])}")
    curves: dict[tuple[str, str], dict[str, str]] = {}
    for path in inputs:
        epochs_path = sidecar_paths(path)[0]
        if epochs_path.is_file():
            for row in _read(epochs_path, EPOCH_COLUMNS):
                if row["cell_id"] in kept and origin[row["cell_id"]] == path:
                    curves.setdefault((row["cell_id"], row["epoch"]), row)
    out.parent.mkdir(parents=True, exist_ok=True)
    if curves:
        CsvTable(sidecar_paths(out)[0], EPOCH_COLUMNS).append(curves.values(), verbatim=True)
    CsvTable(out, COLUMNS).append(kept.values(), verbatim=True)
    sidecar_paths(out)[1].write_text(
        json.dumps({"merged_from": [str(p) for p in inputs], "rows": len(kept), "duplicates": duplicates}, indent=2)
        + "\n",
        encoding="utf-8",
    )
    return Merged(len(kept), duplicates)
