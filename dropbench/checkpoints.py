"""A training's state between two halving rungs: the trial that goes on continues where its rung ended.

A successive-halving rung's cell is the first `Cell.epoch_limit` epochs of its trial's training
(`Cell.training_id`). When it ends, the trainer hands back a `TrainingState`: everything the training carries from
one epoch to the next (weights, optimizer state with its momentum buffers, every random generator's state, the
state of each regularizer part that keeps one (`Regularizer.state`: mixup's streams, a plugin's), the
early-stopping tracker with its best weights, the curves so far). The schedules need no state of their own: they
are functions of the epoch (`Training.epoch`, restored from `epoch`) and the full training's length, which a
rung's cell keeps (`TaskConfig.epochs`). The next rung's cell of the same training starts from it and trains only
the epochs its rung adds. Continuing gives bit for bit the row that training the cell from scratch gives
(tests/test_checkpoints.py), so a checkpoint is a pure cache: a missing or unusable one only costs the epochs it
would have saved.

The driver (the runner) owns the checkpoints, in `NAME.checkpoints/` beside the results file (`CheckpointStore`):
one file per training, `<training_id>.pt`, replaced as the training goes from rung to rung, removed when the
training reaches its last rung or its trial stops, the folder removed when the tuning phase is complete. A work
unit carries a cell's `Start` (the state as bytes) to the worker and its result carries the end state back, so
Ray workers on other machines need no shared disk. States travel and are stored as `torch.save` bytes, read back
with `torch.load(weights_only=True)`: tensors and plain values only, never code.
"""

import io
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .config import Cell
from .errors import UserError
from .files import interrupts_held, os_error
from .provenance import package_version

FORMAT = 2  # the layout of a saved state; a file of another layout is not read (it is a cache: retrained instead)
# Named by training_id ('c' and 12 hex digits). Schema 6 named them by the 12 digits alone: such a file is no
# training's of this schema, so it is never read (its rung trains again, to the same figures) and keep_only prunes it.
CHECKPOINT_NAME = re.compile(r"c?[0-9a-f]{12}\.pt")  # the files CheckpointStore writes; it touches no other
PARTIAL_NAME = re.compile(r"\.c?[0-9a-f]{12}\.pt\.tmp")  # one being written (left by a kill: removed, never read)
Curve = tuple[int, float, float, float]  # train.EpochRecord's fields: epoch, fit_loss, val_loss, val_acc


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in tensors.items()}


def _stamp() -> dict[str, str]:
    """What must be equal for a state to continue a training bit for bit: the code and torch that trained it."""
    return {"dropbench": package_version("dropbench"), "torch": str(torch.__version__)}  # str: TorchVersion is a class


