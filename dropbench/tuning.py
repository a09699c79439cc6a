"""A tuned comparison: every method's hyperparameters chosen on the validation split, under one budget.

A suite's `[tuning]` table (README, "Tuned comparisons"; parsed by `suite._tuning`) names the methods, each
hyperparameter's search space, the sampler and the budget. This module samples each (task, method)'s trials and
builds the cells of both phases: the *tune* cells (every trial at every tuning seed) and, once a trial is chosen
per task and method on validation figures (`report.tuning.choose_on_validation`, called by the runner), the
*eval* cells (the chosen trial at the evaluation seeds). Samples depend on the suite's `seed`, the task and the
method alone (`seeding.derive_seed`), so a resumed run, a shard or a rerun rebuilds the same trials.

The phases are kept apart on purpose: a stopping rule (successive halving) can later cut a trial's seeds after a
few epochs between building the tune cells and choosing, without changing how either phase's cells are made.
"""

import itertools
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .config import Cell, TaskConfig
from .regularizers import parse_regularizer
from .seeding import derive_seed

if TYPE_CHECKING:
    from .suite import Suite

BASELINE = "none"  # the method with no regularizer and no dropout
DROPOUT = "dropout"  # the method part that makes the hidden (and input) keep rates hyperparameters
KEEP, INPUT_KEEP, LR = "keep", "input_keep", "lr"  # the space's names besides regularizers' strengths
SAMPLERS = ("sobol", "random", "grid")
EVALUATIONS = ("fresh", "same")
TUNING_METRICS = ("auto", "val_acc", "val_loss")
SPACE_FORMS = ("log", "range", "int")
TUNE, EVAL = "tune", "eval"
# Sampled values are rounded to the 6 significant digits the CSV's strength column shows, so that a cell's
# identity and its row name the same number.
DIGITS = 6


@dataclass(frozen=True)
class Space:
    """One hyperparameter's search space: a list of values, or an interval sampled in log, linearly, or in
    whole numbers (`int`, both bounds included)."""

    name: str
    form: str  # "list", or one of SPACE_FORMS
    values: tuple[float, ...] = ()  # a list's values, as written
    low: float = 0.0
    high: float = 0.0

    def value(self, u: float) -> float:
        """The value at `u` in [0, 1): a list's item, or a point of the interval (in log for `log`)."""
        if self.form == "list":
            return self.values[min(int(u * len(self.values)), len(self.values) - 1)]
        if self.form == "int":
            return float(min(self.low + math.floor(u * (self.high - self.low + 1)), self.high))
        if self.form == "log":
            point = math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            point = self.low + u * (self.high - self.low)
        return min(max(float(f"{point:.{DIGITS}g}"), self.low), self.high)

    def describe(self) -> object:
        """As the suite writes it: the list, or {form: [low, high]}."""
        if self.form == "list":
            return list(self.values)
        bounds = [int(self.low), int(self.high)] if self.form == "int" else [self.low, self.high]
        return {self.form: bounds}


@dataclass(frozen=True)
class Method:
    """A tuned method: regularizers joined by '+' (registry order), with or without dropout; 'none' is the
    baseline (no regularizer, keep rates 1)."""

    name: str  # as the suite writes it: the CSV's `method`
    regularizers: tuple[str, ...]  # in registry order; () for the baseline and for plain dropout
    dropout: bool

    @property
    def regularizer_spec(self) -> str:
        return "+".join(self.regularizers) or BASELINE


Setting = dict[str, float]  # hyperparameter name -> value, for one trial


