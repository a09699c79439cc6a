"""The bundled Srivastava et al. 2014 suites: they parse, their grids are the paper's rows at the seeds their
claims need, and their training recipe (the decaying lr and the momentum ramp) is what the trainer steps at.
The runs themselves are long (results/srivastava2014/, made by `dropbench run`); these checks are not."""

import math
import re

import pytest
from conftest import make_cell
from test_schedules import assert_steps, recorded  # noqa: F401  (a fixture)

from dropbench.cli import main
from dropbench.data import load_task_data
from dropbench.report.stats import smallest_p_value
from dropbench.suite import load_suite
from dropbench.train import train_model

# Table 9's rows as (regularizer, hidden keep, input keep): four without dropout, two with it in every layer.
TABLE9_ROWS = {
    ("l2", 1.0, 1.0),
    ("l1+l2", 1.0, 1.0),
    ("l2+kl-sparsity", 1.0, 1.0),
    ("max-norm", 1.0, 1.0),
    ("l2", 0.5, 0.8),
    ("max-norm", 0.5, 0.8),
}


def configurations(cells):
    return {(c.regularizer.name, c.keep_rate, c.input_keep_rate, c.train_size) for c in cells}


def seeds_of(cells):
    return sorted({c.seed for c in cells})


def test_table9_runs_the_papers_six_rows_on_all_of_mnist():
    cells = load_suite("srivastava2014-table9").cells()
    assert {(reg, keep, inp) for reg, keep, inp, _ in configurations(cells)} == TABLE9_ROWS
    assert all(c.train_size == 0 for c in cells)  # 0: the whole training split, no subsample
    assert len(cells) == len(TABLE9_ROWS) * len(seeds_of(cells))
    assert {c.task.model.hidden for c in cells} == {(512, 512)}


def test_figure10_pairs_dropout_with_none_at_each_size():
    cells = load_suite("srivastava2014-figure10").cells()
    sizes = sorted({c.train_size for c in cells})
    assert sizes == [100, 500, 1000, 5000, 10000]
    arms = {(c.keep_rate, c.input_keep_rate) for c in cells}
    assert arms == {(0.5, 0.8), (1.0, 1.0)}
    assert len(cells) == len(sizes) * len(arms) * len(seeds_of(cells))


@pytest.mark.parametrize(
    ("suite", "family"),
    [
        ("srivastava2014-table9", 8),  # each of the 2 dropout rows against each of the 4 without
        ("srivastava2014-figure10", 5),  # dropout against none at each size
        ("srivastava2014-figure9", 5),  # each keep rate below 1 against p = 1
        ("srivastava2014-figure9b", 5),
    ],
)
def test_the_seeds_let_the_sign_flip_test_decide_the_claim_under_holm(suite, family):
    """A claim of significance needs a smallest p below α / family (Holm's first step); at too few seeds the
    exact sign-flip test cannot give one, whatever the data. One seed fewer could not."""
    seeds = len(seeds_of(load_suite(suite).cells()))
    assert seeds >= 5
    assert smallest_p_value(seeds) < 0.05 / family
    assert smallest_p_value(seeds - 1) >= 0.05 / family


@pytest.mark.parametrize(
    "suite",
    [
        "srivastava2014-table9",
        "srivastava2014-figure10",
        "srivastava2014-figure9",
        "srivastava2014-figure9b",
        "srivastava2014-table9-full",
        "srivastava2014-figure9-full",
    ],
)
def test_the_suites_train_with_the_papers_recipe(suite):
    """SGD with momentum raised from 0.5 to 0.95, an lr decayed every epoch, max-norm wherever dropout is."""
    cells = load_suite(suite).cells()
    for optimizer in {c.task.optimizer for c in cells}:
        assert optimizer.name == "sgd" and optimizer.momentum == 0.95
        assert optimizer.momentum_ramp is not None and optimizer.momentum_ramp.start == 0.5
        assert optimizer.schedule.kind == "exponential" and 0 < optimizer.schedule.gamma < 1
        assert optimizer.momentum_at(0) == 0.5 and optimizer.momentum_at(optimizer.momentum_ramp.epochs) == 0.95
    full = {c.task.name for c in cells}
    assert full == {"mnist"}


def test_the_trainer_steps_at_the_table9_recipe(recorded):  # noqa: F811  (the fixture)
    """The suite's optimizer, on a small task: every step's lr is 0.02 · 0.97^epoch and its momentum rises by
    0.045 an epoch from 0.5 to 0.95 at epoch 10, computed here by hand."""
    optimizer = load_suite("srivastava2014-table9").cells()[0].task.optimizer
    data = load_task_data("wine")
    steps = math.ceil(len(data.y_train) / 32)
    epochs = 12
    train_model(make_cell("wine", epochs=epochs, hidden=(16,), batch_size=32, optimizer=optimizer), data)
    by_hand = [(0.02 * 0.97**epoch, min(0.95, 0.5 + 0.045 * epoch)) for epoch in range(epochs) for _ in range(steps)]
    assert_steps(recorded, by_hand)


def test_the_full_suites_dry_run_gives_one_core_and_one_gpu(tmp_path, capsys):
    """A user with a GPU sizes the full-length run from the dry run before starting it."""
    out = tmp_path / "t.csv"
    assert main(["run", "srivastava2014-table9-full", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "on one CPU core:" in text and "on one GPU:" in text and "rates measured on an H200" in text
    assert not out.exists()
    # The timed epochs of benchmarks/results/gpu-h200-2026-11-30b.md extrapolate to 14.5 h on one H200.
    gpu_hours = float(re.search(r"on one GPU: ([0-9.]+) h", text)[1])
    assert 0.8 * 14.5 <= gpu_hours <= 1.2 * 14.5


def test_the_gpu_estimate_counts_a_stack_step_once():
    """On a GPU a step is bound by launches, so K cells stacked cost far less than K cells alone, and the
    unstackable cells (kl-sparsity) cost their full steps."""
    from dropbench.planning import GPU_SECONDS_PER_STEP, one_gpu_seconds

    grid = load_suite("srivastava2014-table9-full").cells()
    stackable = [cell for cell in grid if "kl-sparsity" not in cell.regularizer.name]
    alone = [cell for cell in grid if "kl-sparsity" in cell.regularizer.name]
    assert alone and len(stackable) > 20
    separately = sum(one_gpu_seconds([cell]) for cell in stackable)
    assert one_gpu_seconds(stackable) < separately / 5
    steps = alone[0].epochs * 550  # 55,000 rows in batches of 100
    assert one_gpu_seconds(alone[:1]) >= steps * GPU_SECONDS_PER_STEP


def test_fixed_pn_cells_are_estimated_at_their_widened_size():
    """Figure 9(b) widens each layer to n / p: the estimate (and the shards it balances) must count those
    weights, not the n written in the suite."""
    from dataclasses import replace

    from dropbench.planning import estimated_cost

    cell = make_cell("mnist", keep=0.25, hidden=(128, 128), epochs=1)
    widened = replace(cell, task=replace(cell.task, model=replace(cell.task.model, fixed_pn=True)))
    as_written = make_cell("mnist", keep=0.25, hidden=(512, 512), epochs=1)
    assert estimated_cost(widened) == pytest.approx(estimated_cost(as_written))
    assert estimated_cost(widened) > 3 * estimated_cost(cell)
