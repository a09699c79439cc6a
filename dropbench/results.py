"""The CSV schema (defined once, here), locked appends, resume and the epochs/metadata sidecars.

A results file `NAME.csv` has two siblings: `NAME.epochs.csv` (per-epoch curves keyed by cell_id and
epoch) and `NAME.json` (run metadata). Rows are appended under a file lock and flushed per cell, so a
killed run loses at most the cell in flight and a rerun into the same file continues where it stopped.
Every value goes through format_value on its way into a file and through parse_value on its way back
(`cell_text` and `cell_value`, which know the columns whose 0 is written as an empty cell).
Files of earlier schemas are read into the current one's columns (`read_results`, and `upgrade_record` for the
text rows that resume and merge read); `upgrade.py` rewrites such a file in place.

What a spreadsheet does to a CSV shapes how cells are written: ids carry a letter (ids.py), and text a spreadsheet
would evaluate or read as a number, date or truth value goes behind an apostrophe (`format_value`).
"""

import csv
import functools
import io
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

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
from .ids import ID_PREFIXES, upgrade_id

# 2: provenance columns python/scikit-learn versions, host, cpu, threads
# 3: layer_keep_rates, train_size, calibration (test_nll, test_ece) and MC dropout columns
# 4: momentum, precision, setup_id: a configuration is everything that changes training
# 5: test_nll dropped (it was test_loss again), test_nll_mc renamed test_loss_mc, train_size empty for the whole split
# 6: method, phase, trial: the cells of a tuned comparison (suite [tuning]); empty for ordinary grids
# 7: cell_id and setup_id behind a letter ('c', 's'; ids.py) and text that looks like a number, date or truth value
#    behind an apostrophe, so that a spreadsheet's round trip changes nothing; the columns are 6's
SCHEMA_VERSION = 7
# A resume or a merge needs every column a row of this schema has; momentum, precision and setup_id came with 4,
# so files of 4 to 6 are brought to this schema (upgrade_record), files of 3 with their suite's help (SUITE_COLUMNS),
# and earlier ones are only read by reports.


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
# Text a spreadsheet opening the CSV reads as a value, and so shows and saves changed: digits with separators
# ('0.8/0.5' and '12-31' become dates, '1e-05' the number 1E-05, '3.11.2' a date where '.' separates dates,
# '50%' 0.5), a day beside a month's name ('Jan 5', 'SEPT2'), and truth values. Such text from a str column goes
# behind the apostrophe too: LibreOffice and Excel keep a CSV cell that starts with one as text, apostrophe
# included, so a round trip through them gives the file's text back. (Numbers are numbers: the float columns.)
_DIGITS_AND_SEPARATORS = re.compile(r"[\d\s.,:/+\-eE%$()]*\d[\d\s.,:/+\-eE%$()]*")
_MONTH = (
    r"(jan(uary)?|feb(ruary)?|mar(ch)?|apr(il)?|may|june?|july?|aug(ust)?|sept?(ember)?|oct(ober)?|nov(ember)?"
    r"|dec(ember)?)"
)
_DAY_AND_MONTH = re.compile(rf"(\d{{1,4}}[\s./-]*{_MONTH}\.?([\s./,-]*\d{{1,4}})?|{_MONTH}\.?[\s./,-]*\d{{1,4}})", re.I)
_TRUTH_VALUES = ("true", "false")


def spreadsheet_reads_as_value(text: str) -> bool:
    """Whether a spreadsheet opening a CSV would read this text cell as a number, date, time or truth value."""
    stripped = text.strip()
    return bool(
        _DIGITS_AND_SEPARATORS.fullmatch(stripped)
        or _DAY_AND_MONTH.fullmatch(stripped)
        or stripped.lower() in _TRUTH_VALUES
    )


def _escaped(text: str) -> bool:
    """Whether format_value writes `text` behind an apostrophe (true of any text that starts with one)."""
    return text[:1] in (*FORMULA_STARTS, ESCAPE) or spreadsheet_reads_as_value(text)


def format_value(value: object) -> str:
    """Floats at full precision (repr round-trips), NaN as an empty cell, text one line and safe to open in a
    spreadsheet (see FORMULA_STARTS and spreadsheet_reads_as_value). A missing value of a nullable column (None,
    pandas' NA: `trial` outside a tuned comparison, as read_results gives it) is an empty cell too."""
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    text = str(value).replace("\r", " ").replace("\n", " ")
    if isinstance(value, str):
        return ESCAPE + text if _escaped(text) else text
    return ESCAPE + text if text[:1] in (*FORMULA_STARTS, ESCAPE) else text


def read_text(cell: str) -> str:
    """The text format_value wrote as `cell` (its escaping apostrophe taken off). Files of schema 6 and before
    escaped formula starts only, and read back the same: their other text never starts with an apostrophe."""
    return cell[1:] if cell[:1] == ESCAPE and _escaped(cell[1:]) else cell


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