@dataclass(frozen=True)
class Tuning:
    """A suite's tuning protocol (its [tuning] table, validated)."""

    methods: tuple[Method, ...]
    space: Mapping[str, Space] = field(default_factory=dict)
    budget: int | None = 8  # trials per method; None: each method's whole grid ("grid")
    sampler: str = "sobol"
    seed: int = 0
    tuning_seeds: int = 3
    evaluation: str = "fresh"
    evaluation_seeds: int = 5
    metric: str = "auto"

    def hyperparameters(self, method: Method) -> tuple[str, ...]:
        """What is tuned for `method`: its regularizers' strengths, keep (and input_keep where the space has it)
        if it names dropout, and lr where the space has it; in that order."""
        names = list(method.regularizers)
        if method.dropout:
            names += [KEEP] + ([INPUT_KEEP] if INPUT_KEEP in self.space else [])
        if LR in self.space:
            names.append(LR)
        return tuple(names)

    def grid_size(self, method: Method) -> int:
        """How many points the product of the method's (list) spaces has."""
        return math.prod(len(self.space[name].values) for name in self.hyperparameters(method))

    def trial_count(self, method: Method) -> int:
        """The trials the method gets: one where it has nothing to tune (a budget cannot choose among one
        setting), its whole grid with sampler 'grid', else the budget."""
        if not self.hyperparameters(method):
            return 1
        if self.sampler == "grid":
            return self.grid_size(method)
        return self.budget or 0

    def trials(self, task: str, method: Method) -> list[Setting]:
        """The settings tried for `method` on `task`, in trial order; the same on every call and machine (for one
        scipy version: the Sobol' scrambling is scipy's)."""
        names = self.hyperparameters(method)
        if not names:
            return [{}]
        spaces = [self.space[name] for name in names]
        if self.sampler == "grid":
            return [dict(zip(names, point)) for point in itertools.product(*(s.values for s in spaces))]
        points = unit_samples(self.sampler, self.trial_count(method), len(names), (self.seed, task, method.name))
        return [{name: space.value(float(u)) for name, space, u in zip(names, spaces, row)} for row in points]

    @property
    def tuning_seed_list(self) -> tuple[int, ...]:
        return tuple(range(self.tuning_seeds))

    @property
    def evaluation_seed_list(self) -> tuple[int, ...]:
        """The evaluation seeds: after the tuning seeds with 'fresh'; none with 'same' (its tuning seeds report)."""
        if self.evaluation == "same":
            return ()
        return tuple(range(self.tuning_seeds, self.tuning_seeds + self.evaluation_seeds))

    def describe(self) -> dict[str, object]:
        """A JSON-ready account of the protocol, for the run's metadata and the dry run."""
        return {
            "methods": [m.name for m in self.methods],
            "budget": "grid" if self.budget is None else self.budget,
            "sampler": self.sampler,
            "seed": self.seed,
            "tuning_seeds": list(self.tuning_seed_list),
            "evaluation": self.evaluation,
            "evaluation_seeds": list(self.evaluation_seed_list),
            "metric": self.metric,
            "space": {name: space.describe() for name, space in self.space.items()},
            "hyperparameters": {m.name: list(self.hyperparameters(m)) for m in self.methods},
            "trials": {m.name: self.trial_count(m) for m in self.methods},
        }

    def budget_lines(self) -> list[str]:
        """What each method gets, in words, for the dry run and the run's notes: the budget rule's exceptions."""
        counts = {m.name: self.trial_count(m) for m in self.methods}
        lines = []
        if self.sampler == "grid":
            rule = "its whole grid" if self.budget is None else f"its whole grid (at most {self.budget})"
            shown = ", ".join(f"{name} {n}" for name, n in counts.items())
            lines.append(f"trials per method: {rule}, so they differ: {shown}")
        else:
            lines.append(f"trials per method: {self.budget} ({self.sampler} sample, seed {self.seed})")
        idle = [m.name for m in self.methods if not self.hyperparameters(m)]
        if idle:
            lines.append(f"{', '.join(idle)}: 1 trial, nothing to tune (a budget buys nothing without a choice)")
        return lines


def unit_samples(sampler: str, count: int, dims: int, seed_parts: tuple[object, ...]) -> np.ndarray:
    """`count` points of [0, 1)^dims: scrambled Sobol' (quasi-random, scipy.stats.qmc) or uniform random, from a
    generator seeded by `seed_parts` alone."""
    rng = np.random.default_rng(derive_seed("tuning", *seed_parts))
    if sampler == "random":
        return rng.random((count, dims))
    from scipy.stats import qmc

    try:
        engine = qmc.Sobol(dims, scramble=True, rng=rng)
    except TypeError:  # scipy before 1.15 calls it `seed`
        engine = qmc.Sobol(dims, scramble=True, seed=rng)
    with warnings.catch_warnings():
        # A count that is not a power of 2 loses some of Sobol's balance, not its determinism; the README says so.
        warnings.simplefilter("ignore", UserWarning)
        return engine.random(count)


