"""The frozen descriptions a grid is made of: model, optimizer, task settings, and the cell itself."""

import math
from dataclasses import asdict, dataclass, replace
from functools import cached_property

from .data.filetask import FileTask, TaskKey
from .ids import hash_digits, make_id
from .regularizers import RegularizerSetting
from .report.labels import cell_label
from .schedules import LrSchedule, MomentumRamp
from .seeding import derive_seed


@dataclass(frozen=True)
class ModelConfig:
    """An MLP (ReLU hidden layers of the given widths) or a small conv net (`channels`: one block of
    3x3 conv, ReLU, 2x2 max-pool per entry, then the hidden layers). Dropout follows the input and
    each hidden layer; `conv_keep` < 1 adds spatial (whole-channel) dropout after each conv block."""

    kind: str = "mlp"
    hidden: tuple[int, ...] = (256, 256)
    channels: tuple[int, ...] = ()
    conv_keep: float = 1.0
    # Fixed p·n (the paper's Figure 9b): each hidden layer is widened to round(n / p), so the expected
    # number of kept units stays n whatever the keep rate.
    fixed_pn: bool = False
    # A plugin model kind's own settings (its `Network.options`), as (name, value) pairs sorted by name.
    options: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        convs = [f"c{c}" for c in self.channels]
        spatial = [f"sk{self.conv_keep:g}"] if self.conv_keep < 1.0 else []
        pn = ["pn"] if self.fixed_pn else []
        options = [f"{name}={_text(value)}" for name, value in self.options]
        return "-".join([self.kind, *convs, *map(str, self.hidden), *spatial, *pn, *options])

    def identity(self) -> dict[str, object]:
        """The fields that define the model, each added after the first release only where set (earlier cell_ids
        stand)."""
        return {k: v for k, v in asdict(self).items() if (k != "fixed_pn" or v) and (k != "options" or v)}

    def widths(self, keep_rates: tuple[float, ...]) -> tuple[int, ...]:
        """The hidden widths a cell trains: as written, or n / p per layer under fixed p·n."""
        if not self.fixed_pn:
            return self.hidden
        return tuple(max(1, round(n / p)) for n, p in zip(self.hidden, keep_rates))


@dataclass(frozen=True)
class OptimizerConfig:
    """SGD with (optionally Nesterov) momentum, or Adam; `lr` is the step size for both, moved over the training
    by `schedule`, and SGD's momentum raised to `momentum` by `momentum_ramp` (dropbench.schedules)."""

    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9  # SGD only; 0.9 is the usual value and the paper's final momentum is 0.99
    nesterov: bool = False  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # Adam only: torch's defaults
    schedule: LrSchedule = LrSchedule()  # the default: lr at every step
    momentum_ramp: MomentumRamp | None = None  # SGD only; None: `momentum` from the first step

    @property
    def label(self) -> str:
        """The CSV's `optimizer`: the name, with whatever else besides lr and momentum changes its steps: Adam's
        betas where not torch's, then the lr schedule and the momentum ramp where there are any, joined by '+'
        ('sgd+exponential(0.998)+momentum-ramp(0.5,10)')."""
        if self.name == "adam":
            name = "adam" if self.betas == (0.9, 0.999) else f"adam({self.betas[0]:g},{self.betas[1]:g})"
        else:
            name = "sgd-nesterov" if self.nesterov else "sgd"
        ramp = self.momentum_ramp.label if self.momentum_ramp is not None else ""
        return "+".join(part for part in (name, self.schedule.label, ramp) if part)

    @property
    def scheduled(self) -> bool:
        """Whether the lr or the momentum changes during the training (else they are set once, as given)."""
        return not self.schedule.is_constant or self.momentum_ramp is not None

    def lr_at(self, epoch: int, step: int, steps_per_epoch: int, total_epochs: int) -> float:
        """The lr of `step` (from 0) of `epoch` (from 0) in a training of `total_epochs` epochs; `lr` itself at
        every step under the default schedule."""
        return self.lr * self.schedule.factor(epoch, step, steps_per_epoch, total_epochs)

    def momentum_at(self, epoch: int) -> float:
        """SGD's momentum during `epoch` (from 0)."""
        return self.momentum if self.momentum_ramp is None else self.momentum_ramp.momentum(self.momentum, epoch)

    @property
    def momentum_value(self) -> float:
        """The CSV's `momentum` (NaN for Adam, whose betas play that part)."""
        return self.momentum if self.name == "sgd" else math.nan

    def as_identity(self) -> dict[str, object]:
        """Only the fields that affect training, so an unused default never changes a cell_id: the schedule and
        the ramp enter only where there is one (cells of a constant lr keep the ids they had before schedules)."""
        if self.name == "adam":
            identity: dict[str, object] = {"name": self.name, "lr": self.lr, "betas": list(self.betas)}
        else:
            identity = {"name": self.name, "lr": self.lr, "momentum": self.momentum, "nesterov": self.nesterov}
        if not self.schedule.is_constant:
            identity["schedule"] = self.schedule.as_identity()
        if self.momentum_ramp is not None:
            identity["momentum_ramp"] = self.momentum_ramp.as_identity()
        return identity