@dataclass
class TrainingState:
    """A cell's training after its first `epoch` epochs, as both trainers save and resume it (train.py, stacked.py).

    Weights and optimizer state are in a single `Network`'s layout (parameter names of `named_parameters()`, nn.Linear
    weights [out, in]), whichever trainer wrote them, so a state of the stacked trainer resumes in the single-cell one
    and back. `optimizer` holds torch's per-parameter state (SGD's momentum_buffer; Adam's step, exp_avg,
    exp_avg_sq) by parameter name."""

    training_id: str
    epoch: int  # epochs trained
    stopped: bool  # early stopping ended the training after `epoch`: nothing more to train
    weights: dict[str, torch.Tensor]  # the current weights (not the best: training goes on from these)
    optimizer: dict[str, dict[str, torch.Tensor]]
    order: torch.Tensor  # the batch-order generator's state
    masks: torch.Tensor  # the mask generator's state
    best_loss: float  # the early-stopping tracker (regularizers.EarlyStopping)
    best_epoch: int
    best_weights: dict[str, torch.Tensor] | None
    curves: list[Curve]
    fit_seconds: float  # training time so far, so a continued cell's fit_seconds counts the whole training
    device: str  # the device type the random streams ran on: a CUDA generator's state is not a CPU one's
    # The torch thread count its numbers are those of (threads.figures_threads): one under --threads auto, whatever
    # the count it ran at; a fixed --threads N's N. Another count could change a sum's last bits.
    threads: int
    # The regularizer parts' own state (`Regularizer.state`: mixup's generators, a plugin's), by part name; only
    # parts that keep state (`Regularizer.keeps_state`) are here, and those never train in a stack.
    parts: dict[str, dict[str, object]] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        """The state as torch.save writes it, every tensor on the CPU."""
        payload = {
            "format": FORMAT,
            "stamp": _stamp(),
            "training_id": self.training_id,
            "epoch": self.epoch,
            "stopped": self.stopped,
            "weights": _cpu(self.weights),
            "optimizer": {name: _cpu_state(state) for name, state in self.optimizer.items()},
            "order": self.order.cpu(),
            "masks": self.masks.cpu(),
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "best_weights": None if self.best_weights is None else _cpu(self.best_weights),
            "curves": [list(point) for point in self.curves],
            "fit_seconds": self.fit_seconds,
            "device": self.device,
            "threads": self.threads,
            "parts": self.parts,
        }
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "TrainingState":
        """A state from to_bytes' output; ValueError for anything else (another format, a torn or foreign file)."""
        try:
            payload = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
        except Exception as error:  # noqa: BLE001 - torch raises many kinds for a file that is not its own
            raise ValueError(f"not a training state: {type(error).__name__}") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError("not a training state of this format")
        if payload.get("stamp") != _stamp():
            raise ValueError(f"saved by {payload.get('stamp')}, not by this dropbench and torch")
        try:
            return cls(
                training_id=str(payload["training_id"]),
                epoch=int(payload["epoch"]),
                stopped=bool(payload["stopped"]),
                weights=payload["weights"],
                optimizer=payload["optimizer"],
                order=payload["order"],
                masks=payload["masks"],
                best_loss=float(payload["best_loss"]),
                best_epoch=int(payload["best_epoch"]),
                best_weights=payload["best_weights"],
                curves=[(int(e), float(f), float(v), float(a)) for e, f, v, a in payload["curves"]],
                fit_seconds=float(payload["fit_seconds"]),
                device=str(payload["device"]),
                threads=int(payload["threads"]),
                parts=dict(payload["parts"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"a training state with a bad field: {error}") from None


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Non-tensor values (an SGD momentum buffer of None) are kept as they are.
    return {
        key: value.detach().to("cpu", copy=True) if isinstance(value, torch.Tensor) else value
        for key, value in state.items()
    }


@dataclass(frozen=True)
class Start:
    """Where a cell's training resumes: a `TrainingState` of its first `epoch` epochs, as bytes (what a work unit
    carries to a worker process or a Ray node). `stopped`: early stopping had ended it, nothing is left to train."""

    epoch: int
    stopped: bool
    data: bytes

    @classmethod
    def of(cls, state: TrainingState) -> "Start":
        return cls(state.epoch, state.stopped, state.to_bytes())

    def state(self) -> TrainingState:
        return TrainingState.from_bytes(self.data)


def checkpoint_folder(csv_path: Path) -> Path:
    """NAME.checkpoints beside NAME.csv: where a halving run keeps its trainings' states between rungs."""
    return csv_path.with_name(csv_path.name.removesuffix(".csv") + ".checkpoints")


class CheckpointStore:
    """The driver's checkpoints of one results file (see the module docstring): one file per training, named by
    its `training_id`. Only files named as it names them are ever read or removed; the folder is removed only
    when it is empty. `device` and `threads` are the executor's: a state trained otherwise is not used."""

    def __init__(self, csv_path: Path, device: str, threads: int, note: Callable[[str], None] = lambda _: None) -> None:
        self.folder = checkpoint_folder(csv_path)
        self.device, self.threads, self.note = device, threads, note

    def path(self, training_id: str) -> Path:
        return self.folder / f"{training_id}.pt"

    def start(self, cell: Cell) -> Start | None:
        """The state `cell` continues from: its training's checkpoint, if it holds no more epochs than the cell
        trains and was trained as this run trains (device, threads, versions); else None (train from scratch)."""
        path = self.path(cell.training_id)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as error:
            raise os_error(path, "read", error) from None
        try:
            state = TrainingState.from_bytes(data)
        except ValueError as error:
            self.note(f"checkpoint {path.name} not used ({error}): {cell.describe()} trains from scratch")
            return None
        usable = (
            state.training_id == cell.training_id
            and state.epoch <= cell.epochs
            and state.device == torch.device(self.device).type
            and state.threads == self.threads
        )
        return Start(state.epoch, state.stopped, data) if usable else None

    def save(self, cell: Cell, data: bytes) -> None:
        """Keep `data` (a TrainingState's bytes) as the checkpoint of `cell`'s training, replacing any before."""
        try:
            self.folder.mkdir(exist_ok=True)
        except OSError as error:
            raise os_error(self.folder, "create the folder", error) from None
        path = self.path(cell.training_id)
        partial = path.with_name(f".{path.name}.tmp")
        # Renamed into place whole, but not fsynced (a row is, per cell): a checkpoint is a cache, and one a crash
        # left empty or torn is refused when read, so its cell trains from scratch to the same numbers.
        try:
            with interrupts_held():
                partial.write_bytes(data)
                os.replace(partial, path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise os_error(path, "write", error) from None

    def ours(self, partial: bool = False) -> list[Path]:
        """The checkpoint files in the folder (none where it does not exist); with `partial`, those a kill left
        half-written instead."""
        pattern = PARTIAL_NAME if partial else CHECKPOINT_NAME
        try:
            return sorted(p for p in self.folder.iterdir() if pattern.fullmatch(p.name))
        except FileNotFoundError:
            return []
        except OSError as error:
            raise os_error(self.folder, "read", error) from None

    def drop(self, training_ids: Iterable[str]) -> None:
        for training_id in training_ids:
            path = self.path(training_id)
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                raise os_error(path, "remove", error) from None

    def keep_only(self, training_ids: set[str]) -> None:
        """Remove the checkpoints of every training but these (trials stopped, trainings ended), and any file a
        kill left half-written."""
        self.drop(p.name.removesuffix(".pt") for p in self.ours() if p.name.removesuffix(".pt") not in training_ids)
        for path in self.ours(partial=True):
            try:
                path.unlink(missing_ok=True)
            except OSError as error:
                raise os_error(path, "remove", error) from None

    def clear(self) -> None:
        """Remove every checkpoint, then the folder if nothing else is in it."""
        self.keep_only(set())
        try:
            self.folder.rmdir()
        except FileNotFoundError:
            pass
        except OSError:  # not empty: files that are not ours stay, and so does their folder
            pass


def check_folder(csv_path: Path) -> None:
    """Refuse a NAME.checkpoints beside the results file that is not a folder: a halving run would write there."""
    folder = checkpoint_folder(csv_path)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{folder}: not a folder; a halving run keeps its checkpoints there: choose another --out")
    if folder.is_dir() and not os.access(folder, os.W_OK):
        raise UserError(f"{folder}: read-only; a halving run writes its checkpoints there: make it writable")
