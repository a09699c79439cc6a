"""Read and validate a suite TOML, apply command-line overrides, expand it into cells.

Every problem is reported as one UserError naming the file, the key and what is allowed.
"""

import difflib
import itertools
import math
import re
import tomllib
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import TypeVar

from .catalogue import DROPOUT_KINDS
from .config import Cell, ModelConfig, OptimizerConfig, TaskConfig
from .data import get_task
from .errors import UserError
from .keeprates import keep_rate_problem
from .models import MODEL_KINDS
from .regularizers import REGULARIZERS, RegularizerSetting, expand_regularizer, parse_regularizer, validate_strength

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
)
TASK_KEYS = ("name", "model", "optimizer", "batch_size", "epochs")
MODEL_KEYS = ("kind", "hidden", "channels", "conv_keep", "fixed_pn")
OPTIMIZER_KEYS = ("name", "lr", "momentum", "nesterov", "betas")
REGULARIZER_KEYS = ("strength", "target")

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

    def cells(self) -> list[Cell]:
        """The grid in a stable order: task, regularizer, keep rate, input keep rate, dropout, size, seed."""
        self.check_grid()
        return [
            Cell(self.name, task, reg, keep, input_keep, dropout, seed, size, self.mc_samples, self.precision)
            for task, reg, keep, input_keep, dropout, size, seed in itertools.product(
                self.tasks,
                self.regularizers,
                self.keep_rates,
                self.input_keep_rates,
                self.dropouts,
                self.train_sizes,
                self.seeds,
            )
        ]

    def axis_lengths(self) -> dict[str, int]:
        """How many values each axis of the grid has, by a name for messages (plural)."""
        return {
            "tasks": len(self.tasks),
            "regularizers": len(self.regularizers),
            "keep rates": len(self.keep_rates),
            "input keep rates": len(self.input_keep_rates),
            "dropout kinds": len(self.dropouts),
            "train sizes": len(self.train_sizes),
            "seeds": len(self.seeds),
        }

    def check_grid(self, keep_where: str | None = None, dropout_where: str | None = None) -> None:
        """Refuse, before anything is expanded or written, a grid past MAX_GRID_CELLS and a task its keep
        rates or dropout kinds do not fit; the `*_where` name the flag when a value came from one."""
        check_grid_size(self.axis_lengths(), self.source)
        for task in self.tasks:
            for keep in self.keep_rates:
                check_keep_rate_fits(task, keep, keep_where or f"{self.source}: keep_rates")
            for dropout in self.dropouts:
                check_dropout_fits(task, dropout, dropout_where or f"{self.source}: dropout")

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
        }


@dataclass(frozen=True)
class Overrides:
    """Command-line values that replace the suite's; None leaves the suite's value."""

    tasks: tuple[str, ...] | None = None
    keep_rates: tuple[float, ...] | None = None
    input_keep_rates: tuple[float, ...] | None = None
    regularizers: tuple[str, ...] | None = None
    seeds: int | None = None
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
    """Spatial dropout needs conv maps; alpha dropout, a SELU MLP."""
    if dropout == "spatial" and task.model.kind != "cnn":
        raise UserError(f"{where}: dropout 'spatial' drops conv channels; task '{task.name}' uses an mlp")
    if dropout == "alpha" and task.model.kind != "mlp":
        raise UserError(f"{where}: dropout 'alpha' is for SELU MLPs; task '{task.name}' uses a {task.model.kind}")


