"""Read and validate a suite TOML, apply command-line overrides, expand it into cells.

Every problem is reported as one UserError naming the file, the key and what is allowed.
"""

import difflib
import itertools
import math
import re
import tomllib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from .catalogue import DROPOUT_KINDS
from .config import Cell, ModelConfig, OptimizerConfig, TaskConfig
from .data import TASKS, get_task
from .data.filetask import COLORS, FORMATS, KINDS, TABULAR, FileTask, check_exists, content_sha256, detect_format
from .data.registry import REGISTRY as TASK_REGISTRY
from .errors import UserError
from .keeprates import keep_rate_problem
from .models import MODEL_KINDS, model_class
from .models import REGISTRY as MODELS
from .regularizers import REGISTRY as REGULARIZER_REGISTRY
from .regularizers import (
    RegularizerSetting,
    expand_regularizer,
    known_names,
    parse_regularizer,
    sort_parts,
    validate_strength,
)
from .schedules import DEFAULT_RAMP_START, MOMENTUM_RAMP_KEYS, SCHEDULE_KEYS, SCHEDULE_KINDS, LrSchedule, MomentumRamp
from .tuning import (
    BASELINE,
    DROPOUT,
    EVALUATIONS,
    INPUT_KEEP,
    KEEP,
    LR,
    SAMPLERS,
    SPACE_FORMS,
    STOP_ALPHA,
    TUNING_METRICS,
    Halving,
    Method,
    Setting,
    Space,
    Tuning,
    cell_count,
    tune_cells,
)

if TYPE_CHECKING:
    from .overrides import SetOverride

DEFAULT_SUITE = "quick"
OPTIMIZERS = ("sgd", "adam")

SUITE_KEYS = (
    "name",
    "description",
    "seeds",
    "keep_rates",
    "input_keep_rate",
    "dropout",
    "regularizers",
    "epochs",
    "batch_size",
    "model",
    "optimizer",
    "regularizer",
    "task",
    "train_size",
    "mc_samples",
    "exclude",
    "tuning",
)
TUNING_KEYS = (
    "methods",
    "budget",
    "sampler",
    "seed",
    "tuning_seeds",
    "evaluation",
    "evaluation_seeds",
    "metric",
    "space",
    "halving",
)
HALVING_KEYS = ("min_epochs", "eta")  # required
HALVING_OPTIONAL = ("alpha",)
# Keys of an ordinary grid that a [tuning] table replaces: its methods, spaces and seeds are the grid.
GRID_KEYS_TUNING_REPLACES = {
    "keep_rates": "a method naming 'dropout' tunes its keep rate: set its range as [tuning.space] keep",
    "regularizers": "the methods are [tuning] methods",
    "seeds": "seeds are [tuning] tuning_seeds and evaluation_seeds",
    "exclude": "the [tuning] methods and spaces make the grid: leave a method out of methods, or narrow its space",
}
# The keys of an `exclude` entry: the grid's axes but seeds, each with its name in messages. A cell is left out of
# the grid when it matches every key of some entry (as GitHub Actions' matrix `exclude`).
EXCLUDE_KEYS = {
    "task": "tasks",
    "regularizer": "regularizers",
    "keep_rate": "keep rates",
    "input_keep_rate": "input keep rates",
    "dropout": "dropout kinds",
    "train_size": "train sizes",
}
# Keep rates are stored as given (a TOML float is the number written); an exclusion's rate is one of the grid's when
# they differ by float noise alone (0.1 + 0.2 from Python), far below the masks' resolution of 1/65536.
KEEP_RATE_TOLERANCE = 1e-9
TASK_KEYS = ("name", "model", "optimizer", "batch_size", "epochs")
# A task read from the user's files (`path`); which keys apply to which format is in FILE_KEYS_BY_FORMAT.
FILE_TASK_KEYS = ("path", "format", "test_path", "split", "target", "features", "kind", "size", "color", "arrays")
FILE_KEYS_BY_FORMAT = {
    "csv": ("target", "features", "kind"),
    "parquet": ("target", "features", "kind"),
    "images": ("size", "color"),
    "npz": ("arrays", "kind"),
}
FORMAT_KEYS = ("target", "features", "kind", "size", "color", "arrays")  # the keys of FILE_KEYS_BY_FORMAT
SPLIT_KEYS = ("val", "test")
ARRAY_KEYS = ("x", "y")
DEFAULT_FILE_SPLIT = (0.2, 0.2)  # validation and test, as the bundled tabular tasks: enough rows to measure a gap
MODEL_KEYS = ("kind", "hidden", "channels", "conv_keep", "fixed_pn")
OPTIMIZER_KEYS = ("name", "lr", "momentum", "nesterov", "betas", "schedule", "momentum_ramp")
REGULARIZER_KEYS = ("strength", "target")
# A schedule's parameters without a default, and what each means (in the line that asks for one).
SCHEDULE_REQUIRED = {"exponential": ("gamma",), "step": ("gamma", "every")}
SCHEDULE_MEANINGS = {"gamma": "the lr's factor per decay, in (0, 1]", "every": "the epochs between two decays"}

# Defaults for a suite that leaves a key out; each is the quick suite's choice and its reason is there.
DEFAULT_SEEDS = 3
DEFAULT_KEEP_RATES = (0.5, 0.8, 1.0)
DEFAULT_EPOCHS = 30
DEFAULT_BATCH_SIZE = 64

# The most cells one suite may expand to. The largest bundled suite has 288 cells; 100,000 cells of the
# quick suite's size are hours of CPU (the dry run's estimate), of MNIST's months, and a dry run of them
# already takes seconds. Past this a grid is a typo (`seeds = 100000000`) far more often than a plan,
# and expanding it would hang before anything could refuse it: the size is counted as a product of the
# axes' lengths, never by expanding. A real sweep that large is split into suites or shards.
MAX_GRID_CELLS = 100_000
# The most values one log sweep of a strength may have: 1,000 points between 1e-6 and 1e-2 are already
# 1% apart, closer than seed noise tells strengths apart.
MAX_SWEEP_VALUES = 1_000
# A suite's name becomes a file name (results/NAME-<time>.csv) and the CSV's suite column: letters,
# digits, '_', '-' and '.' cannot leave results/ or hide a path, and a first character other than '-' or
# '.' is neither a hidden file nor a spreadsheet formula (an escaped '-smoke' could never be resumed).
SUITE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
SUITE_NAME_RULE = (
    "1 to 100 letters, digits, '_', '-' or '.', starting with a letter, digit or '_' (the name becomes "
    "results/NAME-<time>.csv, and a leading '-' is escaped in the CSV, which could then never be resumed)"
)


# A point of the grid without its seed, in EXCLUDE_KEYS' order: task name, regularizer name, keep rate (or per-layer
# rates), input keep rate, dropout kind, train size (0: the whole training split).
GridPoint = tuple[str, str, float | tuple[float, ...], float, str, int]
_POINT_INDEX = {key: index for index, key in enumerate(EXCLUDE_KEYS)}


def same_keep_rate(a: object, b: object) -> bool:
    """Whether two keep rates (numbers, or tuples of one per layer) are the same within KEEP_RATE_TOLERANCE; a rate
    for every layer is never the same as per-layer rates."""
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (
            isinstance(a, tuple)
            and isinstance(b, tuple)
            and len(a) == len(b)
            and all(same_keep_rate(x, y) for x, y in zip(a, b))
        )
    return isinstance(a, float | int) and isinstance(b, float | int) and abs(a - b) <= KEEP_RATE_TOLERANCE


def _same_value(key: str, a: object, b: object) -> bool:
    return same_keep_rate(a, b) if key in ("keep_rate", "input_keep_rate") else a == b


def _on_axis(key: str, value: object, axes: Mapping[str, tuple[object, ...]]) -> bool:
    return any(_same_value(key, value, on_axis) for on_axis in axes[key])