# Columns of this schema that schema 3 lacks (they came with 4), which a row cannot do without: the suite its cell
# belongs to knows them (upgrade.suite_fill), so a run of that suite, or `migrate --suite`, brings such a file here.
SUITE_COLUMNS = ("momentum", "precision", "setup_id")
# A row's SUITE_COLUMNS as file text, from the row's other cells (its cell_id); a UserError for a cell it does not know.
Fill = Callable[[dict[str, str]], dict[str, str]]


class Upgrade(Protocol):
    """How rows of a CSV of an earlier schema are read as this one's (CsvTable, read_table)."""

    def problem(self, header: tuple[str, ...]) -> str | None:
        """Why rows under this header cannot be read as this schema's; None when they can."""

    def __call__(self, header: tuple[str, ...], record: list[str]) -> list[str]:
        """The record under `header`, as this schema writes it (text, in this table's columns)."""


@dataclass(frozen=True)
class RowUpgrade:
    """Results rows of schemas 4 to 6 read as this schema's (upgrade_record); with `fill`, rows of schema 3 too."""

    fill: Fill | None = None

    def problem(self, header: tuple[str, ...]) -> str | None:
        return upgrade_problem(header, SUITE_COLUMNS if self.fill is not None else ())

    def __call__(self, header: tuple[str, ...], record: list[str]) -> list[str]:
        return upgrade_record(header, record, self.fill)


class EpochUpgrade:
    """Per-epoch rows: the columns never changed; the cell_id gets its letter."""

    def problem(self, header: tuple[str, ...]) -> str | None:
        return None if header == EPOCH_COLUMNS else "other columns"

    def __call__(self, header: tuple[str, ...], record: list[str]) -> list[str]:
        cells = dict(zip(header, record))
        cells["cell_id"] = upgrade_id("cell_id", cells["cell_id"])
        return [cells[c] for c in EPOCH_COLUMNS]


def upgrade_problem(header: tuple[str, ...], filled: tuple[str, ...] = ()) -> str | None:
    """Why rows under this results header cannot be brought to this schema (the columns they lack, besides the
    `filled` ones a suite supplies); None when they can (schema 4 and later; 3 with SUITE_COLUMNS filled)."""
    have = {RENAMED_COLUMNS.get(c, c) for c in header} | set(ADDED_COLUMNS) | {"trial", *filled}
    missing = [c for c in COLUMNS if c not in have]
    return f"no {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''} column" if missing else None


def upgrade_record(header: tuple[str, ...], record: list[str], fill: Fill | None = None) -> list[str]:
    """A results row as text under `header` (this schema's, or an earlier one upgrade_problem accepts), as this
    schema writes it: the columns renamed and added since (SUITE_COLUMNS from `fill`), ids behind their letter
    (ids.upgrade_id), text escaped by format_value's rule, schema_version this one's. Figures are left as the file
    wrote them, byte for byte."""
    cells = dict(zip(header, record))
    for old, new in RENAMED_COLUMNS.items():
        if old in cells:
            value = cells.pop(old)
            if new is not None:
                cells[new] = value
    if cells.get("train_size") == "0":
        cells["train_size"] = ""  # schema 4 wrote 0 for the whole training split; EMPTY_MEANS reads both as 0
    for column in (*ADDED_COLUMNS, "trial"):
        cells.setdefault(column, "")
    cells["cell_id"] = upgrade_id("cell_id", cells["cell_id"])
    if fill is not None and any(column not in cells for column in SUITE_COLUMNS):
        cells = {**fill(cells), **cells}
    cells["setup_id"] = upgrade_id("setup_id", cells["setup_id"])
    for column in TEXT_COLUMNS:
        cells[column] = format_value(read_text(cells[column]))
    cells["schema_version"] = str(SCHEMA_VERSION)
    return [cells[c] for c in COLUMNS]


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


