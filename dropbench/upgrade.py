"""Results files of an earlier schema brought to this one in place: what `dropbench migrate` does, and what a run
into such a file does before it resumes (so that its rows and the new ones are of one schema, and no cell trains
again).

Schema 7 changed how cells are written, not what they hold: ids behind a letter (ids.py) and text that a
spreadsheet would read as a value behind an apostrophe (results.format_value). Files of schema 4 to 6 are
rewritten by results.upgrade_record's rule (with the columns renamed and added since), files of schema 3 with what
their suite knows of each cell (suite_fill); every figure keeps its bytes.
"""

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UserError
from .files import os_error, replace_atomically, run_lock
from .results import SCHEMA_VERSION, SUITE_COLUMNS, Fill, ResultStore, format_value

if TYPE_CHECKING:
    from .config import Cell


def suite_fill(path: Path, cells: Callable[[], "list[Cell]"], suite: str) -> Fill:
    """The SUITE_COLUMNS of a schema-3 row of `path`, from the cell of the same cell_id among the suite's `cells`
    (called once, when a row first needs them). A cell_id covers everything that defines a cell, momentum and
    precision included, so that cell was trained with these settings; a row of another cell is a UserError."""
    known: dict[str, Cell] = {}

    def fill(row: dict[str, str]) -> dict[str, str]:
        if not known:
            known.update({cell.cell_id: cell for cell in cells()})
        cell = known.get(row["cell_id"])
        if cell is None:
            raise UserError(
                f"{path}: cell {row['cell_id']} ({row.get('task')} {row.get('regularizer')} keep "
                f"{row.get('keep_rate')} seed {row.get('seed')}) is not a cell of suite '{suite}', which would "
                f"give its {', '.join(SUITE_COLUMNS)} (schema 3 wrote none): name the suite it was run from"
            )
        values = (cell.task.optimizer.momentum_value, cell.precision, cell.setup_id)
        return {column: format_value(value) for column, value in zip(SUITE_COLUMNS, values)}

    return fill


def upgrade_files(store: ResultStore) -> str | None:
    """Rewrite the store's CSV and its epochs sidecar in this schema, each replaced whole, and say so in its JSON
    sidecar; returns the lowest schema its rows had when something changed ('earlier' when they do not say), else
    None. A file that cannot be read as this schema (before 3, or 3 without its suite; not dropbench's) is a
    UserError before anything is written."""
    store.rows.readable_header()
    store.epochs.readable_header()
    old = _lowest_schema(store.csv_path)
    changed = store.rows.rewrite_upgraded()
    changed = store.epochs.rewrite_upgraded() or changed
    if not changed:
        return None
    _note_in_metadata(store, old)
    return old


def _lowest_schema(path: Path) -> str:
    """The lowest schema_version among the file's rows, as text; 'earlier' when no row gives one."""
    if not path.exists():
        return "earlier"
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            versions = [row.get("schema_version") or "" for row in csv.DictReader(handle)]
    except OSError as error:
        raise os_error(path, "read", error) from None
    except csv.Error:
        return "earlier"
    numbers = [int(v) for v in versions if v.isdigit()]
    return str(min(numbers)) if numbers else "earlier"


def _note_in_metadata(store: ResultStore, old: str) -> None:
    """The JSON sidecar names the file's schema now and the one it had (an absent sidecar stays absent)."""
    meta = store.read_metadata()
    if not meta:
        return
    meta["schema_version"] = SCHEMA_VERSION
    meta.setdefault("upgraded_from", []).append(old)
    replace_atomically(store.meta_path, (json.dumps(meta, indent=2, default=str) + "\n").encode("utf-8"))


def migrate(paths: list[Path], suite: str | None = None) -> list[tuple[Path, str | None]]:
    """`dropbench migrate`: each results file and its sidecars in this schema, under the file's run lock (no run
    writes to it meanwhile); per file, the schema it had, or None when it was this one already. `suite` (a name or
    a TOML path) gives files of schema 3 what they lack (suite_fill). Every file is checked before the first is
    rewritten."""
    fills: list[Fill | None] = [None] * len(paths)
    if suite is not None:
        from .suite import load_suite

        loaded = load_suite(suite)
        fills = [suite_fill(path, loaded.cells, loaded.name) for path in paths]
    stores = [ResultStore(path, fill) for path, fill in zip(paths, fills)]
    for store in stores:
        if not store.csv_path.is_file():
            raise UserError(f"results file not found: {store.csv_path}")
        store.check_ours(any_version=True)
        store.rows.readable_header()
        store.epochs.readable_header()
        store.written()  # every row read as this schema's (a schema-3 row of another suite's cell refused) first
    done = []
    for store in stores:
        with run_lock(store.csv_path, "dropbench migrate"):
            done.append((store.csv_path, upgrade_files(store)))
    return done
