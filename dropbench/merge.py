"""Join results files (the shards of one grid, or reruns) into one, without counting a cell twice."""

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .files import prepare_output, replace_atomically, run_lock
from .results import (
    COLUMN_TYPES,
    COLUMNS,
    EPOCH_COLUMNS,
    EPOCH_TYPES,
    SCHEMA_VERSION,
    EpochUpgrade,
    RowUpgrade,
    format_value,
    read_table,
    sidecar_paths,
    table_bytes,
)

# Columns that legitimately differ between two runs of the same cell: when, where and how fast.
CIRCUMSTANCE_COLUMNS = frozenset({"fit_seconds", "started_at", "device", "threads", "host", "cpu", "git_commit"})

Row = dict[str, object]


@dataclass(frozen=True)
class Merged:
    rows: int
    duplicates: int


def _same_cell(a: Row, b: Row) -> bool:
    # Compared as written (format_value): NaN equals NaN, and a float equals itself exactly.
    return all(format_value(a[c]) == format_value(b[c]) for c in COLUMNS if c not in CIRCUMSTANCE_COLUMNS)


def _refuse_existing(out: Path) -> None:
    for path in (out, *sidecar_paths(out)):
        if path.exists():
            raise UserError(f"{path}: exists; merge writes new files (remove it or choose another -o)")


def merge_results(inputs: list[Path], out: Path) -> Merged:
    """Rows of every input, one per cell_id. A cell present twice with the same figures is a duplicate
    (the first kept); with different figures it is a conflict and nothing is written. Every input is read
    whole and checked (a malformed row is refused with its file and line) before anything is written; an
    input with a header and no rows (a shard that got no cells) adds nothing. Inputs of schema 4 to 6 are read as
    this schema (results.RowUpgrade: ids behind a letter), so the merged file is of this schema throughout."""
    _refuse_existing(out)
    kept: dict[str, Row] = {}
    origin: dict[str, Path] = {}
    duplicates, conflicts = 0, []
    for path in inputs:
        for row in read_table(path, COLUMN_TYPES, RowUpgrade()):
            cell_id = str(row["cell_id"])
            first = kept.get(cell_id)
            if first is None:
                kept[cell_id], origin[cell_id] = row, path
            elif _same_cell(first, row):
                duplicates += 1
            else:
                conflicts.append(f"{cell_id} ({origin[cell_id]} vs {path})")
    if conflicts:
        raise UserError(f"conflicting rows for {len(conflicts)} cell(s), nothing written: {', '.join(conflicts[:5])}")
    curves: dict[tuple[str, int], Row] = {}
    for path in inputs:
        epochs_path = sidecar_paths(path)[0]
        if epochs_path.is_file():
            for row in read_table(epochs_path, EPOCH_TYPES, EpochUpgrade()):
                cell_id = str(row["cell_id"])
                if cell_id in kept and origin[cell_id] == path:
                    epoch = int(row["epoch"])  # type: ignore[call-overload]  # an int: read_table parsed it so
                    curves.setdefault((cell_id, epoch), row)
    _write(out, list(kept.values()), list(curves.values()), inputs, duplicates)
    return Merged(len(kept), duplicates)


def _write(out: Path, rows: list[Row], curves: list[Row], inputs: list[Path], duplicates: int) -> None:
    """The three files, each written whole and renamed into place; on a failure the ones already in place
    are removed again, so a merge leaves all of its files or none."""
    prepare_output(out)
    epochs_path, meta_path = sidecar_paths(out)
    meta = {
        "csv": out.name,
        "schema_version": SCHEMA_VERSION,
        "merged_from": [str(p) for p in inputs],
        "rows": len(rows),
        "duplicates": duplicates,
    }
    # Values go out through format_value, as a run's do: text a shard holds is escaped here too.
    files = [(meta_path, (json.dumps(meta, indent=2) + "\n").encode("utf-8")), (out, table_bytes(COLUMNS, rows))]
    if curves:
        files.insert(0, (epochs_path, table_bytes(EPOCH_COLUMNS, curves)))
    with run_lock(out, "dropbench merge"):
        _refuse_existing(out)  # again, under the lock: another merge may have written them meanwhile
        written: list[Path] = []
        try:
            for path, data in files:
                replace_atomically(path, data)
                written.append(path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
