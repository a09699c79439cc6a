"""A suite's [tuning] table (dropbench.tuning, suite._tuning) and the run that carries it out: parsing and every
refusal, sampling, the cells of both phases, and a tiny tuned run end to end with shards, resume and a changed
choice."""

import csv
import io
import json
import math
import textwrap

import pandas as pd
import pytest
from conftest import ROOT

from dropbench.cli import main
from dropbench.errors import UserError
from dropbench.executors import LocalExecutor
from dropbench.planning import Shard
from dropbench.report.tuning import choose_on_validation
from dropbench.results import COLUMNS, NO_TRIAL, ResultStore, read_results
from dropbench.runner import Reporter, plan_run, run_suite
from dropbench.suite import Overrides, apply_overrides, load_suite
from dropbench.tuning import eval_cells, tune_cells

CONTRACT = """
name = "tuned"
epochs = 2
model = { kind = "mlp", hidden = [16] }
[tuning]
methods = ["none", "l2", "l1", "max-norm", "early-stopping", "dropout", "l2+dropout", "max-norm+dropout"]
budget = 8
sampler = "sobol"
seed = 0
tuning_seeds = 3
evaluation = "fresh"
evaluation_seeds = 5
metric = "auto"
[tuning.space]
l2 = { log = [1e-6, 1e-1] }
l1 = { log = [1e-7, 1e-2] }
max-norm = { range = [0.5, 5.0] }
early-stopping = { int = [3, 15] }
keep = { range = [0.3, 0.9] }
input_keep = [0.8, 1.0]
[[task]]
name = "wine"
[[task]]
name = "diabetes"
"""

# The smallest tuned comparison worth running: 2 tasks, the baseline and one joint method, 2 trials, 2 + 2 seeds.
TINY = """
name = "tiny-tuned"
epochs = 2
model = { kind = "mlp", hidden = [16] }
optimizer = { name = "sgd", lr = 0.05, momentum = 0.9 }
[tuning]
methods = ["none", "l2+dropout"]
budget = 2
tuning_seeds = 2
evaluation_seeds = 2
[tuning.space]
l2 = { log = [1e-6, 1e-1] }
keep = { range = [0.3, 0.9] }
[[task]]
name = "wine"
[[task]]
name = "synthetic"
"""
TINY_TUNE = 2 * (1 + 2) * 2  # tasks × (none's one trial + 2) × tuning seeds
TINY_EVAL = 2 * 2 * 2  # tasks × methods × evaluation seeds


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def load(tmp_path, text, name="s.toml"):
    return load_suite(str(write(tmp_path, text, name)))


def edit(text, old, new):
    assert old in text, old
    return text.replace(old, new, 1)


# ---------------------------------------------------------------- parsing


def test_the_contract_example_parses_with_every_method_and_space(tmp_path):
    suite = load(tmp_path, CONTRACT)
    tuning = suite.tuning
    assert tuning is not None
    assert [m.name for m in tuning.methods][:2] == ["none", "l2"]
    assert (tuning.budget, tuning.sampler, tuning.tuning_seeds, tuning.evaluation_seed_list) == (
        8,
        "sobol",
        3,
        (3, 4, 5, 6, 7),
    )
    by_name = {m.name: m for m in tuning.methods}
    assert tuning.hyperparameters(by_name["none"]) == ()
    assert tuning.hyperparameters(by_name["max-norm+dropout"]) == ("max-norm", "keep", "input_keep")
    assert tuning.space["early-stopping"].form == "int"
    assert suite.describe()["tuning"]["trials"]["none"] == 1


def test_defaults_of_the_optional_keys(tmp_path):
    suite = load(
        tmp_path,
        "[tuning]\nmethods = ['none', 'l2']\nbudget = 4\n[tuning.space]\nl2 = [1e-4, 1e-3]\n[[task]]\nname = 'wine'\n",
    )
    tuning = suite.tuning
    assert tuning is not None
    assert (tuning.sampler, tuning.seed, tuning.tuning_seeds, tuning.evaluation, tuning.evaluation_seeds) == (
        "sobol",
        0,
        3,
        "fresh",
        5,
    )
    assert tuning.metric == "auto"


