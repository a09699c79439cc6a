"""A tuned comparison: every method's hyperparameters chosen on the validation split, under one budget.

A suite's `[tuning]` table (README, "Tuned comparisons"; parsed by `suite._tuning`) names the methods, each
hyperparameter's search space, the sampler and the budget. This module samples each (task, method)'s trials and
builds the cells of both phases: the *tune* cells (every trial at every tuning seed) and, once a trial is chosen
per task and method on validation figures (`report.tuning.choose_on_validation`, called by the runner), the
*eval* cells (the chosen trial at the evaluation seeds). Samples depend on the suite's `seed`, the task and the
method alone (`seeding.derive_seed`), so a resumed run, a shard or a rerun rebuilds the same trials.

With `halving` (`[tuning] halving = { min_epochs, eta }`) the tuning phase is synchronous successive halving
(Jamieson & Talwalkar 2016; Li et al. 2018) per (task, method): every trial is trained at every tuning seed for
the first rung's epochs, the trials still in are ranked on their mean validation figure over those seeds
(`survivors`), and the best go on to the next rung, up to the task's epochs. A rung's cell is the first epochs of
its trial's full training (`Cell.epoch_limit`, part of the cell_id, shown as `max_epochs` in the CSV): the next
rung's cell continues from its checkpoint (dropbench.checkpoints) and trains only the epochs the rung adds, bit for
bit as the training from scratch would; the last rung's cells are exactly the full grid's tune cells. Which trials
reach a rung is read from the results file's rows of the rung before (`halving_cells`), so a resumed run rebuilds
the same rungs.
"""

import functools
import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
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


# The stopping rule's one-sided level by default: a trial is stopped only when its paired difference to the cut is
# significant at this level (`survivors`; a suite may set `halving.alpha`). tests/test_halving_rule.py measures
# what it gives at 3 seeds.
STOP_ALPHA = 0.05


@dataclass(frozen=True)
class Halving:
    """Synchronous successive halving: rungs of `min_epochs`, `min_epochs`·eta, ... epochs, then the task's
    epochs; at each rung the best ⌈n/eta⌉ of the trials still in go on, and any other not worse than the cut
    at the one-sided level `alpha` (`survivors`)."""

    min_epochs: int
    eta: int
    alpha: float = STOP_ALPHA

    def rungs(self, epochs: int) -> tuple[int, ...]:
        """The rungs' epochs for a task trained `epochs` epochs: r, r·eta, r·eta², ... below `epochs`, then
        `epochs` itself (the last rung is the full training)."""
        rungs = []
        rung = self.min_epochs
        while rung < epochs:
            rungs.append(rung)
            rung *= self.eta
        return (*rungs, epochs)

    def keep_count(self, trials: int) -> int:
        """⌈n/eta⌉: how many of `trials` go on by rank alone (more may go on: `survivors` stops only the clearly
        worse)."""
        return math.ceil(trials / self.eta)

    def describe(self) -> dict[str, float]:
        return {"min_epochs": self.min_epochs, "eta": self.eta, "alpha": self.alpha}