def read_table(path: Path, types: dict[str, type], upgrade: Upgrade | None = None) -> list[dict[str, object]]:
    """Every row of a dropbench CSV with these columns, as values (what CsvTable.append was given); with
    `upgrade`, also a file of an earlier schema it brings to these columns (upgrade_record).
    Anything else is a UserError naming the file, and the line where there is one: other columns, a row
    of the wrong length, a figure that is not a number, bytes that are not text, a last line cut short."""
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    table = CsvTable(path, tuple(types), upgrade)
    header = table.readable_header()
    try:
        data = path.read_bytes()
    except OSError as error:
        raise os_error(path, "read", error) from None
    if data and not data.endswith(b"\n"):
        raise UserError(f"{path}: its last line is cut short (a run killed while writing?); resume that run first")
    rows = []
    for line, record in _records(path, _decode(path, data), len(header)):
        record = upgrade(header, record) if upgrade else record
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
    """An append-only CSV with a fixed header, safe against concurrent writers, kills and interrupts. With
    `upgrade` (upgrade_record), rows of an earlier schema are read as this one's; appends need this one's header."""

    def __init__(self, path: Path, columns: tuple[str, ...], upgrade: Upgrade | None = None) -> None:
        self.path, self.columns, self.upgrade = path, columns, upgrade

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
        raise UserError(self._not_this_table(header))

    def readable_header(self) -> tuple[str, ...]:
        """The file's header (this table's columns for an empty file), when its rows can be read as this table's:
        its own columns, or an earlier schema's that `upgrade` brings to them; anything else is a UserError."""
        header = self.header() if self.path.exists() else None
        if header is None or header == self.columns:
            return self.columns
        if self.upgrade is not None and header[:1] == ("cell_id",) and self.upgrade.problem(header) is None:
            return header
        raise UserError(self._not_this_table(header))

    def _not_this_table(self, header: tuple[str, ...]) -> str:
        """One line saying what the file is instead, and what to do."""
        if self.columns == COLUMNS and header == EPOCH_COLUMNS:
            return f"{self.path}: per-epoch curves (a results file's .epochs.csv sidecar), not a results file"
        if self.columns == COLUMNS and header[:1] == ("cell_id",) and "schema_version" in header:
            version = schema_of(self.path, header)
            lacks = upgrade_problem(header) or "other columns"
            if upgrade_problem(header, SUITE_COLUMNS) is None:  # schema 3: its suite knows what it lacks
                return (
                    f"{self.path}: results of dropbench schema {version} ({lacks}); report, compare and plot read "
                    f"it; a run of the suite it came from, or `dropbench migrate {self.path} --suite SUITE`, "
                    f"rewrites it in schema {SCHEMA_VERSION}, which merge takes"
                )
            return (
                f"{self.path}: results of dropbench schema {version} ({lacks}); report, compare and plot read "
                f"it, but a run, merge or migrate needs schema 3 to {SCHEMA_VERSION} (run --fresh sets it aside "
                "and starts again)"
            )
        kinds = {COLUMNS: "a dropbench results file", EPOCH_COLUMNS: "a dropbench per-epoch file"}
        kind = kinds.get(self.columns, "this table")
        return (
            f"{self.path}: not {kind} (its columns are not this dropbench's {','.join(self.columns[:3])},... of "
            f"schema {SCHEMA_VERSION}), so dropbench leaves it alone: choose another file"
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
        """The rows as the file stores them (CSV text), through `upgrade` where the table has one; a last line
        still being written is left out, so this reads without the lock and writes nothing."""
        if not self.path.exists():
            return []
        header = self.readable_header()
        text = _decode(self.path, complete_lines(self.path))
        records = (record for _, record in _records(self.path, text, len(header)))
        if self.upgrade is not None:
            records = (self.upgrade(header, record) for record in records)
        return [dict(zip(self.columns, record)) for record in records]

    def rewrite_upgraded(self) -> bool:
        """Rewrite the file as `upgrade` reads it (atomic replace), when that changes a byte; True when it did."""
        if not self.path.exists():
            return False
        with append_lock(self.path):
            repair_torn_tail(self.path)
            rows = self.read_rows()
            data = _encode([self.columns, *([r[c] for c in self.columns] for r in rows)])
            try:
                if self.path.read_bytes() == data:
                    return False
            except OSError as error:
                raise os_error(self.path, "read", error) from None
            replace_atomically(self.path, data)
            return True

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


def schema_of(path: Path, header: tuple[str, ...]) -> str:
    """The schema_version its first row gives ('?' when it has none)."""
    try:
        with open(path, encoding="utf-8", errors="replace", newline="") as handle:
            reader = csv.reader(handle)
            next(reader, None)
            first = next(reader, None)
    except (OSError, csv.Error):
        return "?"
    index = header.index("schema_version")
    return first[index] if first is not None and index < len(first) and first[index].isdigit() else "?"


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
    """A results CSV with its sidecars: what is done, appending a finished cell, the run metadata. `fill` reads rows
    of schema 3 as well (RowUpgrade)."""

    def __init__(self, csv_path: Path, fill: Fill | None = None) -> None:
        self.csv_path = csv_path
        self.epochs_path, self.meta_path = sidecar_paths(csv_path)
        self.rows = CsvTable(csv_path, COLUMNS, RowUpgrade(fill))
        self.epochs = CsvTable(self.epochs_path, EPOCH_COLUMNS, EpochUpgrade())

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
        for column in (c for c in ID_PREFIXES if c in frame.columns):
            upgrade = functools.partial(upgrade_id, column)
            frame[column] = frame[column].map(upgrade, na_action="ignore").astype("string")
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
        frame["cell_id"] = frame["cell_id"].map(functools.partial(upgrade_id, "cell_id"), na_action="ignore")
        frames.append(_numbers(frame, epochs, EPOCH_TYPES))
    return pd.concat(frames, ignore_index=True) if frames else None