SPACE = "[tuning.space]\nl2 = { log = [1e-6, 1e-1] }\nkeep = { range = [0.3, 0.9] }\n"
BAD = [
    # (what the [tuning] table holds, or a whole-file edit, and the message expected)
    ("methods = ['none']\nbudget = 2\nbudgett = 3\n", r"tuning: unknown key 'budgett' \(did you mean 'budget'\?\)"),
    ("budget = 2\n", r"tuning: 'methods' is required"),
    ("methods = ['none']\n", r"tuning: 'budget' is required"),
    (
        "methods = ['l2+dropuot']\nbudget = 2\n" + SPACE,
        r"tuning.methods: unknown part 'dropuot' in method 'l2\+dropuot'",
    ),
    ("methods = ['none+dropout']\nbudget = 2\n" + SPACE, r"'none' is the baseline and cannot be combined"),
    ("methods = ['l2+l2']\nbudget = 2\n" + SPACE, r"method 'l2\+l2' names a part twice"),
    ("methods = ['l2+dropout', 'dropout+l2']\nbudget = 2\n" + SPACE, r"tuning.methods: method with the parts"),
    ("methods = []\nbudget = 2\n", r"tuning.methods: must not be empty"),
    ("methods = ['l1']\nbudget = 2\n" + SPACE, r"tuning.space: method 'l1' tunes the strength of 'l1': add a space"),
    ("methods = ['dropout']\nbudget = 2\n[tuning.space]\n", r"method 'dropout' tunes the hidden keep rate"),
    ("methods = ['l2']\nbudget = 2\n" + SPACE, r"tuning.space.keep: no method tunes it"),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = [1e-3]\nmax-norm = [3.0]\n", r"space.max-norm: no method"),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = [1e-3]\nwidth = [3.0]\n", r"space: unknown key 'width'"),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = { log = [1e-3] }\n", r"space.l2.log: expected \[low, high\]"),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = { log = [1e-1, 1e-3] }\n", r"l2.log: low must be below high"),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = { log = [0, 1e-3] }\n", r"l2.log: strength must be > 0"),
    (
        "methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = { log = [1e-6, inf] }\n",
        r"l2.log: strength must be a finite",
    ),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = { lin = [1e-6, 1] }\n", r"space.l2: unknown key 'lin'"),
    (
        "methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = { log = [1e-6, 1], range = [1e-6, 1] }\n",
        r"space.l2: give exactly one of log, range, int",
    ),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = 1e-3\n", r"space.l2: expected a list of values or one of"),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = []\n", r"space.l2: must not be empty"),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = [1e-3, 1e-3]\n", r"space.l2: value 0.001 is listed twice"),
    (
        "methods = ['dropout']\nbudget = 2\n[tuning.space]\nkeep = { range = [0.5, 1.5] }\n",
        r"keep.range: keep rate 1.5",
    ),
    (
        "methods = ['early-stopping']\nbudget = 2\n[tuning.space]\nearly-stopping = { range = [3, 15] }\n",
        r"whole epochs",
    ),
    (
        "methods = ['early-stopping']\nbudget = 2\n[tuning.space]\nearly-stopping = { int = [3.5, 15] }\n",
        r"integer ≥ 1",
    ),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = { int = [1, 3] }\n", r"l2.int: whole numbers are for early"),
    ("methods = ['l2']\nbudget = 2\n[tuning.space]\nl2 = [1e-3]\nlr = [0, 0.1]\n", r"space.lr: lr must be > 0"),
    ("methods = ['l2']\nbudget = 0\n[tuning.space]\nl2 = [1e-3]\n", r"tuning.budget: expected an integer ≥ 1, got 0"),
    ("methods = ['l2']\nbudget = 'all'\n[tuning.space]\nl2 = [1e-3]\n", r"tuning.budget: expected a number of trials"),
    ("methods = ['l2']\nbudget = 1000000\n[tuning.space]\nl2 = [1e-3]\n", r"tuning.budget: at most 100,000 trials"),
    (
        "methods = ['l2']\nbudget = 'grid'\nsampler = 'sobol'\n[tuning.space]\nl2 = [1e-3]\n",
        r"needs sampler = \"grid\"",
    ),
    ("methods = ['l2']\nbudget = 'grid'\n[tuning.space]\nl2 = { log = [1e-6, 1] }\n", r"space.l2: sampler \"grid\""),
    ("methods = ['l2']\nbudget = 2\nsampler = 'grid'\n[tuning.space]\nl2 = [1e-6, 1e-5, 1e-4]\n", r"grid of 3 points"),
    (
        "methods = ['l2']\nbudget = 2\nsampler = 'halton'\n[tuning.space]\nl2 = [1e-3]\n",
        r"sampler: unknown value 'halton'",
    ),
    (
        "methods = ['l2']\nbudget = 2\nevaluation = 'same'\nevaluation_seeds = 3\n[tuning.space]\nl2 = [1e-3]\n",
        "remove it",
    ),
    ("methods = ['l2']\nbudget = 2\nevaluation = 'later'\n[tuning.space]\nl2 = [1e-3]\n", r"evaluation: unknown value"),
    (
        "methods = ['l2']\nbudget = 2\ntuning_seeds = 0\n[tuning.space]\nl2 = [1e-3]\n",
        r"tuning_seeds: expected an integer",
    ),
    (
        "methods = ['l2']\nbudget = 2\nmetric = 'test_acc'\n[tuning.space]\nl2 = [1e-3]\n",
        r"metric: unknown value 'test_acc'",
    ),
    ("methods = ['l2']\nbudget = 2\nmetric = 'val_acc'\n[tuning.space]\nl2 = [1e-3]\n", r"'diabetes' is a regression"),
    (
        "methods = ['l2']\nbudget = 2\ntuning_seeds = 100000000\n[tuning.space]\nl2 = [1e-3]\n",
        r"a suite may have at most",
    ),
]


