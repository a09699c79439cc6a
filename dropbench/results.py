"""The CSV schema (defined once, here), locked appends, resume and the epochs/metadata sidecars.

A results file `NAME.csv` has two siblings: `NAME.epochs.csv` (per-epoch curves keyed by cell_id and
epoch) and `NAME.json` (run metadata). Rows are appended under a file lock and flushed per cell, so a
killed run loses at most the cell in flight and a rerun into the same file continues where it stopped.
"""

import csv
import io
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TextIO

import pandas as pd
from filelock import FileLock

from .errors import UserError

# 2: provenance columns python/scikit-learn versions, host, cpu, threads
# 3: layer_keep_rates, train_size, calibration (test_nll, test_ece) and MC dropout columns
# 4: momentum, precision, setup_id: a configuration is everything that changes training
SCHEMA_VERSION = 4


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
    train_size: int  # 0: the whole training split; n: a stratified subsample of n rows of it
    seed: int
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
    test_loss: float
    test_acc: float
    gap_acc: float  # train_acc - test_acc
    gap_loss: float  # test_loss - train_loss
    test_nll: float  # negative log-likelihood of the test labels (= test_loss for classification)
    test_ece: float  # expected calibration error, 15 equal-width bins
    mc_samples: int  # passes of MC dropout behind the *_mc figures (0: not measured)
    test_acc_mc: float
    test_nll_mc: float
    test_ece_mc: float
    # cost
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


def format_value(value: object) -> str:
    """Floats at full precision (repr round-trips), NaN as an empty cell, text one line and formula-safe."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    text = str(value).replace("\r", " ").replace("\n", " ")
    # A spreadsheet would evaluate a text cell that starts like a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def sidecar_paths(csv_path: Path) -> tuple[Path, Path]:
    """(NAME.epochs.csv, NAME.json) beside NAME.csv."""
    stem = csv_path.name.removesuffix(".csv")
    return csv_path.with_name(f"{stem}.epochs.csv"), csv_path.with_name(f"{stem}.json")


def _lock(path: Path) -> FileLock:
    return FileLock(str(path.with_name(f".{path.name}.lock")))


def _repair_torn_tail(path: Path) -> None:
    """Drop a last line left half-written by a killed process (the file must end with a newline)."""
    with open(path, "rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        handle.seek(0)
        keep = handle.read().rfind(b"\n") + 1
        handle.truncate(keep)


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold Ctrl-C (and SIGTERM) back while a row is written, so an interrupt never tears a line.

    Only the main thread can block signals; elsewhere (and on Windows) this does nothing, and a torn
    last line from a hard kill is still repaired by the next write.
    """
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _write_rows(handle: TextIO, text: str) -> None:
    # Test hook: DROPBENCH_TEST_WRITE_PAUSE=SECONDS writes each batch of rows in two halves with a pause
    # between, so the kill test can land a SIGKILL in the middle of a line. Unset in normal use.
    pause = float(os.environ.get("DROPBENCH_TEST_WRITE_PAUSE", "0") or 0)
    if pause <= 0:
        handle.write(text)
        return
    half = len(text) // 2
    handle.write(text[:half])
    handle.flush()
    time.sleep(pause)
    handle.write(text[half:])