def describe_setting(setting: Setting) -> str:
    """'l2=0.0012 keep=0.51', or 'nothing tuned'."""
    return " ".join(f"{name}={value:g}" for name, value in setting.items()) or "nothing tuned"


def _task_for(task: TaskConfig, setting: Setting) -> TaskConfig:
    if LR not in setting:
        return task
    return replace(task, optimizer=replace(task.optimizer, lr=setting[LR]))


def trial_cell(suite: "Suite", task: TaskConfig, method: Method, trial: int, seed: int, phase: str) -> Cell:
    """The cell of `method`'s trial on `task` at `seed`. What the trial does not set stays at the suite's values:
    keep rates 1 for a method without dropout, the suite's input keep rate (default 1) for one with it."""
    setting = suite_trials(suite, task.name, method)[trial]
    regularizer = parse_regularizer(method.regularizer_spec, {n: setting[n] for n in method.regularizers})
    if suite.kl_target != regularizer.kl_target:
        regularizer = replace(regularizer, kl_target=suite.kl_target)
    keep = setting.get(KEEP, 1.0) if method.dropout else 1.0
    input_keep = setting.get(INPUT_KEEP, suite.input_keep_rates[0]) if method.dropout else 1.0
    return Cell(
        suite.name,
        _task_for(task, setting),
        regularizer,
        keep,
        input_keep,
        suite.dropouts[0] if method.dropout else "bernoulli",  # keep rates of 1: the kind changes nothing
        seed,
        suite.train_sizes[0],
        suite.mc_samples,
        suite.precision,
        method=method.name,
        phase=phase,
        trial=trial,
    )


def suite_trials(suite: "Suite", task: str, method: Method) -> list[Setting]:
    """`method`'s trials on `task` under the suite's protocol (cached on the suite: a grid asks for them once
    per cell)."""
    if suite.tuning is None:
        raise ValueError(f"suite {suite.name} has no [tuning] table")
    cache = suite.trial_cache
    key = (task, method.name)
    if key not in cache:
        cache[key] = suite.tuning.trials(task, method)
    return cache[key]


def tune_cells(suite: "Suite") -> list[Cell]:
    """The tuning phase: every task × method × trial × tuning seed, in that order."""
    if suite.tuning is None:
        raise ValueError(f"suite {suite.name} has no [tuning] table")
    tuning = suite.tuning
    return [
        trial_cell(suite, task, method, trial, seed, TUNE)
        for task in suite.tasks
        for method in tuning.methods
        for trial in range(len(suite_trials(suite, task.name, method)))
        for seed in tuning.tuning_seed_list
    ]


def eval_cells(suite: "Suite", chosen: Mapping[tuple[str, str], int]) -> list[Cell]:
    """The evaluation phase: each (task, method)'s chosen trial at the evaluation seeds (none with evaluation
    'same'). A (task, method) without a choice (every trial failed) has no evaluation cells."""
    if suite.tuning is None:
        raise ValueError(f"suite {suite.name} has no [tuning] table")
    tuning = suite.tuning
    return [
        trial_cell(suite, task, method, chosen[task.name, method.name], seed, EVAL)
        for task in suite.tasks
        for method in tuning.methods
        if (task.name, method.name) in chosen
        for seed in tuning.evaluation_seed_list
    ]


def cell_count(suite: "Suite") -> int:
    """Cells of both phases, counted without sampling anything: tune cells, then eval cells."""
    if suite.tuning is None:
        raise ValueError(f"suite {suite.name} has no [tuning] table")
    tuning = suite.tuning
    per_task = sum(tuning.trial_count(m) for m in tuning.methods) * tuning.tuning_seeds
    per_task += len(tuning.methods) * len(tuning.evaluation_seed_list)
    return len(suite.tasks) * per_task