@pytest.mark.parametrize(("table", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_every_bad_tuning_table_is_one_line_naming_the_file_and_key(tmp_path, table, message):
    text = "[tuning]\n" + table + "[[task]]\nname = 'wine'\n[[task]]\nname = 'diabetes'\n"
    path = write(tmp_path, text)
    with pytest.raises(UserError, match=message) as error:
        load_suite(str(path))
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


TUNED = "[tuning]\nmethods = ['none', 'l2+dropout']\nbudget = 2\n" + SPACE + "[[task]]\nname = 'wine'\n"
BESIDE = [
    ("keep_rates = [0.5, 1.0]\n", r"keep_rates: not used beside \[tuning\] \(a method naming 'dropout' tunes"),
    ("regularizers = ['l2']\n", r"regularizers: not used beside \[tuning\]"),
    ("seeds = 3\n", r"seeds: not used beside \[tuning\] \(seeds are \[tuning\] tuning_seeds and evaluation_seeds"),
    ("input_keep_rate = [0.8, 1.0]\n", r"input_keep_rate: one value beside \[tuning\]"),
    ("dropout = ['bernoulli', 'gaussian']\n", r"dropout: one value beside \[tuning\]"),
    ("[regularizer.l2]\nstrength = 1e-4\n", r"regularizer.l2.strength: strengths are tuned beside \[tuning\]"),
    (
        "model = { kind = 'mlp', hidden = [] }\n",
        r"'l2\+dropout' tunes the hidden keep rate but task 'wine' has no hidden",
    ),
]


@pytest.mark.parametrize(("extra", "message"), BESIDE, ids=[e.split()[0] for e, _ in BESIDE])
def test_grid_keys_beside_tuning_are_refused(tmp_path, extra, message):
    with pytest.raises(UserError, match=message):
        load(tmp_path, extra + TUNED)


def test_single_values_beside_tuning_are_the_fixed_settings(tmp_path):
    suite = load(tmp_path, "input_keep_rate = 0.8\ndropout = 'gaussian'\ntrain_size = 50\n" + TUNED)
    cells = suite.cells()
    dropout = [c for c in cells if c.method == "l2+dropout"]
    baseline = [c for c in cells if c.method == "none"]
    assert {c.input_keep_rate for c in dropout} == {0.8} and {c.dropout for c in dropout} == {"gaussian"}
    # keep rates 1 without dropout, whatever the kind: the baseline trains (and stacks) as a plain net
    assert {(c.keep_rate, c.input_keep_rate, c.dropout) for c in baseline} == {(1.0, 1.0, "bernoulli")}
    assert {c.train_size for c in cells} == {50}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (Overrides(keep_rates=(0.5,)), r"--keep: not used with a tuned suite"),
        (Overrides(regularizers=("l2",)), r"--reg: not used with a tuned suite"),
        (Overrides(input_keep_rates=(0.8,)), r"--input-keep: not used"),
        (Overrides(seeds=3), r"--seeds: not used with a tuned suite"),
        (Overrides(dropouts=("bernoulli", "gaussian")), r"--dropout: one value with a tuned suite"),
    ],
)
def test_flags_that_would_cross_the_protocol_with_a_grid_axis_are_refused(tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        apply_overrides(load(tmp_path, TUNED), overrides)


def test_task_and_epochs_flags_apply_to_a_tuned_suite(tmp_path):
    suite = apply_overrides(load(tmp_path, TUNED), Overrides(tasks=("synthetic", "wine"), epochs=4))
    cells = suite.cells()
    assert [t.name for t in suite.tasks] == ["synthetic", "wine"] and {c.task.epochs for c in cells} == {4}
    assert len(cells) == 2 * (1 + 2) * 3


# ---------------------------------------------------------------- sampling


def test_samples_are_deterministic_and_depend_on_the_seed_task_and_method(tmp_path):
    suite = load(tmp_path, CONTRACT)
    again = load(tmp_path, CONTRACT, "again.toml")
    tuning, method = suite.tuning, suite.tuning.methods[-1]
    assert tuning.trials("wine", method) == again.tuning.trials("wine", method)
    assert [c.cell_id for c in suite.cells()] == [c.cell_id for c in again.cells()]
    assert tuning.trials("wine", method) != tuning.trials("diabetes", method)
    assert tuning.trials("wine", method) != tuning.trials("wine", tuning.methods[-2])
    reseeded = load(tmp_path, edit(CONTRACT, "seed = 0", "seed = 1"), "reseeded.toml")
    assert reseeded.tuning.trials("wine", method) != tuning.trials("wine", method)


@pytest.mark.parametrize("sampler", ["sobol", "random"])
def test_every_method_gets_the_budget_and_values_stay_in_bounds(tmp_path, sampler):
    text = edit(edit(CONTRACT, 'sampler = "sobol"', f'sampler = "{sampler}"'), "budget = 8", "budget = 64")
    suite = load(tmp_path, text)
    tuning = suite.tuning
    for method in tuning.methods:
        trials = tuning.trials("wine", method)
        assert len(trials) == (1 if method.name == "none" else 64) == tuning.trial_count(method)
        for setting in trials:
            assert set(setting) == set(tuning.hyperparameters(method))
            for name, value in setting.items():
                space = tuning.space[name]
                if space.form == "list":
                    assert value in space.values
                else:
                    assert space.low <= value <= space.high
                if name == "early-stopping":
                    assert value == int(value)
    patience = {s["early-stopping"] for s in tuning.trials("wine", tuning.methods[4])}
    assert min(patience) == 3 and max(patience) == 15  # both ends of an int space are reachable


def test_log_spaces_are_sampled_in_log(tmp_path):
    """L2 over [1e-6, 1e-1] in log: 3 of its 5 decades lie below 1e-3, so 60% of the samples do (linearly, 1%)."""
    suite = load(tmp_path, edit(CONTRACT, "budget = 8", "budget = 64"))
    l2 = next(m for m in suite.tuning.methods if m.name == "l2")
    values = [s["l2"] for s in suite.tuning.trials("wine", l2)]
    below = sum(v < 1e-3 for v in values) / len(values)
    assert 0.5 < below < 0.7
    decades = {math.floor(math.log10(v)) for v in values}
    assert decades == {-6, -5, -4, -3, -2}  # every decade is visited
    assert all(v == float(f"{v:.6g}") for v in values)  # as the CSV's strength column shows them


def test_grid_sampling_takes_the_product_and_may_give_methods_different_trials(tmp_path):
    text = """
    [tuning]
    methods = ["none", "l2", "l2+dropout"]
    budget = "grid"
    [tuning.space]
    l2 = [1e-5, 1e-4, 1e-3]
    keep = [0.5, 0.8]
    [[task]]
    name = "wine"
    """
    tuning = load(tmp_path, text).tuning
    none, l2, both = tuning.methods
    assert tuning.sampler == "grid" and [tuning.trial_count(m) for m in tuning.methods] == [1, 3, 6]
    assert tuning.trials("wine", both) == [{"l2": a, "keep": b} for a in (1e-5, 1e-4, 1e-3) for b in (0.5, 0.8)]
    assert "trials per method: its whole grid, so they differ: none 1, l2 3, l2+dropout 6" in tuning.budget_lines()


def test_lr_in_the_space_is_tuned_for_every_method_the_baseline_too(tmp_path):
    suite = load(tmp_path, TUNED.replace("[[task]]", "lr = { log = [0.01, 0.3] }\n[[task]]"))
    none = suite.tuning.methods[0]
    assert suite.tuning.hyperparameters(none) == ("lr",) and suite.tuning.trial_count(none) == 2
    cells = suite.cells()
    rates = {c.task.optimizer.lr for c in cells if c.method == "none"}
    assert len(rates) == 2 and all(0.01 <= r <= 0.3 for r in rates)
    assert not [line for line in suite.tuning.budget_lines() if "nothing to tune" in line]


# ---------------------------------------------------------------- the cells of both phases


def test_tune_cells_are_task_method_trial_seed_with_the_trial_setting(tmp_path):
    suite = load(tmp_path, CONTRACT)
    cells = tune_cells(suite)
    assert len(cells) == 2 * (1 + 7 * 8) * 3 and len({c.cell_id for c in cells}) == len(cells)
    assert {c.phase for c in cells} == {"tune"} and {c.seed for c in cells} == {0, 1, 2}
    for cell in cells:
        method = next(m for m in suite.tuning.methods if m.name == cell.method)
        setting = suite.tuning.trials(cell.task.name, method)[cell.trial]
        assert cell.regularizer.name == (method.regularizer_spec)
        for part in method.regularizers:
            assert cell.regularizer.strength(part) == setting[part]
        assert cell.keep_rate == (setting["keep"] if method.dropout else 1.0)
        assert cell.input_keep_rate == (setting["input_keep"] if method.dropout else 1.0)
    first = cells[0]
    assert (first.task.name, first.method, first.trial, first.seed) == ("wine", "none", 0, 0)
    assert first.describe().endswith("[tune none #0]")


def test_eval_cells_are_the_chosen_trial_at_fresh_seeds(tmp_path):
    suite = load(tmp_path, CONTRACT)
    chosen = {(t.name, m.name): (0 if m.name == "none" else 5) for t in suite.tasks for m in suite.tuning.methods}
    del chosen["diabetes", "l1"]  # a method without a choice (every trial failed) is not evaluated
    cells = eval_cells(suite, chosen)
    assert len(cells) == (2 * 8 - 1) * 5 and {c.seed for c in cells} == {3, 4, 5, 6, 7}
    assert {c.phase for c in cells} == {"eval"} and {c.trial for c in cells if c.method != "none"} == {5}
    tune = {c.cell_id: c for c in tune_cells(suite)}
    assert not set(tune) & {c.cell_id for c in cells}
    # an eval cell trains exactly what its tune cells trained, at another seed
    cell = next(c for c in cells if c.method == "max-norm+dropout" and c.task.name == "wine")
    twin = next(c for c in tune.values() if (c.task.name, c.method, c.trial, c.seed) == ("wine", cell.method, 5, 0))
    assert (cell.regularizer, cell.keep_rate, cell.input_keep_rate, cell.setup_id) == (
        twin.regularizer,
        twin.keep_rate,
        twin.input_keep_rate,
        twin.setup_id,
    )
    same = load(
        tmp_path, edit(edit(CONTRACT, 'evaluation = "fresh"', 'evaluation = "same"'), "evaluation_seeds = 5", "")
    )
    assert eval_cells(same, chosen) == []


def test_schema_6_writes_the_tuning_columns_empty_for_ordinary_cells_and_reads_old_files_so(tmp_path):
    ordinary = load(tmp_path, "seeds = 1\nkeep_rates = [1.0]\n[[task]]\nname = 'wine'\n", "o.toml").cells()[0]
    tuned = load(tmp_path, TUNED).cells()[-1]
    assert "method" not in ordinary.identity() and tuned.identity()["method"] == "l2+dropout"
    assert ordinary.describe() == "wine none keep=1 seed=0"
    from dropbench.results import cell_text, cell_value

    assert cell_text("trial", NO_TRIAL) == "" and cell_value("trial", int, "") == NO_TRIAL
    assert cell_text("trial", 0) == "0" and cell_value("trial", int, "0") == 0
    old = read_results(ROOT / "results" / "quick" / "quick.csv")  # schema 4
    assert (old["method"] == "").all() and (old["phase"] == "").all()
    assert old["trial"].dtype == "Int64" and old["trial"].isna().all()


def test_the_bundled_tuned_suites_load_and_quick_tuned_counts_as_its_comment_says():
    suite = load_suite("quick-tuned")
    assert [t.name for t in suite.tasks] == [t.name for t in load_suite("quick").tasks]
    assert len(suite.cells()) == 4 * (7 * 8 + 1) * 3
    assert len(eval_cells(suite, {(t.name, m.name): 0 for t in suite.tasks for m in suite.tuning.methods})) == 288
    table9 = load_suite("srivastava2014-table9-tuned")
    assert len(table9.cells()) == 7 * 8 * 2 and table9.tasks[0].name == "mnist"


# ---------------------------------------------------------------- the run


class Tally(Reporter):
    def __init__(self):
        self.notes, self.started, self.done = [], None, 0

    def note(self, message):
        self.notes.append(message)

    def start(self, suite, total, skipped, csv_path, epochs=0):
        self.started = (total, skipped)

    def cell_done(self, cell, row):
        self.done += 1


def run(suite, out, **options):
    reporter = Tally()
    summary = run_suite(suite, out, reporter=reporter, executor=LocalExecutor(), **options)
    return summary, reporter


def rows(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def figures(path):
    frame = pd.read_csv(path).set_index("cell_id").sort_index()
    return frame[["method", "phase", "trial", "seed", "val_loss", "val_acc", "test_loss", "test_acc"]]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny tuned suite run once, whole, into a file the tests below compare against."""
    folder = tmp_path_factory.mktemp("tiny")
    suite = load_suite(str(write(folder, TINY)))
    summary, reporter = run(suite, folder / "full.csv")
    return suite, folder / "full.csv", summary, reporter


@pytest.mark.slow
def test_a_tuned_run_writes_tune_rows_then_eval_rows_of_the_chosen_trial_only(tiny_run):
    suite, path, summary, reporter = tiny_run
    assert summary.total == TINY_TUNE + TINY_EVAL and summary.counts["ok"] == TINY_TUNE + TINY_EVAL
    assert reporter.started == (TINY_TUNE + TINY_EVAL, 0) and reporter.done == TINY_TUNE + TINY_EVAL
    written = rows(path)
    assert list(written[0]) == list(COLUMNS)
    tune = [r for r in written if r["phase"] == "tune"]
    evals = [r for r in written if r["phase"] == "eval"]
    assert len(tune) == TINY_TUNE and len(evals) == TINY_EVAL and len({r["cell_id"] for r in written}) == len(written)
    assert {r["method"] for r in written} == {"none", "l2+dropout"} and all(r["trial"] != "" for r in written)
    assert written.index(evals[0]) == len(tune)  # the evaluation phase after the tuning phase
    chosen = choose_on_validation(read_results(path))
    choice = {(r.task, r.method): r.trial for r in chosen.itertuples()}
    assert {(r["task"], r["method"], int(r["trial"])) for r in evals} == {(t, m, k) for (t, m), k in choice.items()}
    assert {int(r["seed"]) for r in evals} == {2, 3}
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["suite"]["tuning"]["methods"] == ["none", "l2+dropout"]
    assert {(c["task"], c["method"]): c["trial"] for c in meta["runs"][0]["tuning_choices"]} == choice
    assert any(n.startswith("chosen: wine l2+dropout: trial") for n in reporter.notes)


@pytest.mark.slow
def test_shards_run_tune_cells_only_and_the_merged_file_runs_the_evaluation(tiny_run, tmp_path):
    suite, full, _, _ = tiny_run
    for index in (1, 2):
        summary, reporter = run(suite, tmp_path / f"s{index}.csv", shard=Shard(index, 2))
        assert {r["phase"] for r in rows(tmp_path / f"s{index}.csv")} == {"tune"}
        assert any("runs after `dropbench merge`" in n for n in reporter.notes)
    assert main(["merge", str(tmp_path / "s1.csv"), str(tmp_path / "s2.csv"), "-o", str(tmp_path / "m.csv")]) == 0
    summary, _ = run(suite, tmp_path / "m.csv")
    assert summary.skipped == TINY_TUNE and summary.counts["ok"] == TINY_EVAL
    pd.testing.assert_frame_equal(figures(tmp_path / "m.csv"), figures(full))


@pytest.mark.slow
def test_a_resumed_run_rebuilds_the_same_trials_and_choice_without_duplicates(tiny_run, tmp_path):
    suite, full, _, _ = tiny_run
    out = tmp_path / "r.csv"
    out.write_bytes(full.read_bytes())
    store = ResultStore(out)
    # as a run killed during its tuning phase leaves it: some tune rows, no eval row
    keep = {r["cell_id"] for r in rows(full) if r["phase"] == "tune"}
    keep -= {r["cell_id"] for r in rows(full) if r["phase"] == "tune" and r["seed"] == "1"}
    store.forget({r["cell_id"] for r in rows(full)} - keep)
    again = load_suite(str(write(tmp_path, TINY)))  # a fresh process: the trials are sampled again
    summary, _ = run(again, out)
    assert summary.skipped == len(keep) and summary.counts["ok"] == TINY_TUNE + TINY_EVAL - len(keep)
    pd.testing.assert_frame_equal(figures(out), figures(full))
    summary, _ = run(again, out)  # and once more: nothing to do
    assert summary.counts == {} and len(rows(out)) == TINY_TUNE + TINY_EVAL


@pytest.mark.slow
def test_the_choice_is_read_from_the_file_and_stale_eval_rows_go(tiny_run, tmp_path):
    """Make another trial the validation-best in the file: the rerun evaluates that one and drops the old eval rows."""
    suite, full, _, _ = tiny_run
    written = rows(full)
    evaluated = {
        int(r["trial"]) for r in written if (r["task"], r["method"], r["phase"]) == ("wine", "l2+dropout", "eval")
    }
    other = 1 - evaluated.pop()
    for row in written:
        if (row["task"], row["method"], row["phase"], row["trial"]) == ("wine", "l2+dropout", "tune", str(other)):
            row["val_acc"] = "1.0"
    out = tmp_path / "c.csv"
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(written)
    summary, reporter = run(suite, out)
    assert summary.counts["ok"] == 2 and any("removed 2 eval rows" in n for n in reporter.notes)
    after = [r for r in rows(out) if (r["task"], r["method"], r["phase"]) == ("wine", "l2+dropout", "eval")]
    assert {r["trial"] for r in after} == {str(other)} and len(after) == 2
    assert len(rows(out)) == TINY_TUNE + TINY_EVAL


def test_the_dry_run_shows_both_phases(tmp_path, capsys):
    path = write(tmp_path, TINY)
    assert main(["run", str(path), "--out", str(tmp_path / "d.csv"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "tuning phase" in printed and "tuning: trials per method: 2 (sobol sample, seed 0)" in printed
    assert "tuning: none: 1 trial, nothing to tune" in printed
    assert "after tuning: 2 tasks × 2 methods × 2 evaluation seeds = 8 cells" in printed
    assert main(["run", str(path), "--out", str(tmp_path / "d.csv"), "--dry-run", "--shard", "1/2"]) == 0
    printed = capsys.readouterr().out
    assert "runs after `dropbench merge`: run the suite again with --out on the merged file" in " ".join(
        printed.split()
    )
    plan = plan_run(load_suite(str(path)), tmp_path / "d.csv")
    assert plan.grid == TINY_TUNE + TINY_EVAL and plan.total == TINY_TUNE + TINY_EVAL


def test_the_bundled_table9_tuned_suite_has_a_dry_run(tmp_path, capsys):
    assert main(["run", "srivastava2014-table9-tuned", "--out", str(tmp_path / "t9.csv"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "mnist" in printed and "after tuning: 1 task × 7 methods × 3 evaluation seeds = 21 cells" in printed