class CsvTable:
    """An append-only CSV with a fixed header, safe against concurrent writers and kills."""

    def __init__(self, path: Path, columns: tuple[str, ...]) -> None:
        self.path, self.columns = path, columns

    def _check_header(self) -> None:
        with open(self.path, newline="", encoding="utf-8") as handle:
            header = next(csv.reader(handle), None)
        if header is not None and tuple(header) != self.columns:
            raise UserError(
                f"{self.path}: its columns are not this dropbench's schema (version {SCHEMA_VERSION}); "
                "write to a new --out file"
            )

    def append(self, rows: Iterable[dict[str, object]], *, verbatim: bool = False) -> None:
        """Append rows under the lock, flushed and fsynced. `verbatim`: the values are already CSV text
        (rows read from another results file), written as they are."""
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        convert = str if verbatim else format_value
        writer.writerows([convert(row[c]) for c in self.columns] for row in rows)
        with _lock(self.path):
            exists = self.path.exists()
            if exists:
                _repair_torn_tail(self.path)
                self._check_header()
            with _signals_deferred(), open(self.path, "a", newline="", encoding="utf-8") as handle:
                if not exists or handle.tell() == 0:
                    handle.write(",".join(self.columns) + "\n")
                _write_rows(handle, buffer.getvalue())
                handle.flush()
                os.fsync(handle.fileno())

    def read_rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        with _lock(self.path):
            _repair_torn_tail(self.path)
            self._check_header()
            with open(self.path, newline="", encoding="utf-8") as handle:
                return list(csv.DictReader(handle))

    def keep_only(self, column: str, allowed: set[str]) -> None:
        """Rewrite the file without rows whose `column` is not in `allowed` (atomic replace)."""
        if not self.path.exists():
            return
        with _lock(self.path):
            _repair_torn_tail(self.path)
            with open(self.path, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            kept = [r for r in rows if r[column] in allowed]
            if len(kept) == len(rows):
                return
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            with open(tmp, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns, lineterminator="\n")
                writer.writeheader()
                writer.writerows(kept)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)


class ResultStore:
    """A results CSV with its sidecars: what is done, appending a finished cell, the run metadata."""

    def __init__(self, csv_path: Path) -> None:
        self.csv_path = csv_path
        self.epochs_path, self.meta_path = sidecar_paths(csv_path)
        self.rows = CsvTable(csv_path, COLUMNS)
        self.epochs = CsvTable(self.epochs_path, EPOCH_COLUMNS)

    def written(self) -> dict[str, dict[str, str]]:
        """cell_id -> its row, for every cell the file already holds."""
        return {row["cell_id"]: row for row in self.rows.read_rows()}

    def forget(self, cell_ids: set[str]) -> None:
        """Remove these cells' rows and curves (to rerun them) without touching any other row."""
        keep = set(self.written()) - cell_ids
        self.rows.keep_only("cell_id", keep)
        self.epochs.keep_only("cell_id", keep)

    def drop_orphan_epochs(self, done: set[str]) -> None:
        """Curves of a cell killed before its row was written would be duplicated by its rerun."""
        self.epochs.keep_only("cell_id", done)

    def set_aside(self) -> Path | None:
        """Move the file and its sidecars to NAME.<UTC time>.bak.* (never deleted); returns the new CSV path."""
        if not self.csv_path.exists():
            return None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        stem = self.csv_path.name.removesuffix(".csv")
        moved = None
        for path, suffix in ((self.csv_path, ".csv"), (self.epochs_path, ".epochs.csv"), (self.meta_path, ".json")):
            if path.exists():
                target = path.with_name(f"{stem}.{stamp}.bak{suffix}")
                os.replace(path, target)
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
            return json.loads(self.meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def write_metadata(self, metadata: dict) -> None:
        tmp = self.meta_path.with_name(f".{self.meta_path.name}.tmp")
        tmp.write_text(json.dumps(metadata, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.meta_path)


def read_results(*paths: str | Path) -> pd.DataFrame:
    """Read one or more results CSVs into one DataFrame (text columns as text, empty cells as NaN)."""
    frames = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"results file not found: {path}")
        try:
            frame = pd.read_csv(path, dtype={c: "string" for c in TEXT_COLUMNS}, keep_default_na=False,
                                na_values={c: [""] for c in COLUMNS if c not in TEXT_COLUMNS})  # fmt: skip
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
            raise UserError(f"{path}: not a readable results CSV: {error}") from None
        missing = [c for c in ("cell_id", "task", "regularizer", "keep_rate", "status") if c not in frame.columns]
        if missing:
            raise UserError(f"{path}: not a dropbench results CSV (missing columns: {', '.join(missing)})")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def read_epochs(*paths: str | Path) -> pd.DataFrame | None:
    """The per-epoch curves beside these results files (None when none has any)."""
    frames = [
        pd.read_csv(epochs, dtype={"cell_id": "string"})
        for epochs in (sidecar_paths(Path(p))[0] for p in paths)
        if epochs.is_file()
    ]
    return pd.concat(frames, ignore_index=True) if frames else None