def check_grid_size(axes: dict[str, int], where: str) -> None:
    """Refuse a grid of more than MAX_GRID_CELLS cells, its size the product of its axes' lengths."""
    cells = math.prod(axes.values())
    if cells > MAX_GRID_CELLS:
        factors = " × ".join(f"{n} {name}" for name, n in axes.items() if n != 1) or "1"
        raise UserError(
            f"{where}: the grid has {factors} = {cells:,} cells; a suite may have at most {MAX_GRID_CELLS:,}: "
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


def _model(value: object, base: ModelConfig, where: str) -> ModelConfig:
    table = _table(value, where)
    _check_keys(table, MODEL_KEYS, where)
    kind = _str(table.get("kind", base.kind), f"{where}.kind", MODEL_KINDS)
    hidden = _widths(table.get("hidden", list(base.hidden)), f"{where}.hidden")
    channels = _widths(table.get("channels", list(base.channels) if kind == base.kind else []), f"{where}.channels")
    conv_keep = validate_keep_rates(table.get("conv_keep", base.conv_keep), f"{where}.conv_keep")
    if len(conv_keep) != 1:
        raise UserError(f"{where}.conv_keep: expected one keep rate, got {list(conv_keep)}")
    if kind == "cnn" and not channels:
        raise UserError(f"{where}.channels: a 'cnn' needs conv channels, e.g. channels = [32, 64, 128]")
    if kind == "mlp" and (channels or conv_keep[0] != 1.0):
        raise UserError(f"{where}: 'channels' and 'conv_keep' apply to kind = 'cnn' only")
    fixed_pn = table.get("fixed_pn", base.fixed_pn)
    if not isinstance(fixed_pn, bool):
        raise UserError(f"{where}.fixed_pn: expected true or false, got {fixed_pn!r}")
    return ModelConfig(kind=kind, hidden=hidden, channels=channels, conv_keep=conv_keep[0], fixed_pn=fixed_pn)


def _optimizer(value: object, base: OptimizerConfig, where: str) -> OptimizerConfig:
    table = _table(value, where)
    _check_keys(table, OPTIMIZER_KEYS, where)
    # A different optimizer name starts from that optimizer's defaults, not from the base's settings.
    name = _str(table.get("name", base.name), f"{where}.name", OPTIMIZERS)
    config = base if name == base.name else OptimizerConfig(name=name, lr=base.lr)
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
    return OptimizerConfig(name=name, lr=lr, momentum=momentum, nesterov=nesterov, betas=beta_pair)


def _task_config(table: dict, defaults: TaskConfig, where: str) -> TaskConfig:
    _check_keys(table, TASK_KEYS, where)
    name = _str(table.get("name"), f"{where}.name")
    try:
        get_task(name)
    except UserError as error:
        raise UserError(f"{where}.name: {error}") from None
    return TaskConfig(
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
        if name not in REGULARIZERS:
            raise UserError(f"{where}.{name}: unknown regularizer; known: {', '.join(REGULARIZERS)}")
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


# ---------------------------------------------------------------- the whole file


def parse_suite(data: dict, source: str) -> Suite:
    """Validate a parsed TOML document; `source` names the file in every message."""
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
    tasks = tuple(_task_config(t, defaults, f"{source}: task[{i}]") for i, t in enumerate(raw_tasks))
    _refuse_repeats((t.name for t in tasks), f"{source}: task", "task")
    return Suite(
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
    )


def _suite_name(data: dict, source: str) -> str:
    """The suite's `name`, or its file's stem, checked against SUITE_NAME before it names any file."""
    given = "name" in data
    name = _str(data["name"], f"{source}: name") if given else Path(source).stem
    if not SUITE_NAME.fullmatch(name):
        origin = "" if given else " (taken from the file name; set name = '...' in the file)"
        raise UserError(f"{source}: name: {name!r}{origin} is not allowed; a suite name is {SUITE_NAME_RULE}")
    return name


def load_suite(name_or_path: str | None = None) -> Suite:
    """Load a suite by path or bundled name (None: the default, offline 'quick' suite)."""
    path = find_suite(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"{path}: not valid TOML: {error}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"{path}: cannot read: {error}") from None
    return parse_suite(data, str(path))


def _default_task(suite: Suite, name: str) -> TaskConfig:
    """A task the suite does not list, trained with the suite's defaults."""
    if suite.task_defaults is None:
        raise ValueError(f"suite {suite.name} has no task_defaults (parse_suite sets them): cannot add task {name}")
    return replace(suite.task_defaults, name=name)


def apply_overrides(suite: Suite, overrides: Overrides) -> Suite:
    """The suite with command-line values in place of the file's."""
    tasks = suite.tasks
    if overrides.tasks is not None:
        by_name = {t.name: t for t in suite.tasks}
        for name in overrides.tasks:
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
        check_grid_size({**resolved.axis_lengths(), "seeds": overrides.seeds}, "--seeds")
        resolved = replace(resolved, seeds=tuple(range(overrides.seeds)))
    resolved.check_grid(
        keep_where="--keep" if overrides.keep_rates is not None else None,
        dropout_where="--dropout" if overrides.dropouts is not None else None,
    )
    return resolved
