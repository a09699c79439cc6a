"""The CSV schema (defined once, here), locked appends, resume and the epochs/metadata sidecars.

A results file `NAME.csv` has two siblings: `NAME.epochs.csv` (per-epoch curves keyed by cell_id and
epoch) and `NAME.json` (run metadata). Rows are appended under a file lock and flushed per cell, so a
killed run loses at most the cell in flight and a rerun into the same file continues where it stopped.
Every value goes through format_value on its way into a file and through parse_value on its way back
(`cell_text` and `cell_value`, which know the columns whose 0 is written as an empty cell).
Files of earlier schemas are read into the current one's columns (`read_results`).
"""

import csv
import io
import json
import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd

from .errors import UserError
from .files import (
    append_bytes,
    append_lock,
    check_writable,
    complete_lines,
    os_error,
    repair_torn_tail,
    replace_atomically,
)

# 2: provenance columns python/scikit-learn versions, host, cpu, threads
# 3: layer_keep_rates, train_size, calibration (test_nll, test_ece) and MC dropout columns
# 4: momentum, precision, setup_id: a configuration is everything that changes training
# 5: test_nll dropped (it was test_loss again), test_nll_mc renamed test_loss_mc, train_size empty for the whole split
# 6: method, phase, trial: the cells of a tuned comparison (suite [tuning]); empty for ordinary grids
SCHEMA_VERSION = 6


@dataclass(frozen=True)
class ResultRow:
    """One cell's row. Accuracies are fractions in [0, 1]; losses are mean data losses (no penalty)."""

    # identity
    cell_id: str
    suite: str
    task: str
    model: str
    regularizer: str
    strength: str
    keep_rate: float  # the hidden keep rate; with per-layer rates, their mean (the rates in layer_keep_rates)
    layer_keep_rates: str  # per-layer rates as "0.8/0.5", empty when one rate serves every layer
    input_keep_rate: float
    dropout: str
    train_size: int  # 0 (an empty cell in the file): the whole training split; n: a stratified subsample of n rows
    seed: int
    # a tuned comparison's cell (suite [tuning]); all three empty in an ordinary grid
    method: str  # the tuned method: regularizers joined by '+', with 'dropout' where it is one ('l2+dropout')
    phase: str  # "tune" (a trial at a tuning seed) or "eval" (the chosen trial at an evaluation seed)
    trial: int  # the sampled setting's index within its task and method; NO_TRIAL (an empty cell) outside tuning
    # budget
    max_epochs: int
    epochs_run: int
    best_epoch: int
    batch_size: int
    optimizer: str  # sgd, sgd-nesterov, adam, or adam(b1,b2) with betas other than torch's
    lr: float
    momentum: float  # SGD's momentum; empty for Adam
    precision: str  # fp32, or bf16 autocast of the training forward pass
    setup_id: str  # hash of every training setting but the grid's axes: cells of one configuration share it
    # figures, all measured in eval mode on the whole split after training
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    test_loss: float  # classification: cross-entropy, i.e. the negative log-likelihood of the test labels
    test_acc: float
    gap_acc: float  # train_acc - test_acc
    gap_loss: float  # test_loss - train_loss
    test_ece: float  # expected calibration error, 15 equal-width bins (classification)
    mc_samples: int  # passes of MC dropout behind the *_mc figures (0: not measured)
    test_acc_mc: float
    test_loss_mc: float  # cross-entropy (NLL) of the mean of the MC passes' probabilities
    test_ece_mc: float
    # cost
    # Wall time of the training loop, per-epoch validation included (not loading, not the final measurement);
    # in a stack, the cell's share of it: each epoch's time split evenly among the members that trained in it.
    fit_seconds: float
    n_params: int
    # provenance
    status: str  # ok | diverged | failed
    error: str
    device: str
    threads: int
    host: str
    cpu: str
    dropbench_version: str
    torch_version: str
    sklearn_version: str
    python_version: str
    git_commit: str  # with "-dirty" when the working tree had uncommitted changes
    started_at: str  # UTC, ISO 8601
    schema_version: int = SCHEMA_VERSION


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow))
EPOCH_COLUMNS: tuple[str, ...] = ("cell_id", "epoch", "fit_loss", "val_loss", "val_acc")
TEXT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(ResultRow) if f.type is str)
# What each column holds, to read a file back into values (merge writes again what it reads).
# Field.type may be a string in general; ResultRow's annotations are classes (no `from __future__ import annotations`).
COLUMN_TYPES: dict[str, type] = {f.name: f.type for f in fields(ResultRow)}  # type: ignore[misc]
EPOCH_TYPES: dict[str, type] = {"cell_id": str, "epoch": int, "fit_loss": float, "val_loss": float, "val_acc": float}
KEEP_RATE_COLUMNS = ("keep_rate", "input_keep_rate")
# Whole-number columns with a value that means "not set", written as an empty cell: a 0 in train_size read like
# zero rows, not the whole training split (files of schema 4 and before wrote the 0; both read back as 0); a
# trial of -1 is a cell outside a tuned comparison (trial 0 is its first setting).
NO_TRIAL = -1
EMPTY_MEANS: dict[str, int] = {"train_size": 0, "trial": NO_TRIAL}
# Columns files of earlier schemas lack, and what reading them gives: the tuning columns of schema 6, empty.
ADDED_COLUMNS: dict[str, object] = {"method": "", "phase": ""}
# Columns of earlier schemas read under their current name; None: dropped (test_nll repeated test_loss).
RENAMED_COLUMNS: dict[str, str | None] = {"test_nll": None, "test_nll_mc": "test_loss_mc"}