@dataclass(frozen=True)
class Exclusion:
    """One entry of a suite's `exclude`: the grid leaves out every cell that matches all of its values."""

    where: str  # how messages name it: "s.toml: exclude[2]", "--set exclude=[...]: exclude[2]"
    # (key of EXCLUDE_KEYS, value) in EXCLUDE_KEYS' order: a regularizer's name with its parts in a setting's order,
    # keep rates as the grid holds them (a number, or a tuple of one per hidden layer).
    values: tuple[tuple[str, object], ...]
    # The keys whose values were found on the grid the entry was written against. A flag may since have removed
    # such a value (the entry then matches nothing); a key not among them must be on the final grid (check_grid).
    placed: tuple[str, ...] = ()

    def matches(self, point: GridPoint) -> bool:
        return all(_same_value(key, point[_POINT_INDEX[key]], value) for key, value in self.values)

    def describe(self) -> dict[str, object]:
        """The entry as the suite file writes it, for the run's metadata."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in self.values}

    def missing(self, axes: Mapping[str, tuple[object, ...]], skip: tuple[str, ...] = ()) -> tuple[str, object] | None:
        """The first (key, value) of the entry, its keys in `skip` aside, that is not on its axis of `axes`
        (Suite.axis_values); None if all are."""
        for key, value in self.values:
            if key not in skip and not _on_axis(key, value, axes):
                return key, value
        return None

    def not_on_grid(self, key: str, value: object, axes: Mapping[str, tuple[object, ...]]) -> UserError:
        """The refusal of a value that is on no value of its axis."""
        name = EXCLUDE_KEYS[key]
        if key == "train_size" and tuple(axes[key]) == (0,):
            return UserError(
                f"{self.where}.{key}: {_grid_text(value)} is not one of the suite's {name} (it sets no train_size: "
                "every cell trains on the whole training split)"
            )
        listed = ", ".join(_grid_text(v, quoted=False) for v in axes[key])
        return UserError(f"{self.where}.{key}: {_grid_text(value)} is not one of the suite's {name} {listed}")


def _grid_text(value: object, quoted: bool = True) -> str:
    """A grid value as an exclusion's message shows it: keep rates as written (0.5, 1.0, [0.8, 0.5]), text quoted."""
    if isinstance(value, tuple):
        return str(list(value))
    if isinstance(value, str):
        return repr(value) if quoted else value
    return str(value)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    source: str
    tasks: tuple[TaskConfig, ...]
    regularizers: tuple[RegularizerSetting, ...]
    keep_rates: tuple[float | tuple[float, ...], ...]  # a rate for all hidden layers, or one per layer
    input_keep_rates: tuple[float, ...]
    dropouts: tuple[str, ...]
    seeds: tuple[int, ...]
    train_sizes: tuple[int, ...] = (0,)  # 0: the whole training split
    mc_samples: int = 0
    precision: str = "fp32"
    # What a task named only on the command line (`--task wine`) is trained with.
    task_defaults: TaskConfig | None = field(repr=False, default=None)
    sweeps: dict[str, tuple[float, ...]] = field(repr=False, default_factory=dict)
    kl_target: float = 0.05
    tuning: Tuning | None = None  # a tuned comparison ([tuning]): its cells come from dropbench.tuning
    # Combinations the grid leaves out (`exclude`); a cell's id does not depend on them.
    exclude: tuple[Exclusion, ...] = ()
    # The keys set from outside the file (`--set KEY=VALUE`, `set={...}`), as dotted key -> value, already applied.
    set_keys: tuple[tuple[str, object], ...] = ()
    # Each (task, method)'s sampled trials, built once (dropbench.tuning.suite_trials); a replace() starts it over.
    trial_cache: dict[tuple[str, str], list[Setting]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def cells(self) -> list[Cell]:
        """The grid in a stable order: task, regularizer, keep rate, input keep rate, dropout, size, seed. For a
        tuned suite, its tuning phase (task, method, trial, seed): the evaluation cells depend on the choice."""
        self.check_grid()
        if self.tuning is not None:
            return tune_cells(self)
        return [
            Cell(self.name, task, reg, keep, input_keep, dropout, seed, size, self.mc_samples, self.precision)
            for task, reg, keep, input_keep, dropout, size in itertools.product(
                self.tasks,
                self.regularizers,
                self.keep_rates,
                self.input_keep_rates,
                self.dropouts,
                self.train_sizes,
            )
            if not self.excluded((task.name, reg.name, keep, input_keep, dropout, size))
            for seed in self.seeds
        ]

    def excluded(self, point: GridPoint) -> bool:
        """Whether an entry of `exclude` leaves this point of the grid (every seed of it) out."""
        return any(entry.matches(point) for entry in self.exclude)

    def axis_values(self) -> dict[str, tuple[object, ...]]:
        """The values of each axis an `exclude` entry may name (EXCLUDE_KEYS), as its entries hold them."""
        return {
            "task": tuple(t.name for t in self.tasks),
            "regularizer": tuple(dict.fromkeys(r.name for r in self.regularizers)),
            "keep_rate": self.keep_rates,
            "input_keep_rate": self.input_keep_rates,
            "dropout": self.dropouts,
            "train_size": self.train_sizes,
        }

    def check_exclude(self, where: str | None = None) -> None:
        """Refuse an entry's value that is on neither the grid it was written against nor this one, and an
        `exclude` that leaves no cell (`where` names what made the grid: the file, or it with some flags)."""
        axes = self.axis_values()
        for entry in self.exclude:
            if (missing := entry.missing(axes, skip=entry.placed)) is not None:
                raise entry.not_on_grid(*missing, axes)
        self.check_some_cell_left(where)

    def check_some_cell_left(self, where: str | None = None) -> None:
        """Refuse an `exclude` that leaves no cell. Searched over the points without seeds, which no entry names, and
        the first point left ends the search; a grid past MAX_GRID_CELLS is not searched (check_grid refuses it, or
        the flags narrow it and it is searched then)."""
        lengths = self.axis_lengths()
        if not self.exclude or math.prod(lengths.values()) // max(1, lengths["seeds"]) > MAX_GRID_CELLS:
            return
        points = itertools.product(
            (t.name for t in self.tasks),
            (r.name for r in self.regularizers),
            self.keep_rates,
            self.input_keep_rates,
            self.dropouts,
            self.train_sizes,
        )
        if all(self.excluded(point) for point in points):
            raise UserError(
                f"{where or self.source}: exclude removes every cell of the grid; remove an entry, or give the grid "
                "values no entry matches"
            )

    def axis_lengths(self) -> dict[str, int]:
        """How many values each axis of the grid has, by a name for messages (plural); a tuned suite's cells of
        both phases count as one axis."""
        if self.tuning is not None:
            return {"tasks": len(self.tasks), "tuned cells per task": cell_count(self) // max(1, len(self.tasks))}
        return {
            "tasks": len(self.tasks),
            "regularizers": len(self.regularizers),
            "keep rates": len(self.keep_rates),
            "input keep rates": len(self.input_keep_rates),
            "dropout kinds": len(self.dropouts),
            "train sizes": len(self.train_sizes),
            "seeds": len(self.seeds),
        }

    def check_grid(
        self, keep_where: str | None = None, dropout_where: str | None = None, exclude_where: str | None = None
    ) -> None:
        """Refuse, before anything is expanded or written, a grid past MAX_GRID_CELLS and a task its keep
        rates or dropout kinds do not fit, and an `exclude` that does not fit the grid or leaves no cell (the size is
        counted before exclusions: the product is what expanding the grid walks); the `*_where` name the flag when a
        value came from one (`exclude_where`: the grid's flags, where they leave no cell)."""
        check_grid_size(self.axis_lengths(), self.source, " before exclude" if self.exclude else "")
        if self.tuning is not None:
            check_tuning_fits(self.tuning, self.tasks, self.source)
        for task in self.tasks:
            for keep in self.keep_rates:
                check_keep_rate_fits(task, keep, keep_where or f"{self.source}: keep_rates")
            for dropout in self.dropouts:
                check_dropout_fits(task, dropout, dropout_where or f"{self.source}: dropout")
        self.check_exclude(exclude_where)

    def describe(self) -> dict[str, object]:
        """A JSON-ready account of the resolved suite, for the run's metadata."""
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "tasks": [
                {
                    "name": t.name,
                    "model": t.model.label,
                    "optimizer": t.optimizer.as_identity(),
                    "batch_size": t.batch_size,
                    "epochs": t.epochs,
                    **({"data": {"path": t.data.path, **t.data.identity()}} if t.data is not None else {}),
                }
                for t in self.tasks
            ],
            "regularizers": [{"name": r.name, "strength": r.strength_label} for r in self.regularizers],
            "keep_rates": [list(k) if isinstance(k, tuple) else k for k in self.keep_rates],
            "input_keep_rates": list(self.input_keep_rates),
            "dropout": list(self.dropouts),
            "train_sizes": list(self.train_sizes),
            "mc_samples": self.mc_samples,
            "seeds": list(self.seeds),
            **({"exclude": [entry.describe() for entry in self.exclude]} if self.exclude else {}),
            **({"tuning": self.tuning.describe()} if self.tuning is not None else {}),
            **({"set": dict(self.set_keys)} if self.set_keys else {}),
        }


@dataclass(frozen=True)
class Overrides:
    """Command-line values that replace the suite's; None leaves the suite's value."""

    tasks: tuple[str, ...] | None = None
    keep_rates: tuple[float, ...] | None = None
    input_keep_rates: tuple[float, ...] | None = None
    regularizers: tuple[str, ...] | None = None
    seeds: int | tuple[int, ...] | None = None  # a count (0..N-1), or the seeds themselves
    epochs: int | None = None
    dropouts: tuple[str, ...] | None = None
    train_sizes: tuple[int, ...] | None = None
    mc_samples: int | None = None
    precision: str | None = None


# ---------------------------------------------------------------- finding a suite


def bundled_suite_dirs() -> list[Path]:
    """Where named suites live: inside an installed wheel, then the checkout's tasks/ folder."""
    package = Path(str(resources.files("dropbench")))
    return [d for d in (package / "suites", package.parent / "tasks") if d.is_dir()]


def bundled_suite_names() -> list[str]:
    return sorted({p.stem for d in bundled_suite_dirs() for p in d.glob("*.toml")})


def find_suite(name_or_path: str | None) -> Path:
    """A path to an existing file, or the name of a bundled suite ('quick', 'mnist', ...)."""
    target = name_or_path or DEFAULT_SUITE
    path = Path(target)
    if path.is_file():
        return path
    if path.suffix == ".toml" or "/" in target:
        raise UserError(f"suite file not found: {target}")
    for folder in bundled_suite_dirs():
        if (folder / f"{target}.toml").is_file():
            return folder / f"{target}.toml"
    raise UserError(f"unknown suite '{target}'; bundled: {', '.join(bundled_suite_names()) or 'none'}")


# ---------------------------------------------------------------- validation helpers


def _check_keys(table: dict, allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise UserError(f"{where}: unknown key '{key}'{hint}; allowed: {', '.join(allowed)}")


def _table(value: object, where: str) -> dict:
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a table, got {value!r}")
    return value


def _int(value: object, where: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{where}: expected an integer ≥ {minimum}, got {value!r}")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):  # TOML has inf and nan; no setting of a suite takes them
        raise UserError(f"{where}: expected a finite number, got {value!r}")
    return float(value)


def _label(value: object) -> str:
    """A value as a message shows it: numbers as %g, text quoted."""
    return format(value, "g") if isinstance(value, float) else repr(value)


H = TypeVar("H", bound=Hashable)


def first_repeat(items: Iterable[H]) -> H | None:
    """The first item seen twice, or None."""
    seen: set[H] = set()
    for item in items:
        if item in seen:
            return item
        seen.add(item)
    return None


def _refuse_repeats(items: Iterable[object], where: str, what: str) -> None:
    repeated = first_repeat(items)
    if repeated is not None:
        raise UserError(f"{where}: {what} {_label(repeated)} is listed twice")


def _str(value: object, where: str, allowed: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: expected a string, got {value!r}")
    if allowed is not None and value not in allowed:
        raise UserError(f"{where}: unknown value '{value}'; allowed: {', '.join(allowed)}")
    return value


def _list(value: object, where: str) -> list:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise UserError(f"{where}: must not be empty")
    return items


def validate_keep_rates(values: object, where: str) -> tuple[float, ...]:
    """Keep rates are probabilities of keeping a unit, each one the masks realise (1/65536 to 1): sorted,
    without repeats."""
    rates = [_number(v, where) for v in _list(values, where)]
    for rate in rates:
        if problem := keep_rate_problem(rate):
            raise UserError(f"{where}: {problem}")
    _refuse_repeats(rates, where, "keep rate")
    return tuple(sorted(rates))


def _dropouts(value: object, where: str) -> tuple[str, ...]:
    kinds = tuple(_str(kind, where, tuple(DROPOUT_KINDS)) for kind in _list(value, where))
    _refuse_repeats(kinds, where, "dropout kind")
    return kinds


def _grid_keep_rates(values: object, where: str) -> tuple[float | tuple[float, ...], ...]:
    """Keep rates of the grid: each a number (every hidden layer) or a list (one per hidden layer)."""
    items = _list(values, where)
    rates: list[float | tuple[float, ...]] = []
    for item in items:
        if item == []:
            raise UserError(f"{where}: expected a keep rate or a list of one per hidden layer, got []")
        if isinstance(item, list):
            rates.append(
                validate_keep_rates(item, where)
                if len(item) == 1
                else tuple(validate_keep_rates([v], where)[0] for v in item)
            )
        else:
            rates.append(validate_keep_rates(item, where)[0])
    repeated = first_repeat(rates)
    if repeated is not None:
        shown = list(repeated) if isinstance(repeated, tuple) else _label(repeated)
        raise UserError(f"{where}: keep rate {shown} is listed twice")
    numbers = sorted(r for r in rates if not isinstance(r, tuple))
    return (*numbers, *(r for r in rates if isinstance(r, tuple)))


def _train_sizes(value: object, where: str) -> tuple[int, ...]:
    sizes = [_int(v, where, 1) for v in _list(value, where)]
    _refuse_repeats(sizes, where, "train size")
    return tuple(sizes)


def check_keep_rate_fits(task: TaskConfig, keep: float | tuple[float, ...], where: str) -> None:
    """Hidden keep rates act on hidden layers: one rate per layer when listed, and none below 1 without any
    (an MLP or conv net with `hidden = []` has no unit a hidden mask could drop, whatever the dropout kind)."""
    layers = len(task.model.hidden)
    if isinstance(keep, tuple) and len(keep) != layers:
        raise UserError(
            f"{where}: keep rates {list(keep)} name {len(keep)} layers but task '{task.name}' has "
            f"{layers} hidden layers"
        )
    if not layers and keep != 1.0:
        raise UserError(
            f"{where}: keep rate {keep:g} would drop nothing: task '{task.name}' has no hidden layer "
            "(model.hidden = []); use keep rate 1.0 for it, and input_keep_rate to drop its inputs"
        )


def check_dropout_fits(task: TaskConfig, dropout: str, where: str) -> None:
    """A dropout kind its model kind implements (`Network.dropout_kinds`): spatial dropout needs conv maps, alpha
    dropout a SELU MLP, a plugin model the kinds it declares."""
    kind = task.model.kind
    if dropout in model_class(kind).dropout_kinds:
        return
    if dropout == "spatial":
        raise UserError(f"{where}: dropout 'spatial' drops conv channels; task '{task.name}' uses a {kind}")
    if dropout == "alpha":
        raise UserError(f"{where}: dropout 'alpha' is for SELU MLPs; task '{task.name}' uses a {kind}")
    kinds = ", ".join(model_class(kind).dropout_kinds)
    raise UserError(f"{where}: dropout '{dropout}': model kind '{kind}' of task '{task.name}' implements {kinds}")


def check_grid_size(axes: dict[str, int], where: str, note: str = "") -> None:
    """Refuse a grid of more than MAX_GRID_CELLS cells, its size the product of its axes' lengths (`note` follows
    the count: " before exclude")."""
    cells = math.prod(axes.values())
    if cells > MAX_GRID_CELLS:
        factors = " × ".join(f"{n} {name}" for name, n in axes.items() if n != 1) or "1"
        raise UserError(
            f"{where}: the grid has {factors} = {cells:,} cells{note}; a suite may have at most {MAX_GRID_CELLS:,}: "
            "split it into several suites, or use fewer seeds or values"
        )


def _seeds(value: object, where: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool):
        return tuple(range(_seed_count(_int(value, where, 1), where)))
    seeds = [_int(v, where, 0) for v in _list(value, where)]
    _refuse_repeats(seeds, where, "seed")
    return tuple(seeds)


def _seed_count(count: int, where: str) -> int:
    """A number of seeds no larger than a whole grid may be, checked before range(count) is built."""
    check_grid_size({"seeds": count}, where)
    return count


# ---------------------------------------------------------------- parts of a suite


def _widths(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list):
        raise UserError(f"{where}: expected a list of widths, got {value!r}")
    return tuple(_int(w, where, 1) for w in value)


def _model_kind(value: object, where: str) -> str:
    """A built-in model kind, a plugin's, or a module:object reference (loaded now, so a bad one fails here)."""
    kind = _str(value, where)
    if not MODELS.known(kind):
        close = difflib.get_close_matches(kind, MODELS.names(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(
            f"{where}: unknown value '{kind}'{hint}; allowed: {', '.join(MODELS.names())}, or module:object"
        )
    try:
        model_class(kind)
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    return kind


def _model_options(table: dict, kind: str, where: str) -> tuple[tuple[str, object], ...]:
    """A plugin model's own keys (its `options`), as sorted (name, value) pairs; lists become tuples."""
    extra = {key: value for key, value in table.items() if key not in MODEL_KEYS}
    _check_keys(extra, (*MODEL_KEYS, *model_class(kind).options), where)
    for key, value in extra.items():
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, bool | int | float | str) for item in items):
            raise UserError(f"{where}.{key}: expected a number, text, true/false or a list of them, got {value!r}")
        for item in items:
            if isinstance(item, float):
                _number(item, f"{where}.{key}")  # finite: an option enters the cell's identity
    return tuple(sorted((key, tuple(value) if isinstance(value, list) else value) for key, value in extra.items()))


def _model(value: object, base: ModelConfig, where: str) -> ModelConfig:
    table = _table(value, where)
    kind = _model_kind(table.get("kind", base.kind), f"{where}.kind")
    if kind in MODEL_KINDS:
        _check_keys(table, MODEL_KEYS, where)
    options = _model_options(table, kind, where) if kind not in MODEL_KINDS else ()
    if kind == base.kind:  # a task's table changes the options it names, as it does the widths
        options = tuple(sorted({**dict(base.options), **dict(options)}.items()))
    hidden = _widths(table.get("hidden", list(base.hidden)), f"{where}.hidden")
    channels = _widths(table.get("channels", list(base.channels) if kind == base.kind else []), f"{where}.channels")
    conv_keep = validate_keep_rates(table.get("conv_keep", base.conv_keep), f"{where}.conv_keep")
    if len(conv_keep) != 1:
        raise UserError(f"{where}.conv_keep: expected one keep rate, got {list(conv_keep)}")
    if kind == "cnn" and not channels:
        raise UserError(f"{where}.channels: a 'cnn' needs conv channels, e.g. channels = [32, 64, 128]")
    if kind != "cnn" and (channels or conv_keep[0] != 1.0):
        raise UserError(f"{where}: 'channels' and 'conv_keep' apply to kind = 'cnn' only")
    fixed_pn = table.get("fixed_pn", base.fixed_pn)
    if not isinstance(fixed_pn, bool):
        raise UserError(f"{where}.fixed_pn: expected true or false, got {fixed_pn!r}")
    return ModelConfig(
        kind=kind, hidden=hidden, channels=channels, conv_keep=conv_keep[0], fixed_pn=fixed_pn, options=options
    )


def _optimizer(value: object, base: OptimizerConfig, where: str) -> OptimizerConfig:
    table = _table(value, where)
    _check_keys(table, OPTIMIZER_KEYS, where)
    # A different optimizer name starts from that optimizer's defaults, not from the base's settings; the lr and
    # its schedule carry over (they are the step size's, whichever optimizer takes it), a momentum ramp does not.
    name = _str(table.get("name", base.name), f"{where}.name", OPTIMIZERS)
    config = base if name == base.name else OptimizerConfig(name=name, lr=base.lr, schedule=base.schedule)
    lr = _number(table.get("lr", config.lr), f"{where}.lr")
    momentum = _number(table.get("momentum", config.momentum), f"{where}.momentum")
    nesterov = table.get("nesterov", config.nesterov)
    betas = table.get("betas", list(config.betas))
    if lr <= 0:
        raise UserError(f"{where}.lr: must be > 0, got {lr:g}")
    if not 0.0 <= momentum < 1.0:
        raise UserError(f"{where}.momentum: must be in [0, 1), got {momentum:g}")
    if not isinstance(nesterov, bool):
        raise UserError(f"{where}.nesterov: expected true or false, got {nesterov!r}")
    if not (isinstance(betas, list) and len(betas) == 2):
        raise UserError(f"{where}.betas: expected two numbers in [0, 1), got {betas!r}")
    beta_pair = (_number(betas[0], f"{where}.betas"), _number(betas[1], f"{where}.betas"))
    if not all(0.0 <= b < 1.0 for b in beta_pair):
        raise UserError(f"{where}.betas: expected two numbers in [0, 1), got {betas!r}")
    schedule = _schedule(table["schedule"], f"{where}.schedule") if "schedule" in table else config.schedule
    ramp = config.momentum_ramp
    if "momentum_ramp" in table:
        ramp = _momentum_ramp(table["momentum_ramp"], f"{where}.momentum_ramp")
        if ramp is not None and name != "sgd":
            raise UserError(
                f"{where}.momentum_ramp: only for name = 'sgd' ({name} has no momentum to raise: its betas stay as "
                "given); remove it, or drop an inherited ramp with momentum_ramp = { epochs = 0 }"
            )
    return OptimizerConfig(
        name=name,
        lr=lr,
        momentum=momentum,
        nesterov=nesterov,
        betas=beta_pair,
        schedule=schedule,
        momentum_ramp=ramp,
    )


def _fraction(value: object, where: str, *, low_open: bool, high_open: bool) -> float:
    """A number in [0, 1], each end excluded where asked, refused with the interval named."""
    number = _number(value, where)
    above = number > 0.0 if low_open else number >= 0.0
    below = number < 1.0 if high_open else number <= 1.0
    if not (above and below):
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise UserError(f"{where}: must be in {interval}, got {number:g}")
    return number


def _schedule(value: object, where: str) -> LrSchedule:
    """`schedule = { kind = ..., <the kind's parameters>, warmup_epochs = W }` (SCHEDULE_KEYS). A decay that
    cannot change the lr (gamma = 1) is the constant schedule, so that it trains, and is identified, as one."""
    table = _table(value, where)
    if "kind" not in table:
        raise UserError(f"{where}: no kind; give kind = one of {', '.join(SCHEDULE_KINDS)}")
    kind = _str(table["kind"], f"{where}.kind", SCHEDULE_KINDS)
    _check_keys(table, SCHEDULE_KEYS[kind], f"{where} (kind '{kind}')")
    for required in SCHEDULE_REQUIRED.get(kind, ()):
        if required not in table:
            raise UserError(f"{where}: kind '{kind}' needs {required} ({SCHEDULE_MEANINGS[required]})")
    warmup = _int(table.get("warmup_epochs", 0), f"{where}.warmup_epochs", 0)
    gamma = _fraction(table["gamma"], f"{where}.gamma", low_open=True, high_open=False) if "gamma" in table else 1.0
    every = _int(table["every"], f"{where}.every", 1) if "every" in table else 1
    floor = _fraction(table.get("floor", 0.0), f"{where}.floor", low_open=False, high_open=True)
    if kind in ("exponential", "step") and gamma == 1.0:
        return LrSchedule(warmup_epochs=warmup)
    return LrSchedule(kind=kind, gamma=gamma, every=every, floor=floor, warmup_epochs=warmup)


def _momentum_ramp(value: object, where: str) -> MomentumRamp | None:
    """`momentum_ramp = { start = 0.5, epochs = T }`; `epochs = 0` is no ramp (how a task drops an inherited one)."""
    table = _table(value, where)
    _check_keys(table, MOMENTUM_RAMP_KEYS, where)
    if "epochs" not in table:
        raise UserError(f"{where}: no epochs; give epochs = T, the epochs over which the momentum rises")
    epochs = _int(table["epochs"], f"{where}.epochs", 0)
    start = _number(table.get("start", DEFAULT_RAMP_START), f"{where}.start")
    if not 0.0 <= start < 1.0:
        raise UserError(f"{where}.start: must be in [0, 1), got {start:g}")
    return MomentumRamp(start=start, epochs=epochs) if epochs else None


def check_schedule_fits(task: TaskConfig, table: dict, source: str, where: str) -> None:
    """Refuse a warm-up or a momentum ramp that does not end within the task's epochs as the suite file gives
    them; `table` is the task's own ([[task]]), `where` names it. (A flag or a halving rung may shorten a training
    later: it then stops inside its warm-up or ramp, as a longer training's first epochs do.)"""
    optimizer = task.optimizer
    given = table.get("optimizer")
    own: dict = given if isinstance(given, dict) else {}

    def named(key: str) -> str:  # the optimizer table the key came from: the task's own, or the suite's
        return f"{where}.optimizer.{key}" if key in own else f"{source}: optimizer.{key}"

    warmup = optimizer.schedule.warmup_epochs
    if warmup >= task.epochs:
        raise UserError(
            f"{named('schedule')}.warmup_epochs: {warmup} is not below the {task.epochs} epochs of task "
            f"'{task.name}': the lr would never reach its value; lower it"
        )
    ramp = optimizer.momentum_ramp
    if ramp is not None and ramp.epochs >= task.epochs:
        raise UserError(
            f"{named('momentum_ramp')}.epochs: {ramp.epochs} is not below the {task.epochs} epochs of task "
            f"'{task.name}': the momentum would never reach its final {optimizer.momentum:g}; lower it"
        )


def _task_config(table: dict, defaults: TaskConfig, where: str, source: str = "") -> TaskConfig:
    _check_keys(table, (*TASK_KEYS, *FILE_TASK_KEYS), where)
    name = _str(table.get("name"), f"{where}.name")
    data = None
    if "path" in table:
        data = _file_task(table, name, source, where)
    else:
        given = next((key for key in FILE_TASK_KEYS if key in table), None)
        if given is not None:
            raise UserError(f"{where}.{given}: for a task read from files; give its path = '...' as well")
        try:
            get_task(name)
        except UserError as error:
            raise UserError(f"{where}.name: {error}") from None
    return TaskConfig(
        data=data,
        name=name,
        model=_model(table["model"], defaults.model, f"{where}.model") if "model" in table else defaults.model,
        optimizer=(
            _optimizer(table["optimizer"], defaults.optimizer, f"{where}.optimizer")
            if "optimizer" in table
            else defaults.optimizer
        ),
        batch_size=_int(table.get("batch_size", defaults.batch_size), f"{where}.batch_size", 1),
        epochs=_int(table.get("epochs", defaults.epochs), f"{where}.epochs", 1),
    )


def _file_task(table: dict, name: str, source: str, where: str) -> FileTask:
    """A [[task]] with a `path`: the file (or image folder) and how to read and split it; a relative path is
    relative to the suite file. The files are hashed here: their SHA-256 enters every cell's identity."""
    if not SUITE_NAME.fullmatch(name):
        raise UserError(
            f"{where}.name: {name!r} is not allowed; a task read from files is named as a suite: {SUITE_NAME_RULE}"
        )
    if name in TASKS or name in TASK_REGISTRY.plugin_names():
        raise UserError(f"{where}.name: '{name}' is a registered task; give the task read from files another name")
    base = Path(source).parent
    declared = _str(table["format"], f"{where}.format", FORMATS) if "format" in table else None
    path = base / _str(table["path"], f"{where}.path")
    format = detect_format(path, declared, f"{where}.path")
    check_exists(path, format, f"{where}.path")
    for key in FORMAT_KEYS:
        if key in table and key not in FILE_KEYS_BY_FORMAT[format]:
            applies = [f for f, keys in FILE_KEYS_BY_FORMAT.items() if key in keys]
            raise UserError(f"{where}.{key}: applies to {' and '.join(applies)} tasks; {path} is read as {format}")
    test_path = None
    if "test_path" in table:
        test_path = base / _str(table["test_path"], f"{where}.test_path")
        if detect_format(test_path, declared, f"{where}.test_path") != format:
            raise UserError(f"{where}.test_path: {test_path} is not of the form of {path} ({format})")
        check_exists(test_path, format, f"{where}.test_path")
    val, test = _file_split(table.get("split", {}), test_path is not None, f"{where}.split")
    if format in TABULAR and "target" not in table:
        raise UserError(f"{where}: a table needs target = '<the column to predict>'")
    arrays = _table(table.get("arrays", {}), f"{where}.arrays")
    _check_keys(arrays, ARRAY_KEYS, f"{where}.arrays")
    return FileTask(
        name=name,
        path=str(path.resolve()),
        format=format,
        sha256=content_sha256(path, format),
        test_path=str(test_path.resolve()) if test_path is not None else None,
        test_sha256=content_sha256(test_path, format) if test_path is not None else None,
        val=val,
        test=test,
        target=_str(table["target"], f"{where}.target") if "target" in table else None,
        features=_columns(table["features"], f"{where}.features", table.get("target")) if "features" in table else None,
        kind=_str(table["kind"], f"{where}.kind", KINDS) if "kind" in table else None,
        size=_image_size(table["size"], f"{where}.size") if "size" in table else None,
        color=_str(table["color"], f"{where}.color", COLORS) if "color" in table else None,
        x_key=_str(arrays.get("x", "x"), f"{where}.arrays.x"),
        y_key=_str(arrays.get("y", "y"), f"{where}.arrays.y"),
    )


def _file_split(value: object, has_test_file: bool, where: str) -> tuple[float | int, float | int | None]:
    """`split = { val = 0.2, test = 0.2 }`: fractions of the rows in (0, 1), or counts ≥ 1; no `test` beside a
    test file, whose rows are the test set."""
    table = _table(value, where)
    _check_keys(table, SPLIT_KEYS, where)
    if has_test_file and "test" in table:
        raise UserError(f"{where}.test: the test_path file is the test set; remove test (or test_path)")
    sizes = [
        _split_size(table.get(key, default), f"{where}.{key}") for key, default in zip(SPLIT_KEYS, DEFAULT_FILE_SPLIT)
    ]
    val, test = sizes[0], None if has_test_file else sizes[1]
    fractions = [size for size in (val, test) if isinstance(size, float)]
    if sum(fractions) >= 1.0:
        raise UserError(f"{where}: val and test take {sum(fractions):g} of the rows, leaving none to train on")
    return val, test


def _split_size(value: object, where: str) -> float | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return _int(value, where, 1)
    number = _number(value, where)
    if not 0.0 < number < 1.0:
        raise UserError(f"{where}: a fraction of the rows in (0, 1) or a count ≥ 1, got {number:g}")
    return number


def _columns(value: object, where: str, target: object) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: expected a list of column names, got {value!r}")
    columns = tuple(_str(column, where) for column in value)
    _refuse_repeats(columns, where, "column")
    if target in columns:
        raise UserError(f"{where}: '{target}' is the target; a feature must be another column")
    return columns


def _image_size(value: object, where: str) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2):
        raise UserError(f"{where}: expected [height, width] in pixels, got {value!r}")
    height, width = (_int(v, where, 1) for v in value)
    return height, width


def _strength_values(name: str, value: object, where: str) -> tuple[float, ...]:
    """A number, a list of numbers, or { log = [low, high], num = n } (n values evenly spaced in log)."""
    if isinstance(value, dict):
        _check_keys(value, ("log", "num"), where)
        bounds, num = value.get("log"), value.get("num")
        if not (isinstance(bounds, list) and len(bounds) == 2):
            raise UserError(f"{where}.log: expected [low, high], got {bounds!r}")
        low, high = (validate_strength(name, b, f"{where}.log") for b in bounds)
        count = _int(num, f"{where}.num", 2)
        if count > MAX_SWEEP_VALUES:
            raise UserError(f"{where}.num: at most {MAX_SWEEP_VALUES:,} values per sweep, got {count:,}")
        if low >= high:
            raise UserError(f"{where}.log: low must be below high, got {bounds!r}")
        values = tuple(float(f"{low * (high / low) ** (i / (count - 1)):.6g}") for i in range(count))
        if first_repeat(values) is not None:
            raise UserError(
                f"{where}: num = {count} values over log = {bounds!r} repeat at 6 significant digits "
                "(the CSV's precision); widen the range or lower num"
            )
        return values
    values = tuple(validate_strength(name, v, where) for v in _list(value, where))
    # Strengths are written with 6 significant digits (the CSV's strength column): compare them so.
    _refuse_repeats((float(f"{v:.6g}") for v in values), where, "strength")
    return values


def _strengths(value: object, where: str) -> tuple[dict[str, tuple[float, ...]], float]:
    """Swept strengths by regularizer name, and the kl-sparsity target ρ."""
    sweeps, target = {}, 0.05
    for name, settings in _table(value, where).items():
        if not REGULARIZER_REGISTRY.known(name):
            raise UserError(f"{where}.{name}: unknown regularizer; known: {known_names()}")
        settings = _table(settings, f"{where}.{name}")
        _check_keys(settings, REGULARIZER_KEYS if name == "kl-sparsity" else ("strength",), f"{where}.{name}")
        if "strength" in settings:
            if name == "none":
                raise UserError(f"{where}.none: 'none' takes no strength")
            sweeps[name] = _strength_values(name, settings["strength"], f"{where}.{name}.strength")
        if "target" in settings:
            target = _number(settings["target"], f"{where}.{name}.target")
            if not 0 < target < 1:
                raise UserError(f"{where}.{name}.target: ρ must be in (0, 1), got {target:g}")
    return sweeps, target


def _regularizers(
    names: object, sweeps: dict[str, tuple[float, ...]], kl_target: float, where: str
) -> tuple[RegularizerSetting, ...]:
    specs = [_str(n, where) for n in _list(names, where)]
    try:
        parsed = [parse_regularizer(spec) for spec in specs]
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    # A combination of swept parts is a product of sweeps: count it before expanding it.
    combinations = {spec: math.prod(len(sweeps.get(n, ())) or 1 for n, _ in p.parts) for spec, p in zip(specs, parsed)}
    if (total := sum(combinations.values())) > MAX_GRID_CELLS:
        biggest = max(combinations, key=combinations.__getitem__)
        raise UserError(
            f"{where}: {total:,} regularizer settings ('{biggest}' alone: {combinations[biggest]:,} combinations of "
            f"swept strengths); a suite may have at most {MAX_GRID_CELLS:,} cells"
        )
    settings = [s for spec in specs for s in expand_regularizer(spec, sweeps, kl_target=kl_target)]
    repeated = first_repeat((s.name, s.strength_label) for s in settings)
    if repeated is not None:
        name, strength = repeated
        shown = f"'{name}'" + (f" with strength {strength}" if strength else "")
        raise UserError(f"{where}: regularizer {shown} is listed twice")
    return tuple(settings)


# ---------------------------------------------------------------- combinations left out of the grid (`exclude`)


def _exclusions(value: object, source: str) -> tuple[Exclusion, ...]:
    """`exclude = [{ keep_rate = 0.5, input_keep_rate = 1.0 }, ...]` (or [[exclude]] tables): each entry's keys and
    the types of its values. Whether the values are on the grid is checked against the grid (place_exclusions)."""
    where = f"{source}: exclude"
    if not isinstance(value, list):
        raise UserError(
            f"{where}: expected an array of tables, e.g. exclude = [{{ keep_rate = 0.5, dropout = 'gaussian' }}]"
        )
    return tuple(_exclusion(entry, f"{where}[{i}]") for i, entry in enumerate(value))


def _exclusion(value: object, where: str) -> Exclusion:
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a table of grid values, e.g. {{ keep_rate = 0.5 }}, got {value!r}")
    for key in ("seed", "seeds"):
        if key in value:
            raise UserError(
                f"{where}.{key}: seeds cannot be excluded (every point of the grid runs at every seed); choose them "
                "with `seeds` or --seeds"
            )
    _check_keys(value, tuple(EXCLUDE_KEYS), where)
    if not value:
        raise UserError(
            f"{where}: an empty entry would match every cell; give one or more of {', '.join(EXCLUDE_KEYS)}"
        )
    return Exclusion(
        where, tuple((key, _exclude_value(key, value[key], f"{where}.{key}")) for key in EXCLUDE_KEYS if key in value)
    )


def _exclude_value(key: str, value: object, where: str) -> object:
    """An entry's value, checked and normalised as the grid's own values of that axis are."""
    if key == "keep_rate":  # a number, or a list of one per hidden layer, as an entry of keep_rates
        return _grid_keep_rates([value], where)[0]
    if key == "input_keep_rate":
        if isinstance(value, list):
            raise UserError(f"{where}: expected a number, got {value!r}")
        return validate_keep_rates(value, where)[0]
    if key == "train_size":
        return _int(value, where, 1)
    text = _str(value, where)
    if key == "regularizer":  # the parts in a setting's order, as the grid names it: 'l2+l1' is 'l1+l2'
        return "+".join(sort_parts(part.strip() for part in text.split("+")))
    return text


ExcludeGrid = Literal["own", "final", "file"]


def place_exclusions(suite: Suite, grid: ExcludeGrid) -> Suite:
    """The suite with its entries' values looked up on its grid. `grid` says what the entries were written against:
    "own", this grid (a suite file): a value not on it is refused; "final", the grid the command line's flags make
    of this one (`--set exclude=...`): a value not on it yet is left to Suite.check_grid, after the flags; "file",
    the file's own grid, already checked: a value another `--set` removed matches nothing."""
    axes = suite.axis_values()
    placed = []
    for entry in suite.exclude:
        keys = tuple(key for key, _ in entry.values)
        if grid == "own" and (missing := entry.missing(axes)) is not None:
            raise entry.not_on_grid(*missing, axes)
        if grid == "final":
            keys = tuple(key for key, value in entry.values if _on_axis(key, value, axes))
        placed.append(replace(entry, placed=keys))
    resolved = replace(suite, exclude=tuple(placed))
    resolved.check_some_cell_left()
    return resolved


# ---------------------------------------------------------------- a tuned comparison ([tuning])


def _method(spec: object, where: str) -> Method:
    """'l2+dropout' -> Method: registry regularizers joined by '+', 'dropout' among them or alone; 'none' alone."""
    text = _str(spec, where)
    parts = [part.strip() for part in text.split("+")]
    known = f"known: {known_names()}, and '{DROPOUT}' (combine with +)"
    for part in parts:
        if part != DROPOUT and not REGULARIZER_REGISTRY.known(part):
            raise UserError(f"{where}: unknown part '{part}' in method '{text}'; {known}")
    if len(set(parts)) != len(parts):
        raise UserError(f"{where}: method '{text}' names a part twice")
    if BASELINE in parts and len(parts) > 1:
        raise UserError(f"{where}: method '{text}': '{BASELINE}' is the baseline and cannot be combined")
    regularizers = tuple(sort_parts(p for p in parts if p not in (DROPOUT, BASELINE)))
    return Method(name=text, regularizers=regularizers, dropout=DROPOUT in parts)


def _space_value(name: str, value: object, where: str) -> float:
    """One value of a search space, checked as the suite checks that hyperparameter anywhere else."""
    if name in (KEEP, INPUT_KEEP):
        rate = _number(value, where)
        if problem := keep_rate_problem(rate):
            raise UserError(f"{where}: {problem}")
        return rate
    if name == LR:
        rate = _number(value, where)
        if rate <= 0:
            raise UserError(f"{where}: lr must be > 0, got {rate:g}")
        return rate
    return validate_strength(name, value, where)


def _space(name: str, value: object, where: str) -> Space:
    """A list of values, or exactly one of { log = [low, high] }, { range = [low, high] }, { int = [low, high] }."""
    if isinstance(value, list):
        values = tuple(_space_value(name, v, where) for v in _list(value, where))
        _refuse_repeats((float(f"{v:.6g}") for v in values), where, "value")
        return Space(name, "list", values=values)
    if not isinstance(value, dict):
        raise UserError(
            f"{where}: expected a list of values or one of {{ log = [low, high] }}, {{ range = [low, high] }}, "
            f"{{ int = [low, high] }}; got {value!r}"
        )
    _check_keys(value, SPACE_FORMS, where)
    if len(value) != 1:
        raise UserError(f"{where}: give exactly one of {', '.join(SPACE_FORMS)}, got {len(value)}")
    form, bounds = next(iter(value.items()))
    if not (isinstance(bounds, list) and len(bounds) == 2):
        raise UserError(f"{where}.{form}: expected [low, high], got {bounds!r}")
    if form == "int":
        low_int, high_int = (_int(b, f"{where}.int", 1) for b in bounds)
        if name != "early-stopping":
            raise UserError(f"{where}.int: whole numbers are for early-stopping's patience; use log or range")
    elif name == "early-stopping":
        raise UserError(
            f"{where}.{form}: early-stopping's patience is whole epochs: use {{ int = [low, high] }} or a list"
        )
    low, high = (_space_value(name, b, f"{where}.{form}") for b in bounds)
    if form == "int":
        low, high = float(low_int), float(high_int)
    if low >= high:
        raise UserError(f"{where}.{form}: low must be below high, got {bounds!r}")
    return Space(name, form, low=low, high=high)


def _spaces(value: object, methods: tuple[Method, ...], where: str) -> dict[str, Space]:
    """[tuning.space]: a space for every hyperparameter some method tunes, and none that no method uses."""
    table = _table(value, where)
    names = [part for method in methods for part in method.regularizers]  # plugins' and references among them
    allowed = (
        *dict.fromkeys(n for n in (*REGULARIZER_REGISTRY.names(), *names) if n != BASELINE),
        KEEP,
        INPUT_KEEP,
        LR,
    )
    _check_keys(table, allowed, where)
    spaces = {name: _space(name, table[name], f"{where}.{name}") for name in table}
    needed = {part: m.name for m in methods for part in m.regularizers}
    dropout = next((m.name for m in methods if m.dropout), None)
    if dropout is not None:
        needed[KEEP] = dropout
    for name, method in needed.items():
        if name not in spaces:
            what = "the hidden keep rate" if name == KEEP else f"the strength of '{name}'"
            raise UserError(f"{where}: method '{method}' tunes {what}: add a space for {name}, e.g. {name} = [...]")
    unused = [n for n in spaces if n not in needed and n != LR and not (n == INPUT_KEEP and KEEP in needed)]
    if unused:
        user = "a method naming 'dropout'" if unused[0] == INPUT_KEEP else f"a method with '{unused[0]}'"
        raise UserError(f"{where}.{unused[0]}: no method tunes it; remove it or add {user} to methods")
    return spaces


def _budget(value: object, where: str) -> int | None:
    """A number of trials (≥ 1), or "grid" (None): each method's whole grid."""
    if value == "grid":
        return None
    if isinstance(value, str):
        raise UserError(f'{where}: expected a number of trials ≥ 1 or "grid", got {value!r}')
    budget = _int(value, where, 1)
    if budget > MAX_GRID_CELLS:
        raise UserError(f"{where}: at most {MAX_GRID_CELLS:,} trials per method, got {budget:,}")
    return budget


def _tuning(value: object, source: str) -> Tuning:
    """The [tuning] table: methods, budget and sampler, seeds, evaluation protocol, metric and search spaces."""
    where = f"{source}: tuning"
    table = _table(value, where)
    _check_keys(table, TUNING_KEYS, where)
    for key in ("methods", "budget"):
        if key not in table:
            raise UserError(f"{where}: '{key}' is required")
    methods = tuple(_method(m, f"{where}.methods") for m in _list(table["methods"], f"{where}.methods"))
    _refuse_repeats(
        (tuple(sorted((*m.regularizers, *([DROPOUT] if m.dropout else [])))) or (BASELINE,) for m in methods),
        f"{where}.methods",
        "method with the parts",
    )
    budget = _budget(table["budget"], f"{where}.budget")
    sampler = _str(table.get("sampler", "grid" if budget is None else "sobol"), f"{where}.sampler", SAMPLERS)
    if budget is None and sampler != "grid":
        raise UserError(f'{where}.budget: "grid" takes every point of each method\'s grid; it needs sampler = "grid"')
    evaluation = _str(table.get("evaluation", "fresh"), f"{where}.evaluation", EVALUATIONS)
    if evaluation == "same" and "evaluation_seeds" in table:
        raise UserError(f'{where}.evaluation_seeds: with evaluation = "same" the tuning seeds are reported; remove it')
    tuning = Tuning(
        methods=methods,
        space=_spaces(table.get("space", {}), methods, f"{where}.space"),
        budget=budget,
        sampler=sampler,
        seed=_int(table.get("seed", 0), f"{where}.seed", 0),
        tuning_seeds=_int(table.get("tuning_seeds", 3), f"{where}.tuning_seeds", 1),
        evaluation=evaluation,
        evaluation_seeds=_int(table.get("evaluation_seeds", 5), f"{where}.evaluation_seeds", 1),
        metric=_str(table.get("metric", "auto"), f"{where}.metric", TUNING_METRICS),
        halving=_halving(table["halving"], f"{where}.halving") if "halving" in table else None,
    )
    if tuning.halving is not None:
        most = max(tuning.trial_count(m) for m in methods)
        if most < 2:
            raise UserError(f"{where}.halving: every method has one trial, so there is nothing to halve; remove it")
        if tuning.halving.eta > most:
            raise UserError(
                f"{where}.halving.eta: {tuning.halving.eta} is more than the most trials a method has ({most}): the "
                "first rung would keep one trial, a choice on the first rung's epochs alone; lower eta"
            )
    if sampler == "grid":
        for method in methods:
            ranges = [n for n in tuning.hyperparameters(method) if tuning.space[n].form != "list"]
            if ranges:
                raise UserError(
                    f'{where}.space.{ranges[0]}: sampler "grid" takes every point of a space of lists; '
                    f'write {ranges[0]} as a list, or sample it (sampler = "sobol" or "random")'
                )
            size = tuning.grid_size(method)
            if budget is not None and size > budget:
                raise UserError(
                    f"{where}.budget: method '{method.name}' has a grid of {size:,} points, more than the budget of "
                    f'{budget}: raise the budget, shorten its lists, or sample them (sampler = "sobol")'
                )
    return tuning


def _halving(value: object, where: str) -> Halving:
    """[tuning] halving = { min_epochs = R, eta = N, alpha = A }: successive halving's first rung, reduction factor
    and (optional) the stopping test's level."""
    table = _table(value, where)
    _check_keys(table, HALVING_KEYS + HALVING_OPTIONAL, where)
    for key in HALVING_KEYS:
        if key not in table:
            raise UserError(f"{where}: '{key}' is required")
    eta = table["eta"]
    if isinstance(eta, int) and not isinstance(eta, bool) and eta < 2:
        raise UserError(f"{where}.eta: {eta} keeps every trial; successive halving needs eta ≥ 2 (3 is usual)")
    alpha = _number(table.get("alpha", STOP_ALPHA), f"{where}.alpha")
    if not 0 < alpha <= 0.5:
        raise UserError(
            f"{where}.alpha: {alpha:g} is not a level in (0, 0.5]: the one-sided level at which a trial is stopped "
            "as worse than the cut (0.05 by default; 0.5 is plain top-⌈n/eta⌉)"
        )
    return Halving(_int(table["min_epochs"], f"{where}.min_epochs", 1), _int(eta, f"{where}.eta", 2), alpha)


def check_tuning_fits(tuning: Tuning, tasks: tuple[TaskConfig, ...], where: str) -> None:
    """Refuse a tuned method that cannot act on a task: dropout where the model has no hidden layer, val_acc
    where the task has no accuracy (regression); halving whose first rung is not shorter than a task's epochs."""
    for task in tasks:
        if tuning.halving is not None and tuning.halving.min_epochs >= task.epochs:
            raise UserError(
                f"{where}: tuning.halving.min_epochs: {tuning.halving.min_epochs} is not below task "
                f"'{task.name}''s {task.epochs} epochs: the first rung would be the full training; lower it"
            )
        if not task.model.hidden:
            method = next((m for m in tuning.methods if m.dropout), None)
            if method is not None:
                raise UserError(
                    f"{where}: tuning.methods: '{method.name}' tunes the hidden keep rate but task '{task.name}' "
                    "has no hidden layer (hidden = [])"
                )
        if tuning.metric == "val_acc" and get_task(task.key).kind == "regression":
            raise UserError(
                f'{where}: tuning.metric: task \'{task.name}\' is a regression (no accuracy); use "auto" or "val_loss"'
            )


def _refuse_beside_tuning(data: dict, source: str) -> None:
    """A [tuning] table is the grid: keys that would cross it with another grid are refused, one line each."""
    for key, reason in GRID_KEYS_TUNING_REPLACES.items():
        if key in data:
            raise UserError(f"{source}: {key}: not used beside [tuning] ({reason}); remove it")
    for key in ("input_keep_rate", "dropout", "train_size"):
        if isinstance(data.get(key), list) and len(data[key]) != 1:
            raise UserError(
                f"{source}: {key}: one value beside [tuning] (a list would make it a grid axis across the tuned "
                "methods; to tune the input keep rate, give [tuning.space] input_keep)"
            )
    for name, settings in _table(data.get("regularizer", {}), f"{source}: regularizer").items():
        if isinstance(settings, dict) and "strength" in settings:
            raise UserError(
                f"{source}: regularizer.{name}.strength: strengths are tuned beside [tuning]; give the space as "
                f"[tuning.space] {name}"
            )


# ---------------------------------------------------------------- the whole file


def parse_suite(data: dict, source: str, exclude_grid: ExcludeGrid = "own") -> Suite:
    """Validate a parsed TOML document; `source` names the file in every message. `exclude_grid` is the grid its
    `exclude` entries were written against (place_exclusions): the document's own unless --set changed it."""
    _check_keys(data, SUITE_KEYS, source)
    defaults = TaskConfig(
        name="",
        model=_model(data.get("model", {}), ModelConfig(), f"{source}: model"),
        optimizer=_optimizer(data.get("optimizer", {}), OptimizerConfig(), f"{source}: optimizer"),
        batch_size=_int(data.get("batch_size", DEFAULT_BATCH_SIZE), f"{source}: batch_size", 1),
        epochs=_int(data.get("epochs", DEFAULT_EPOCHS), f"{source}: epochs", 1),
    )
    sweeps, kl_target = _strengths(data.get("regularizer", {}), f"{source}: regularizer")
    if "task" not in data:
        raise UserError(f"{source}: no [[task]] table; a suite needs at least one task")
    raw_tasks = data["task"]
    if not isinstance(raw_tasks, list) or not all(isinstance(t, dict) for t in raw_tasks):
        raise UserError(f"{source}: 'task' must be an array of tables ([[task]])")
    if not raw_tasks:
        raise UserError(f"{source}: task: the suite has no task; add a [[task]] table with a name")
    tasks = tuple(_task_config(t, defaults, f"{source}: task[{i}]", source) for i, t in enumerate(raw_tasks))
    for i, (task, table) in enumerate(zip(tasks, raw_tasks)):
        check_schedule_fits(task, table, source, f"{source}: task[{i}]")
    _refuse_repeats((t.name for t in tasks), f"{source}: task", "task")
    if "tuning" in data:
        return _tuned_suite(data, source, tasks, defaults, kl_target)
    suite = Suite(
        name=_suite_name(data, source),
        description=_str(data.get("description", ""), f"{source}: description"),
        source=source,
        tasks=tasks,
        regularizers=_regularizers(data.get("regularizers", ["none"]), sweeps, kl_target, f"{source}: regularizers"),
        keep_rates=_grid_keep_rates(data.get("keep_rates", list(DEFAULT_KEEP_RATES)), f"{source}: keep_rates"),
        input_keep_rates=validate_keep_rates(data.get("input_keep_rate", 1.0), f"{source}: input_keep_rate"),
        dropouts=_dropouts(data.get("dropout", "bernoulli"), f"{source}: dropout"),
        seeds=_seeds(data.get("seeds", DEFAULT_SEEDS), f"{source}: seeds"),
        train_sizes=_train_sizes(data["train_size"], f"{source}: train_size") if "train_size" in data else (0,),
        mc_samples=_int(data.get("mc_samples", 0), f"{source}: mc_samples", 0),
        task_defaults=defaults,
        sweeps=sweeps,
        kl_target=kl_target,
        exclude=_exclusions(data.get("exclude", []), source),
    )
    return place_exclusions(suite, exclude_grid)


def _tuned_suite(
    data: dict, source: str, tasks: tuple[TaskConfig, ...], defaults: TaskConfig, kl_target: float
) -> Suite:
    """A suite with a [tuning] table: its grid is the tuning protocol's (dropbench.tuning); the fixed values
    beside it are the input keep rate of methods with dropout, the dropout kind, the training-set size."""
    _refuse_beside_tuning(data, source)
    suite = Suite(
        name=_suite_name(data, source),
        description=_str(data.get("description", ""), f"{source}: description"),
        source=source,
        tasks=tasks,
        regularizers=(),
        keep_rates=(1.0,),
        input_keep_rates=validate_keep_rates(data.get("input_keep_rate", 1.0), f"{source}: input_keep_rate"),
        dropouts=_dropouts(data.get("dropout", "bernoulli"), f"{source}: dropout"),
        seeds=(),
        train_sizes=_train_sizes(data["train_size"], f"{source}: train_size") if "train_size" in data else (0,),
        mc_samples=_int(data.get("mc_samples", 0), f"{source}: mc_samples", 0),
        task_defaults=defaults,
        kl_target=kl_target,
        tuning=_tuning(data["tuning"], source),
    )
    suite.check_grid()
    return suite


def _suite_name(data: dict, source: str) -> str:
    """The suite's `name`, or its file's stem, checked against SUITE_NAME before it names any file."""
    given = "name" in data
    name = _str(data["name"], f"{source}: name") if given else Path(source).stem
    if not SUITE_NAME.fullmatch(name):
        origin = "" if given else " (taken from the file name; set name = '...' in the file)"
        raise UserError(f"{source}: name: {name!r}{origin} is not allowed; a suite name is {SUITE_NAME_RULE}")
    return name


def read_suite_document(path: Path) -> dict:
    """A suite file's TOML document, not yet validated."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None


def load_suite(
    name_or_path: str | Path | None = None, *, set: "Mapping[str, object] | Sequence[SetOverride] | None" = None
) -> Suite:
    """Load a suite by path or bundled name (None: the default, offline 'quick' suite). `set` changes keys of its
    document before it is validated (dropbench.overrides): {"optimizer.lr": 0.05, "task.digits.epochs": 5}, or
    the parsed `--set` flags."""
    path = find_suite(None if name_or_path is None else str(name_or_path))
    data = read_suite_document(path)
    if not set:
        return parse_suite(data, str(path))
    from .overrides import parse_suite_with

    return parse_suite_with(data, str(path), set)


def _default_task(suite: Suite, name: str) -> TaskConfig:
    """A task the suite does not list, trained with the suite's defaults."""
    if suite.task_defaults is None:
        raise ValueError(f"suite {suite.name} has no task_defaults (parse_suite sets them): cannot add task {name}")
    return replace(suite.task_defaults, name=name)


def apply_overrides(suite: Suite, overrides: Overrides) -> Suite:
    """The suite with command-line values in place of the file's."""
    if suite.tuning is not None:
        _refuse_tuned_overrides(suite, overrides)
    tasks = suite.tasks
    if overrides.tasks is not None:
        by_name = {t.name: t for t in suite.tasks}
        for name in overrides.tasks:
            if name not in by_name:
                get_task(name)  # an unknown name fails here with the list of known tasks
        _refuse_repeats(overrides.tasks, "--task", "task")
        tasks = tuple(by_name.get(n) or _default_task(suite, n) for n in overrides.tasks)
    if overrides.epochs is not None:
        tasks = tuple(replace(t, epochs=overrides.epochs) for t in tasks)
    keep_rates = suite.keep_rates
    if overrides.keep_rates is not None:
        keep_rates = validate_keep_rates(list(overrides.keep_rates), "--keep")
    input_keep_rates = suite.input_keep_rates
    if overrides.input_keep_rates is not None:
        input_keep_rates = validate_keep_rates(list(overrides.input_keep_rates), "--input-keep")
    regularizers = suite.regularizers
    if overrides.regularizers is not None:
        regularizers = _regularizers(list(overrides.regularizers), suite.sweeps, suite.kl_target, "--reg")
    dropouts = suite.dropouts
    if overrides.dropouts is not None:
        dropouts = _dropouts(list(overrides.dropouts), "--dropout")
    train_sizes = suite.train_sizes
    if overrides.train_sizes is not None:
        train_sizes = _train_sizes(list(overrides.train_sizes), "--train-size")
    resolved = replace(
        suite,
        tasks=tasks,
        keep_rates=keep_rates,
        input_keep_rates=input_keep_rates,
        regularizers=regularizers,
        dropouts=dropouts,
        train_sizes=train_sizes,
        mc_samples=suite.mc_samples if overrides.mc_samples is None else overrides.mc_samples,
        precision=suite.precision if overrides.precision is None else overrides.precision,
    )
    if overrides.seeds is not None:
        # Counted with the other axes before range(seeds) is built: `--seeds 100000000` is refused at once.
        count = overrides.seeds if isinstance(overrides.seeds, int) else len(overrides.seeds)
        check_grid_size({**resolved.axis_lengths(), "seeds": count}, "--seeds")
        if isinstance(overrides.seeds, int):
            resolved = replace(resolved, seeds=tuple(range(_int(overrides.seeds, "--seeds", 1))))
        else:  # the seeds themselves: a seed's cells are the same cells whichever list or count names it
            resolved = replace(resolved, seeds=_seeds(list(overrides.seeds), "--seeds"))
    flags = [flag for flag, value in _grid_flags(overrides).items() if value is not None]
    resolved.check_grid(
        keep_where="--keep" if overrides.keep_rates is not None else None,
        dropout_where="--dropout" if overrides.dropouts is not None else None,
        exclude_where=f"{suite.source} with {', '.join(flags)}" if flags else None,
    )
    return resolved


def _grid_flags(overrides: Overrides) -> dict[str, object]:
    """The flags that choose values of the grid's axes (seeds aside, which no exclusion names), by flag."""
    return {
        "--task": overrides.tasks,
        "--reg": overrides.regularizers,
        "--keep": overrides.keep_rates,
        "--input-keep": overrides.input_keep_rates,
        "--dropout": overrides.dropouts,
        "--train-size": overrides.train_sizes,
    }


def _refuse_tuned_overrides(suite: Suite, overrides: Overrides) -> None:
    """Flags that would cross a tuned suite's protocol with another grid axis (see GRID_KEYS_TUNING_REPLACES)."""
    flags = {
        "--keep": overrides.keep_rates,
        "--input-keep": overrides.input_keep_rates,
        "--reg": overrides.regularizers,
        "--seeds": overrides.seeds,
    }
    for flag, value in flags.items():
        if value is not None:
            raise UserError(
                f"{flag}: not used with a tuned suite ({suite.source} has [tuning]: its methods, spaces and seeds "
                "make the grid); edit the [tuning] table instead"
            )
    for flag, values in (("--dropout", overrides.dropouts), ("--train-size", overrides.train_sizes)):
        if values is not None and len(values) != 1:
            raise UserError(
                f"{flag}: one value with a tuned suite (a list would be a grid axis across the tuned methods)"
            )