def _text(value: object) -> str:
    """An option's value in a label: numbers as %g, lists joined by '/'."""
    if isinstance(value, tuple):
        return "/".join(map(_text, value))
    return format(value, "g") if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class TaskConfig:
    """How one task is trained in a suite: which data, which model, which budget. `data` describes a task read
    from the user's files (declared in the suite with `path`); it travels with every cell to the workers."""

    name: str
    model: ModelConfig
    optimizer: OptimizerConfig
    batch_size: int
    epochs: int
    data: FileTask | None = None

    @property
    def key(self) -> TaskKey:
        """What finds the task's data: its name, or its file description."""
        return self.name if self.data is None else self.data


# The identity fields a grid varies within one task; every other field is the task's training setup. A tuned
# comparison's method, phase and trial name a cell's place in the protocol and change no training either.
GRID_AXES = (
    "regularizer",
    "strength",
    "keep_rate",
    "input_keep_rate",
    "dropout",
    "train_size",
    "seed",
    "method",
    "phase",
    "trial",
)


@dataclass(frozen=True)
class Cell:
    """One training run: a task, a regularizer with its strengths, keep rates, a dropout kind, a seed."""

    suite: str
    task: TaskConfig
    regularizer: RegularizerSetting
    keep_rate: float | tuple[float, ...]  # one rate for every hidden layer, or one per layer
    input_keep_rate: float
    dropout: str
    seed: int
    train_size: int = 0  # a stratified subsample of the training split of this many rows; 0: all of it
    mc_samples: int = 0  # MC dropout at evaluation: passes averaged for the *_mc figures; 0: none
    precision: str = "fp32"  # "bf16": autocast of the training forward pass (weights stay fp32)
    # A tuned comparison's cell (suite [tuning], dropbench.tuning): the method, "tune" or "eval", and the index of
    # the sampled setting within its task and method; "", "" and None in an ordinary grid.
    method: str = ""
    phase: str = ""
    trial: int | None = None
    # A successive-halving rung's cell (dropbench.tuning): the first `epoch_limit` epochs of the training this cell
    # would otherwise be, so that a later rung continues from its checkpoint (dropbench.checkpoints); 0: all of them.
    # The task's `epochs` stay the full training's, so whatever depends on the planned length stays the same.
    epoch_limit: int = 0

    def __post_init__(self) -> None:
        if self.epoch_limit and not 0 < self.epoch_limit < self.task.epochs:
            raise ValueError(f"epoch_limit {self.epoch_limit} is not between 1 and the task's {self.task.epochs}")

    @property
    def epochs(self) -> int:
        """The epochs this cell trains at most: its epoch limit (a halving rung), else the task's."""
        return self.epoch_limit or self.task.epochs

    @property
    def continues(self) -> bool:
        """Whether this cell is the first epochs of a longer training, which a later cell may continue."""
        return self.epoch_limit > 0

    @property
    def layer_keep_rates(self) -> tuple[float, ...]:
        """The keep rate of each hidden layer."""
        if isinstance(self.keep_rate, tuple):
            return self.keep_rate
        return (self.keep_rate,) * len(self.task.model.hidden)

    @property
    def mean_keep_rate(self) -> float:
        """The CSV's keep_rate: the rate itself, or the mean of per-layer rates (listed in layer_keep_rates)."""
        rates = self.layer_keep_rates if isinstance(self.keep_rate, tuple) else (self.keep_rate,)
        return sum(rates) / len(rates)

    @property
    def keep_label(self) -> str:
        """Per-layer rates as text ('0.8/0.5'), '' when one rate serves every layer."""
        return "/".join(f"{p:g}" for p in self.keep_rate) if isinstance(self.keep_rate, tuple) else ""

    def identity(self) -> dict[str, object]:
        """Everything that defines the cell's numbers (the suite's name does not). Fields added after
        the first release enter only when they differ from their default, so earlier cell_ids stand."""
        extra: dict[str, object] = {"train_size": self.train_size} if self.train_size else {}
        if self.mc_samples:
            extra["mc_samples"] = self.mc_samples
        if self.precision != "fp32":
            extra["precision"] = self.precision
        if self.method:
            extra.update(method=self.method, phase=self.phase, trial=self.trial)
        if self.task.data is not None:  # the files' checksums: a changed file makes other cells, never the same
            extra["data"] = self.task.data.identity()
        if self.epoch_limit:
            extra["epoch_limit"] = self.epoch_limit
        return {
            **extra,
            "task": self.task.name,
            "model": self.task.model.identity(),
            "optimizer": self.task.optimizer.as_identity(),
            "batch_size": self.task.batch_size,
            "epochs": self.task.epochs,
            "regularizer": self.regularizer.name,
            "strength": self.regularizer.strength_label,
            "keep_rate": self.keep_rate,
            "input_keep_rate": self.input_keep_rate,
            "dropout": self.dropout,
            "seed": self.seed,
        }

    def setup_identity(self) -> dict[str, object]:
        """Everything that changes training except the grid's axes (regularizer and strength, keep rates,
        dropout kind, training-set size, seed): what a configuration shares with its task's baseline."""
        identity = self.identity()
        for axis in GRID_AXES:
            identity.pop(axis, None)
        return identity

    @cached_property
    def setup_id(self) -> str:
        """'s' and 12 hex digits of setup_identity(): cells with different ids are never pooled or paired."""
        return make_id("setup_id", hash_digits(derive_seed(self.setup_identity())))

    @cached_property
    def seed_key(self) -> str:
        """12 hex digits of the whole training's identity, stable across runs and machines; the cell's own random
        streams (masks, mixup, MC dropout) derive from it. It is the training_id without its letter: the cell_id's
        digits (the whole cell_id of schema 6 and before), so a cell's figures do not depend on how its id is
        written; for a halving rung's cell, those of the full training it is the first epochs of."""
        whole = replace(self, epoch_limit=0) if self.epoch_limit else self
        return hash_digits(derive_seed(whole.identity()))

    @cached_property
    def cell_id(self) -> str:
        """'c' and 12 hex digits of identity() (ids.py: no spreadsheet reads it as a number): how a rerun knows
        what is done."""
        return make_id("cell_id", hash_digits(derive_seed(self.identity())))

    @cached_property
    def training_id(self) -> str:
        """The cell_id of the whole training this cell is the first epochs of (its own, without an epoch limit):
        'c' and seed_key. Its checkpoint is filed under it, and its random streams are seeded from its digits
        (seed_key), so a rung's cell draws what the first epochs of the full training draw."""
        return make_id("cell_id", self.seed_key)

    def describe(self) -> str:
        """'digits l2(0.0001) keep=0.5 in=0.8 gaussian n=100 seed=2', in report.labels' vocabulary for a cell;
        a tuned comparison's cell ends with its phase, method and trial: '[tune l2+dropout #3]', and a halving rung's
        with its epochs: '[tune l2 #3, first 5 epochs]'."""
        label = cell_label(
            {
                "task": self.task.name,
                "regularizer": self.regularizer.name,
                "strength": self.regularizer.strength_label,
                "keep_rate": self.mean_keep_rate,
                "layer_keep_rates": self.keep_label,
                "input_keep_rate": self.input_keep_rate,
                "dropout": self.dropout,
                "train_size": self.train_size,
                "seed": self.seed,
            }
        )
        rung = f", first {self.epoch_limit} epochs" if self.epoch_limit else ""
        return f"{label} [{self.phase} {self.method} #{self.trial}{rung}]" if self.method else label