# A spreadsheet evaluates a text cell that starts with one of these (OWASP's CSV-injection list), so such
# text is written behind an apostrophe; text that starts with an apostrophe gets one more, so that
# reading a cell back gives exactly the text that was written.
FORMULA_STARTS = ("=", "+", "-", "@", "\t")
ESCAPE = "'"


def format_value(value: object) -> str:
    """Floats at full precision (repr round-trips), NaN as an empty cell, text one line and formula-safe. A missing
    value of a nullable column (None, pandas' NA: `trial` outside a tuned comparison, as read_results gives it) is
    an empty cell too."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    text = str(value).replace("\r", " ").replace("\n", " ")
    return ESCAPE + text if text[:1] in (*FORMULA_STARTS, ESCAPE) else text


def read_text(cell: str) -> str:
    """The text format_value wrote as `cell` (its escaping apostrophe taken off)."""
    return cell[1:] if cell[:1] == ESCAPE and cell[1:2] in (*FORMULA_STARTS, ESCAPE) else cell


def parse_value(kind: type, cell: str) -> object:
    """The value of type `kind` that format_value wrote as `cell`; ValueError when the text is none. An
    infinity is refused: a figure dropbench could not measure is written as an empty cell (NaN)."""
    if kind is str:
        return read_text(cell)
    if kind is int:
        return int(cell)
    number = math.nan if cell == "" else float(cell)
    if math.isinf(number):
        raise ValueError(f"{cell!r} is not finite")
    return number


def cell_text(column: str, value: object) -> str:
    """`value` as written in `column` (format_value, with EMPTY_MEANS' "not set" as an empty cell)."""
    if value is None or value is pd.NA or (column in EMPTY_MEANS and value == EMPTY_MEANS[column]):
        return ""
    return format_value(value)


def cell_value(column: str, kind: type, cell: str) -> object:
    """The value cell_text wrote as `cell` in `column` (parse_value, with EMPTY_MEANS' empty cell as "not set")."""
    return EMPTY_MEANS[column] if column in EMPTY_MEANS and cell == "" else parse_value(kind, cell)


def stored_text(value: object) -> str:
    """`value` as reading its results file gives it back: format_value's text, unescaped."""
    return read_text(format_value(value))


def sidecar_paths(csv_path: Path) -> tuple[Path, Path]:
    """(NAME.epochs.csv, NAME.json) beside NAME.csv."""
    stem = csv_path.name.removesuffix(".csv")
    return csv_path.with_name(f"{stem}.epochs.csv"), csv_path.with_name(f"{stem}.json")


def results_files(paths: Iterable[str | Path], note: Callable[[str], None]) -> list[Path]:
    """The results CSVs among `paths`. A glob such as `results/run-*.csv` also matches each run's per-epoch
    sidecar (NAME.epochs.csv beside NAME.csv): such a file is skipped with a note, not read as results."""
    kept = []
    for path in map(Path, paths):
        results = path.with_name(path.name.removesuffix(".epochs.csv") + ".csv")
        if path.name.endswith(".epochs.csv") and results.is_file():
            note(f"{path}: skipped, the per-epoch sidecar of {results.name}")
            continue
        kept.append(path)
    if not kept:
        raise UserError(f"no results CSV among {', '.join(map(str, paths))}: only per-epoch sidecars")
    return kept


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not a dropbench CSV (not UTF-8 text)") from None


def _encode(rows: Iterable[Iterable[str]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue().encode("utf-8")


def table_bytes(columns: tuple[str, ...], rows: Iterable[dict[str, object]]) -> bytes:
    """A whole CSV file, header and rows, every value through cell_text."""
    return _encode([columns, *([cell_text(c, row[c]) for c in columns] for row in rows)])


def _records(path: Path, text: str, width: int) -> Iterable[tuple[int, list[str]]]:
    """(line number, fields) of each row after the header; a row of another width is a UserError."""
    reader = csv.reader(io.StringIO(text))
    try:
        next(reader, None)
        for record in reader:
            if not record:
                continue  # a blank line
            if len(record) != width:
                raise UserError(f"{path}: line {reader.line_num}: {len(record)} fields, expected {width}")
            yield reader.line_num, record
    except csv.Error as error:
        raise UserError(f"{path}: line {reader.line_num}: not a CSV line ({error})") from None


def read_table(path: Path, types: dict[str, type]) -> list[dict[str, object]]:
    """Every row of a dropbench CSV with these columns, as values (what CsvTable.append was given).
    Anything else is a UserError naming the file, and the line where there is one: other columns, a row
    of the wrong length, a figure that is not a number, bytes that are not text, a last line cut short."""
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    table = CsvTable(path, tuple(types))
    table.check_header()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise os_error(path, "read", error) from None
    if data and not data.endswith(b"\n"):
        raise UserError(f"{path}: its last line is cut short (a run killed while writing?); resume that run first")
    rows = []
    for line, record in _records(path, _decode(path, data), len(types)):
        row = {}
        for (column, kind), cell in zip(types.items(), record):
            try:
                row[column] = cell_value(column, kind, cell)
            except ValueError:
                expected = "a whole number" if kind is int else "a finite number or empty"
                raise UserError(f"{path}: line {line}: {column} is {cell[:40]!r}, not {expected}") from None
        rows.append(row)
    return rows


class CsvTable:
    """An append-only CSV with a fixed header, safe against concurrent writers, kills and interrupts."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path, self.columns = path, columns

    def header(self) -> tuple[str, ...] | None:
        """The file's first row (None for an empty file); bytes that are not text give a header no table has."""
        try:
            with open(self.path, "rb") as handle:
                first = handle.readline()
        except OSError as error:
            raise os_error(self.path, "read", error) from None
        if not first:
            return None
        return tuple(next(csv.reader([first.decode("utf-8", errors="replace").rstrip("\r\n")]), []))

    def check_header(self, *, any_version: bool = False) -> None:
        """Refuse a file that is not this table, before anything is written to it (an empty file is fine:
        it gets the header). `any_version`: a dropbench file of an earlier schema will do (to move it aside)."""
        header = self.header() if self.path.exists() else None
        if header is None or header == self.columns:
            return
        if any_version and header[:1] == ("cell_id",) and self.columns[1] in header:
            return
        raise UserError(
            f"{self.path}: its columns are not this dropbench's schema (version {SCHEMA_VERSION}), so dropbench "
            "leaves it alone: choose another file"
        )

    def append(self, rows: Iterable[dict[str, object]]) -> None:
        """Append rows (each value through cell_text) under the lock, as one fsynced write."""
        data = _encode([cell_text(c, row[c]) for c in self.columns] for row in rows)
        with append_lock(self.path):
            if self.path.exists():
                repair_torn_tail(self.path)
                self.check_header()
            if not self.path.exists() or self.path.stat().st_size == 0:
                data = (",".join(self.columns) + "\n").encode("utf-8") + data
            append_bytes(self.path, data)

    def read_rows(self) -> list[dict[str, str]]:
        """The rows as the file stores them (CSV text); a last line still being written is left out, so
        this reads without the lock and writes nothing."""
        if not self.path.exists():
            return []
        self.check_header()
        text = _decode(self.path, complete_lines(self.path))
        return [dict(zip(self.columns, record)) for _, record in _records(self.path, text, len(self.columns))]

    def keep_only(self, column: str, allowed: set[str]) -> None:
        """Rewrite the file without rows whose `column` is not in `allowed` (atomic replace). The rows kept
        are dropbench's own, written again byte for byte."""
        if not self.path.exists():
            return
        with append_lock(self.path):
            repair_torn_tail(self.path)
            rows = self.read_rows()
            kept = [r for r in rows if r[column] in allowed]
            if len(kept) == len(rows):
                return
            text = [self.columns, *([r[c] for c in self.columns] for r in kept)]
            replace_atomically(self.path, _encode(text))


def _is_run_metadata(path: Path) -> bool:
    """An absent or empty JSON sidecar, or one dropbench wrote: an object with its `runs` or `merged_from`."""
    if not path.exists():
        return True
    try:
        data = path.read_bytes()
    except OSError as error:
        raise os_error(path, "read", error) from None
    if not data.strip():
        return True
    try:
        meta = json.loads(data)
    except ValueError:
        return False
    return isinstance(meta, dict) and ("runs" in meta or "merged_from" in meta)


class ResultStore:
    """A results CSV with its sidecars: what is done, appending a finished cell, the run metadata."""

    def __init__(self, csv_path: Path) -> None:
        self.csv_path = csv_path
        self.epochs_path, self.meta_path = sidecar_paths(csv_path)
        self.rows = CsvTable(csv_path, COLUMNS)
        self.epochs = CsvTable(self.epochs_path, EPOCH_COLUMNS)

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return self.csv_path, self.epochs_path, self.meta_path

    def check_ours(self, *, any_version: bool = False) -> None:
        """Refuse, before anything is written, a results file or sidecar that exists but is not dropbench's:
        a run would append to it or overwrite it (a project's package.json beside package.csv, say)."""
        for path in self.paths:
            if path.exists() and not path.is_file():
                raise UserError(f"{path}: not a regular file; dropbench writes its results there: choose another --out")
            check_writable(path)
        self.rows.check_header(any_version=any_version)
        self.epochs.check_header(any_version=any_version)
        if not _is_run_metadata(self.meta_path):
            raise UserError(
                f"{self.meta_path}: not dropbench's run metadata, and a run into {self.csv_path} would "
                "overwrite it; nothing was changed: choose another --out"
            )

    def written(self) -> dict[str, dict[str, str]]:
        """cell_id -> its row, for every cell the file already holds (text cells unescaped: as written)."""
        rows = self.rows.read_rows()
        return {row["cell_id"]: {c: read_text(v) if c in TEXT_COLUMNS else v for c, v in row.items()} for row in rows}

    def forget(self, cell_ids: set[str]) -> None:
        """Remove these cells' rows and curves (to rerun them) without touching any other row."""
        keep = set(self.written()) - cell_ids
        self.rows.keep_only("cell_id", keep)
        self.epochs.keep_only("cell_id", keep)

    def drop_orphan_epochs(self, done: set[str]) -> None:
        """Curves of a cell killed before its row was written would be duplicated by its rerun."""
        self.epochs.keep_only("cell_id", done)

    def set_aside(self) -> Path | None:
        """Move the file and its sidecars to NAME.<UTC time>.bak.* (never deleted, never over an earlier
        backup); returns the new CSV path."""
        if not self.csv_path.exists():
            return None
        stem = self.csv_path.name.removesuffix(".csv")
        suffixes = (".csv", ".epochs.csv", ".json")
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        tag, copy = stamp, 1
        while any(self.csv_path.with_name(f"{stem}.{tag}.bak{s}").exists() for s in suffixes):
            copy += 1
            tag = f"{stamp}-{copy}"
        moved = None
        for path, suffix in zip(self.paths, suffixes):
            if path.exists():
                target = path.with_name(f"{stem}.{tag}.bak{suffix}")
                try:
                    os.replace(path, target)
                except OSError as error:
                    raise os_error(path, "move aside", error) from None
                moved = moved or target
        return moved

    def append(self, row: ResultRow, curves: Iterable[dict[str, object]]) -> None:
        """Curves first, then the row: the row is the commit mark of a finished cell."""
        self.epochs.append(curves)
        self.rows.append([asdict(row)])

    def read_metadata(self) -> dict:
        if not self.meta_path.exists():
            return {}
        try:
            meta = json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def write_metadata(self, metadata: dict) -> None:
        replace_atomically(self.meta_path, (json.dumps(metadata, indent=2, default=str) + "\n").encode("utf-8"))


def _numbers(frame: pd.DataFrame, path: Path, types: dict[str, type]) -> pd.DataFrame:
    """The frame's numeric columns as numbers; text that is not one, an infinity, or a keep rate outside
    (0, 1] is a UserError naming the file, line and column (reports would otherwise fail deep inside)."""
    frame = frame.copy()
    for column in (c for c in frame.columns if types.get(c) in (int, float)):
        raw = frame[column]
        numbers = pd.to_numeric(raw, errors="coerce")
        spelled_nan = raw.astype(str).str.strip().str.lower().isin(["", "nan"])
        problems = [
            (numbers.isna() & raw.notna() & ~spelled_nan, "not a number"),
            (numbers.isin([math.inf, -math.inf]), "not finite"),
        ]
        if column in KEEP_RATE_COLUMNS:
            problems.append((~numbers.between(0, 1, inclusive="right"), "not a keep rate in (0, 1]"))
        for bad, what in problems:
            if bad.any():
                index = int(bad.to_numpy().argmax())
                cell = "" if pd.isna(raw.iloc[index]) else str(raw.iloc[index])[:40]
                raise UserError(f"{path}: line {index + 2}: {column} is {cell!r}, {what}")
        frame[column] = numbers
    return frame


def _read_csv(path: Path, **options: object) -> pd.DataFrame:
    """pandas' read of one CSV, its failures as one UserError naming the file."""
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"{path}: not a readable dropbench CSV: {reason}") from None
    except OSError as error:
        raise os_error(path, "read", error) from None


def read_results(*paths: str | Path) -> pd.DataFrame:
    """Read one or more results CSVs into one DataFrame (text columns as text, empty cells as NaN), files of
    earlier schemas in the current one's columns (RENAMED_COLUMNS, ADDED_COLUMNS) and train_size 0 for the whole
    split. `trial` is a nullable integer (pandas' Int64): empty (<NA>) for cells outside a tuned comparison."""
    frames = []
    for path in map(Path, paths):
        frame = _read_csv(
            path,
            dtype={c: "string" for c in TEXT_COLUMNS},
            keep_default_na=False,
            na_values={c: [""] for c in COLUMNS if c not in TEXT_COLUMNS},
        )
        missing = [c for c in ("cell_id", "task", "regularizer", "keep_rate", "status") if c not in frame.columns]
        if missing:
            raise UserError(f"{path}: not a dropbench results CSV (missing columns: {', '.join(missing)})")
        for column in (c for c in TEXT_COLUMNS if c in frame.columns):
            frame[column] = frame[column].map(read_text, na_action="ignore").astype("string")
        frame = frame.drop(columns=[old for old, new in RENAMED_COLUMNS.items() if new is None and old in frame])
        frame = frame.rename(columns={old: new for old, new in RENAMED_COLUMNS.items() if new is not None})
        frame = _numbers(frame, path, COLUMN_TYPES)
        if "train_size" in frame:
            frame["train_size"] = frame["train_size"].fillna(0).astype(int)
        for column, empty in ADDED_COLUMNS.items():
            if column not in frame:
                frame[column] = pd.Series(empty, index=frame.index, dtype="string")
        frame["trial"] = frame["trial"].astype("Int64") if "trial" in frame else pd.Series(pd.NA, frame.index, "Int64")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def require_rows(frame: pd.DataFrame, paths: Iterable[str | Path]) -> pd.DataFrame:
    """The frame, refused when it holds no row (a header-only file: a shard with no cells, a killed run)."""
    if frame.empty:
        raise UserError(
            f"no results rows in {', '.join(map(str, paths))}: a header only (a shard that got no cells, "
            "or a run stopped before its first cell)"
        )
    return frame


def read_epochs(*paths: str | Path) -> pd.DataFrame | None:
    """The per-epoch curves beside these results files (None when none has any)."""
    frames = []
    for epochs in (sidecar_paths(Path(p))[0] for p in paths):
        if not epochs.is_file():
            continue
        frame = _read_csv(epochs, dtype={"cell_id": "string"}, keep_default_na=False, na_values=[""])
        missing = [c for c in EPOCH_COLUMNS if c not in frame.columns]
        if missing:
            raise UserError(f"{epochs}: not a dropbench epochs CSV (missing columns: {', '.join(missing)})")
        frames.append(_numbers(frame, epochs, EPOCH_TYPES))
    return pd.concat(frames, ignore_index=True) if frames else None