def survivors(figures: Mapping[int, Sequence[float]], keep: int, higher: bool, alpha: float = STOP_ALPHA) -> list[int]:
    """The trials that go on to the next rung, in trial order. `figures[trial][s]` is the trial's validation figure
    at the rung at its s-th tuning seed (NaN, or absent, where that seed's cell failed or diverged).

    Trials are ranked by their mean over their finite figures (negated where lower is better, `higher` False),
    ties to the lowest trial; the `keep`-th of them is the cut, and the first `keep` go on. Any other goes on too
    unless it is significantly worse than the cut: a one-sided paired t-test at level `alpha` of the mean over
    their shared seeds of (cut − trial), d̄ > t(1 − alpha, df) · σ · √(2 / shared seeds). σ is the seed noise
    left after each trial's and each seed's effect, from the residuals of the two-way additive fit (trial + seed)
    over the rung's trials with a finite figure at every seed, with df = (trials − 1)(seeds − 1) degrees of
    freedom. Pairing by seed is what the seeds are for: a seed is the same initialization and batch order for
    every trial (common random numbers), so its luck, shared by all, cancels in a difference; and σ pooled over
    all the rung's trials rests on 14 degrees of freedom at 8 trials and 3 seeds where one trial's own spread
    rests on 2 (whose standard error is sometimes near 0, sometimes huge). A trial without a finite figure
    stops; one that shares no seed with the cut goes on (nothing to compare). Without a noise estimate (one
    seed, or fewer than two trials with every seed) the rule is plain top-`keep`, ASHA's.

    Measured at 8 trials, 3 seeds, η = 3, rungs of 5, 15 and 30 epochs (tests/test_halving_rule.py: rung figures
    drawn as true means + a seed effect shared by all trials + noise, 20,000 repetitions), at alpha 0.05: a trial
    0.5 noise s.d. above 7 tied ones is stopped before the last rung 1.3% of the time (plain top-⌈n/η⌉: 59%; the
    overlap rule this replaced: 7.3% without seed effects), one 1 s.d. above 0.1%; of 8 trials 0.5 s.d. apart the
    rule stops 49% (top-k 88%) and the best 0.1% of the time; of 8 tied trials it stops 8%. A seed effect
    changes none of these (it cancels exactly); it made the overlap rule timid. Higher `alpha` stops more
    (README, "Tuned comparisons", has the table).
    """
    scores = {t: [v if higher else -v for v in values] for t, values in figures.items()}
    means = {t: float(np.mean(f)) for t, values in scores.items() if (f := [v for v in values if math.isfinite(v)])}
    ranked = sorted(means, key=lambda t: (-means[t], t))
    if len(ranked) <= keep:
        return sorted(ranked)
    kept = ranked[:keep]
    noise = seed_noise(scores)
    if noise is None:
        return sorted(kept)
    sigma, df = noise
    margin = t_quantile(1 - alpha, df) * sigma
    cut = scores[ranked[keep - 1]]
    for trial in ranked[keep:]:
        pairs = [(c, v) for c, v in zip(cut, scores[trial]) if math.isfinite(c) and math.isfinite(v)]
        if not pairs or float(np.mean([c - v for c, v in pairs])) <= margin * math.sqrt(2 / len(pairs)):
            kept.append(trial)
    return sorted(kept)


@functools.cache
def t_quantile(q: float, df: int) -> float:
    """Student's t quantile (scipy's; cached: a halving run asks for the same few again and again)."""
    from scipy.stats import t as student

    return float(student.ppf(q, df))


def seed_noise(scores: Mapping[int, Sequence[float]]) -> tuple[float, int] | None:
    """(σ, df): the residual standard deviation of the two-way additive fit x[t, s] = trial + seed + noise over the
    trials with a finite figure at every seed, and its degrees of freedom (trials − 1)(seeds − 1); None where
    those are fewer than one."""
    seeds = max((len(values) for values in scores.values()), default=0)
    complete = [list(v) for v in scores.values() if len(v) == seeds and all(math.isfinite(x) for x in v)]
    df = (len(complete) - 1) * (seeds - 1)
    if df < 1:
        return None
    x = np.array(complete, dtype=np.float64)
    residuals = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + x.mean()
    return math.sqrt(float((residuals**2).sum()) / df), df


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
    halving: Halving | None = None  # successive halving of the tuning phase; None: every trial trains in full

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
            **({"halving": self.halving.describe()} if self.halving else {}),
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
        if self.halving is not None:
            h = self.halving
            lines.append(
                f"successive halving: rungs from {h.min_epochs} epochs, ×{h.eta} each, to the task's epochs; at each "
                f"rung the best ⌈n/{h.eta}⌉ trials on their seed mean go on, and any not significantly worse than "
                f"the cut (paired over seeds, one-sided {h.alpha:g}); a trial that goes on continues from its "
                "checkpoint"
            )
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


def rung_cell(suite: "Suite", task: TaskConfig, method: Method, trial: int, seed: int, epochs: int) -> Cell:
    """The tune cell of `method`'s trial on `task` at `seed` for a halving rung of `epochs` epochs: the first
    `epochs` epochs of the trial's full training (`Cell.epoch_limit`), which the next rung's cell continues from
    its checkpoint; at the task's own epochs, the ordinary tune cell."""
    cell = trial_cell(suite, task, method, trial, seed, TUNE)
    if epochs == cell.task.epochs:
        return cell
    return replace(cell, epoch_limit=epochs)


def tune_cells(suite: "Suite") -> list[Cell]:
    """The tuning phase: every task × method × trial × tuning seed, in that order. With halving, the first
    rung's (every trial, trained the first rung's epochs): the later rungs depend on its figures (`halving_cells`)."""
    if suite.tuning is None:
        raise ValueError(f"suite {suite.name} has no [tuning] table")
    tuning = suite.tuning
    if tuning.halving is not None:
        return [
            rung_cell(suite, task, method, trial, seed, halving_rungs(suite, task, method)[0])
            for task in suite.tasks
            for method in tuning.methods
            for trial in range(len(suite_trials(suite, task.name, method)))
            for seed in tuning.tuning_seed_list
        ]
    return [
        trial_cell(suite, task, method, trial, seed, TUNE)
        for task in suite.tasks
        for method in tuning.methods
        for trial in range(len(suite_trials(suite, task.name, method)))
        for seed in tuning.tuning_seed_list
    ]


def halving_rungs(suite: "Suite", task: TaskConfig, method: Method) -> tuple[int, ...]:
    """The rungs' epochs of `method` on `task`: the halving schedule, or the task's epochs alone for a method
    with one trial (nothing to choose, nothing to stop) or a suite without halving."""
    tuning = suite.tuning
    if tuning is None or tuning.halving is None or len(suite_trials(suite, task.name, method)) < 2:
        return (task.epochs,)
    return tuning.halving.rungs(task.epochs)


def rung_setup_cells(suite: "Suite") -> list[Cell]:
    """One cell per task, method, trial and halving rung (seed 0): every setup a halving run may write, for
    runner.setup_conflict; [] without halving."""
    tuning = suite.tuning
    if tuning is None or tuning.halving is None:
        return []
    return [
        rung_cell(suite, task, method, trial, 0, epochs)
        for task in suite.tasks
        for method in tuning.methods
        for trial in range(len(suite_trials(suite, task.name, method)))
        for epochs in halving_rungs(suite, task, method)
    ]


def _figure(row: Mapping[str, str], column: str) -> float:
    try:
        return float(row.get(column) or "nan")
    except ValueError:
        return math.nan


@dataclass
class HalvingState:
    """How far a halving tuning phase is, as the results file tells it (`halving_cells`)."""

    cells: list[Cell]  # every rung's cells determined so far: run, or to run next
    final: list[Cell]  # the last rung's cells (full epochs) of the (task, method)s that reached it
    complete: bool  # every (task, method) reached its last rung (its cells may still be unwritten)
    latest: list[Cell] = field(default_factory=list)  # each (task, method)'s cells of the furthest rung determined

    def needed(self, written: Mapping[str, object]) -> set[str]:
        """The trainings whose checkpoints may still serve: those of each (task, method)'s furthest rung, but for a
        last-rung cell already written (its training is over). Every other trial stopped or ended."""
        return {c.training_id for c in self.latest if c.continues or c.cell_id not in written}


def halving_cells(suite: "Suite", written: Mapping[str, Mapping[str, str]]) -> HalvingState:
    """The tune cells of a halving suite as far as the `written` rows (cell_id -> row, as results.ResultStore
    .written gives them) determine them: per (task, method) the first rung's cells, then each next rung's for the
    trials `survivors` keeps once every cell of the rung before is written (whatever its status); a method with
    one trial trains it in full at once (`halving_rungs`). A rung's
    figures are its ok rows' validation figures: validation accuracy for a task where any of the rung's rows
    measured one under metric 'auto' (or 'val_acc'), else validation loss (lower is better). The same rows
    always give the same rungs."""
    tuning = suite.tuning
    if tuning is None or tuning.halving is None:
        raise ValueError(f"suite {suite.name} has no [tuning] halving")
    halving = tuning.halving
    cells: list[Cell] = []
    final: list[Cell] = []
    latest: list[Cell] = []
    complete = True
    for task in suite.tasks:
        for method in tuning.methods:
            rungs = halving_rungs(suite, task, method)
            trials = list(range(len(suite_trials(suite, task.name, method))))
            for rung, epochs in enumerate(rungs):
                rung_cells = [
                    rung_cell(suite, task, method, trial, seed, epochs)
                    for trial in trials
                    for seed in tuning.tuning_seed_list
                ]
                cells += rung_cells
                if rung == len(rungs) - 1:
                    final += rung_cells
                    latest += rung_cells
                    break
                if not all(cell.cell_id in written for cell in rung_cells):
                    complete = False
                    latest += rung_cells
                    break
                trials = _rung_survivors(halving, tuning.metric, rung_cells, written, len(trials))
    return HalvingState(cells, final, complete, latest)


def _rung_survivors(
    halving: Halving, metric: str, cells: list[Cell], written: Mapping[str, Mapping[str, str]], count: int
) -> list[int]:
    rows = [(cell.trial, written[cell.cell_id]) for cell in cells]
    if metric == "auto":
        metric = "val_acc" if any(math.isfinite(_figure(row, "val_acc")) for _, row in rows) else "val_loss"
    figures: dict[int, list[float]] = {}  # in seed order (the cells are), NaN where a seed's cell did not end ok
    for trial, row in rows:
        figures.setdefault(int(trial or 0), []).append(_figure(row, metric) if row.get("status") == "ok" else math.nan)
    return survivors(figures, halving.keep_count(count), higher=metric == "val_acc", alpha=halving.alpha)


@dataclass
class HalvingOutlook:
    """The epochs a halving tuning phase trains, as far as the results file tells (`halving_outlook`): each rung's
    cell trains only what its rung adds to the one before (it continues from that rung's checkpoint), so
    a trial that reaches the last rung trains the task's epochs once. Rungs whose trials are not known yet are
    bounded: at least ⌈n/η⌉ of a rung's n trials go on (`survivors` keeps the ranked best whatever their
    noise), at most all of them. Budgets: early stopping and failed cells train fewer."""

    later: dict[str, tuple[int, int]]  # task -> (fewest, most) epochs its later rungs' unwritten cells train
    later_cells: dict[str, tuple[int, int]]  # task -> (fewest, most) of those cells
    total: tuple[int, int]  # (fewest, most) epochs of the whole tuning phase, every rung, written or not
    grid: int  # the epochs the same tuning phase trains without halving: every trial at every seed, in full


def halving_outlook(suite: "Suite", written: Mapping[str, Mapping[str, str]]) -> HalvingOutlook:
    """What the halving tuning phase of `suite` trains, given the file's `written` rows (see HalvingOutlook)."""
    tuning = suite.tuning
    if tuning is None or tuning.halving is None:
        raise ValueError(f"suite {suite.name} has no [tuning] halving")
    seeds = len(tuning.tuning_seed_list)
    determined: dict[tuple[str, str, int], list[Cell]] = {}
    for cell in halving_cells(suite, written).cells:
        determined.setdefault((cell.task.name, cell.method, cell.epochs), []).append(cell)
    later: dict[str, tuple[int, int]] = {}
    later_cells: dict[str, tuple[int, int]] = {}
    low = high = grid = 0
    for task in suite.tasks:
        task_low = task_high = cells_low = cells_high = 0
        for method in tuning.methods:
            trials = len(suite_trials(suite, task.name, method))
            grid += trials * seeds * task.epochs
            fewest = most = trials
            before = 0
            for rung, epochs in enumerate(halving_rungs(suite, task, method)):
                added, cells = epochs - before, determined.get((task.name, method.name, epochs))
                if cells is not None:  # the rung's trials are known: count its cells, and those still to run
                    fewest = most = len(cells) // seeds
                    left = sum(cell.cell_id not in written for cell in cells) if rung else 0
                    task_low, task_high = task_low + left * added, task_high + left * added
                    cells_low, cells_high = cells_low + left, cells_high + left
                else:  # not yet: bounded by how many of the rung before go on
                    fewest = tuning.halving.keep_count(fewest)
                    task_low, task_high = task_low + fewest * seeds * added, task_high + most * seeds * added
                    cells_low, cells_high = cells_low + fewest * seeds, cells_high + most * seeds
                low, high = low + fewest * seeds * added, high + most * seeds * added
                before = epochs
        later[task.name], later_cells[task.name] = (task_low, task_high), (cells_low, cells_high)
    return HalvingOutlook(later, later_cells, (low, high), grid)


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
