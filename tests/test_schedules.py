"""Learning-rate schedules and the momentum ramp (dropbench.schedules): the values against hand computation, the
values the trainers actually set at each step (single cell and stack), stacked equals single under a schedule,
identity (only a schedule that is set enters a cell_id), and bad suites refused in one line."""

import math
import textwrap
from dataclasses import replace

import pytest
import torch
from conftest import make_cell
from test_stacked import assert_same_figures, max_difference

from dropbench import regularizers as regularizers_module
from dropbench import stacked as stacked_module
from dropbench.cli import main
from dropbench.config import OptimizerConfig
from dropbench.data import load_task_data
from dropbench.errors import UserError
from dropbench.schedules import LrSchedule, MomentumRamp
from dropbench.stacked import fit_stacked, stack_key, train_stacked
from dropbench.suite import load_suite
from dropbench.train import Training, fit_cell, train_model

# ---------------------------------------------------------------- the values, by hand


def factors(schedule, epochs, steps):
    """The factor of every step of a training of `epochs` epochs of `steps` steps, epoch by epoch."""
    return [[schedule.factor(e, s, steps, epochs) for s in range(steps)] for e in range(epochs)]


def test_the_default_schedule_is_exactly_the_lr_at_every_step():
    config = OptimizerConfig(lr=0.037)
    assert not config.scheduled and config.schedule.is_constant
    assert {config.lr_at(e, s, 7, 50) for e in range(50) for s in range(7)} == {0.037}  # exact, not approximate
    assert {config.momentum_at(e) for e in range(50)} == {0.9}


def test_exponential_decays_once_per_epoch():
    schedule = LrSchedule(kind="exponential", gamma=0.5)
    assert factors(schedule, 4, 3) == [[1.0] * 3, [0.5] * 3, [0.25] * 3, [0.125] * 3]
    # the paper's 0.998 per epoch: 0.998^500 after 500 epochs
    assert LrSchedule(kind="exponential", gamma=0.998).factor(500, 0, 600, 3000) == pytest.approx(0.36751, abs=1e-5)


def test_step_multiplies_by_gamma_every_n_epochs():
    schedule = LrSchedule(kind="step", gamma=0.1, every=3)
    got = [schedule.factor(e, 0, 5, 10) for e in range(8)]
    assert got == pytest.approx([1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01], rel=1e-12)


def test_cosine_runs_per_step_from_lr_to_the_floor_over_the_training():
    """4 epochs of 2 steps: step t of 8 takes floor + (1 - floor)·(1 + cos(π·t/8))/2."""
    schedule = LrSchedule(kind="cosine", floor=0.1)
    got = [f for epoch in factors(schedule, 4, 2) for f in epoch]
    by_hand = [
        1.0,
        0.1 + 0.45 * (1 + 0.9238795325112867),  # cos(π/8)
        0.1 + 0.45 * (1 + 0.7071067811865476),  # cos(π/4)
        0.1 + 0.45 * (1 + 0.3826834323650898),  # cos(3π/8)
        0.55,  # halfway: cos(π/2) = 0
        0.1 + 0.45 * (1 - 0.3826834323650898),
        0.1 + 0.45 * (1 - 0.7071067811865476),
        0.1 + 0.45 * (1 - 0.9238795325112867),
    ]
    assert got == pytest.approx(by_hand, rel=1e-12)
    assert schedule.uses_horizon and not LrSchedule(kind="exponential", gamma=0.9).uses_horizon
    # the horizon is the training's: a longer one decays more slowly
    assert schedule.factor(2, 0, 2, 8) == pytest.approx(0.1 + 0.45 * (1 + 0.7071067811865476))


def test_warmup_rises_per_step_then_the_decay_starts_at_its_own_epoch_zero():
    """W = 2 epochs of 4 steps: steps 0..7 take 1/8, 2/8, ..., 8/8; epoch 2 is the decay's epoch 0."""
    schedule = LrSchedule(kind="exponential", gamma=0.5, warmup_epochs=2)
    got = factors(schedule, 5, 4)
    assert got[0] == [1 / 8, 2 / 8, 3 / 8, 4 / 8] and got[1] == [5 / 8, 6 / 8, 7 / 8, 1.0]
    assert got[2:] == [[1.0] * 4, [0.5] * 4, [0.25] * 4]
    # the step schedule and a constant lr after a warm-up: the same boundary
    assert LrSchedule(kind="step", gamma=0.1, every=2, warmup_epochs=1).factor(1, 0, 4, 9) == 1.0
    assert LrSchedule(kind="step", gamma=0.1, every=2, warmup_epochs=1).factor(3, 0, 4, 9) == pytest.approx(0.1)
    constant = LrSchedule(warmup_epochs=1)
    assert [constant.factor(0, s, 4, 3) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert constant.factor(1, 0, 4, 3) == constant.factor(2, 3, 4, 3) == 1.0


def test_cosine_after_a_warmup_spans_the_epochs_after_it():
    """5 epochs, 1 of warm-up, 2 steps each: the cosine runs over the 8 steps of epochs 1-4."""
    schedule = LrSchedule(kind="cosine", floor=0.0, warmup_epochs=1)
    assert [schedule.factor(0, s, 2, 5) for s in range(2)] == [0.5, 1.0]
    assert schedule.factor(1, 0, 2, 5) == 1.0
    assert schedule.factor(3, 0, 2, 5) == pytest.approx(0.5)  # step 4 of 8 after the warm-up
    assert schedule.factor(4, 1, 2, 5) == pytest.approx(0.5 * (1 - 0.9238795325112867))


def test_the_momentum_ramp_rises_linearly_per_epoch_to_the_final_momentum():
    ramp = MomentumRamp(start=0.5, epochs=4)
    got = [ramp.momentum(0.9, e) for e in range(7)]
    assert got == pytest.approx([0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9], rel=1e-12)
    assert got[4:] == [0.9, 0.9, 0.9]  # exactly the final value once the ramp is over
    config = OptimizerConfig(lr=0.1, momentum=0.99, momentum_ramp=MomentumRamp(0.5, 500))
    assert config.momentum_at(250) == pytest.approx(0.745) and config.momentum_at(3000) == 0.99


# ---------------------------------------------------------------- what the trainers set at each step


@pytest.fixture
def recorded(monkeypatch):
    """(lr, momentum or None) of the first parameter group at every optimizer step, SGD and Adam alike, for
    every optimizer object (a stack builds a new one when it shrinks), and the stacked trainer's own SGD update
    (which does not go through `SGD.step`)."""
    steps = []
    for cls in (torch.optim.SGD, torch.optim.Adam):
        original = cls.step

        def step(self, *args, _original=original, **kwargs):
            group = self.param_groups[0]
            steps.append((group["lr"], group.get("momentum") if isinstance(self, torch.optim.SGD) else None))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "step", step)
    own_update = stacked_module._sgd_step_

    def stack_step(optimizer, group):
        steps.append((group["lr"], group["momentum"]))
        return own_update(optimizer, group)

    monkeypatch.setattr(stacked_module, "_sgd_step_", stack_step)
    return steps


# wine: 106 training rows at batch 32 are 4 steps per epoch
WINE_STEPS = 4
RECIPE = OptimizerConfig(
    lr=0.1,
    momentum=0.9,
    schedule=LrSchedule(kind="exponential", gamma=0.5, warmup_epochs=1),
    momentum_ramp=MomentumRamp(start=0.5, epochs=2),
)
# epoch 0 warms up (momentum 0.5), epoch 1 at lr (0.7), epochs 2 and 3 decayed once and twice (0.9)
RECIPE_BY_HAND = (
    [(0.1 * k / 4, 0.5) for k in (1, 2, 3, 4)]
    + [(0.1, 0.7)] * WINE_STEPS
    + [(0.05, 0.9)] * WINE_STEPS
    + [(0.025, 0.9)] * WINE_STEPS
)


def wine_cell(optimizer, **kwargs):
    return make_cell("wine", epochs=4, hidden=(16,), batch_size=32, optimizer=optimizer, **kwargs)


def assert_steps(recorded, by_hand):
    assert len(recorded) == len(by_hand)
    for (lr, momentum), (lr_hand, momentum_hand) in zip(recorded, by_hand):
        assert lr == pytest.approx(lr_hand, rel=1e-12)
        assert momentum == (None if momentum_hand is None else pytest.approx(momentum_hand, rel=1e-12))


def test_the_single_cell_trainer_steps_at_the_scheduled_lr_and_momentum(recorded):
    data = load_task_data("wine")
    assert math.ceil(len(data.y_train) / 32) == WINE_STEPS
    train_model(wine_cell(RECIPE), data)
    assert_steps(recorded, RECIPE_BY_HAND)


def test_the_stacked_trainer_steps_at_the_scheduled_lr_and_momentum(recorded):
    """One optimizer for the stack: each step once, at the values a single cell takes."""
    data = load_task_data("wine")
    cells = [wine_cell(RECIPE, seed=seed, reg=reg) for seed, reg in enumerate(["none", "l2", "max-norm"])]
    assert len({stack_key(cell) for cell in cells}) == 1
    train_stacked(cells, data)
    assert_steps(recorded, RECIPE_BY_HAND)


def test_adam_takes_the_schedule_and_keeps_its_betas(recorded):
    cosine = OptimizerConfig(name="adam", lr=0.01, schedule=LrSchedule(kind="cosine", floor=0.0))
    train_model(wine_cell(cosine), load_task_data("wine"))
    total = 4 * WINE_STEPS
    assert_steps(recorded, [(0.01 * 0.5 * (1 + math.cos(math.pi * t / total)), None) for t in range(total)])


def test_a_continued_training_sets_what_an_uninterrupted_one_does(recorded):
    """The schedule holds no state of its own: a Training told it has finished 2 epochs (as one continued from a
    checkpoint after epoch 2 would be) steps at the values of an uninterrupted training's third epoch."""
    data = load_task_data("wine")
    whole = Training(wine_cell(RECIPE), data)
    for _ in range(4):
        whole.run_epoch()
    uninterrupted = list(recorded)
    recorded.clear()
    continued = Training(wine_cell(RECIPE), data)
    continued.epoch = 2
    continued.run_epoch()
    assert recorded == uninterrupted[2 * WINE_STEPS : 3 * WINE_STEPS]


def test_decoupled_weight_decay_scales_with_the_scheduled_lr(monkeypatch):
    """As AdamW's: w·(1 − lr_t·λ) with the step's own lr, in both trainers."""
    factors_seen = []
    original = regularizers_module.apply_weight_decay_  # the weight-decay regularizer's hook calls it

    def recording(weights, factor):
        factors_seen.append(factor)
        return original(weights, factor)

    monkeypatch.setattr(regularizers_module, "apply_weight_decay_", recording)
    cell = wine_cell(RECIPE, reg="weight-decay", strengths={"weight-decay": 0.2})
    train_model(cell, load_task_data("wine"))
    assert factors_seen == pytest.approx([1 - lr * 0.2 for lr, _ in RECIPE_BY_HAND], rel=1e-12)


# ---------------------------------------------------------------- stacked equals single under a schedule

SCHEDULED = [
    OptimizerConfig(
        lr=0.05,
        momentum=0.95,
        schedule=LrSchedule(kind="exponential", gamma=0.8, warmup_epochs=1),
        momentum_ramp=MomentumRamp(start=0.5, epochs=2),
    ),
    OptimizerConfig(name="adam", lr=0.003, schedule=LrSchedule(kind="cosine", floor=0.1, warmup_epochs=1)),
    OptimizerConfig(lr=0.05, momentum=0.9, nesterov=True, schedule=LrSchedule(kind="step", gamma=0.5, every=1)),
]


@pytest.mark.parametrize("optimizer", SCHEDULED, ids=["sgd-exponential-ramp", "adam-cosine", "nesterov-step"])
def test_parameters_of_a_scheduled_stack_equal_the_single_cell_trainers(optimizer):
    """Dropout off, 3 epochs of digits (51 steps): every member's weights equal train_model's for that cell,
    weight decay (whose factor follows the lr) among the members."""
    data = load_task_data("digits")
    members = [("none", {}), ("l2", {"l2": 1e-3}), ("weight-decay", {"weight-decay": 0.05})]
    members.append(("max-norm", {"max-norm": 1.0}))
    cells = [
        make_cell("digits", reg=reg, strengths=strengths, seed=seed, hidden=(32, 32), epochs=3, optimizer=optimizer)
        for seed, (reg, strengths) in enumerate(members)
    ]
    models, _ = train_stacked(cells, data)
    for cell, model in zip(cells, models):
        single, _ = train_model(cell, data)
        assert max_difference(model.state_dict(), single.state_dict()) < 1e-5


def test_a_scheduled_stack_that_shrinks_keeps_the_schedule():
    """Members stop early at different epochs, so the stack is rebuilt with a new optimizer; the members that
    train on must still take the schedule's values and end with the single-cell trainer's figures."""
    data = load_task_data("synthetic")
    optimizer = replace(SCHEDULED[0], lr=0.1)
    specs = [("early-stopping", {"early-stopping": 1}), ("early-stopping", {"early-stopping": 2}), ("none", {})]
    cells = [
        make_cell("synthetic", reg=reg, strengths=strengths, seed=seed, hidden=(32,), epochs=8, optimizer=optimizer)
        for seed, (reg, strengths) in enumerate(specs)
    ]
    stacked = fit_stacked(cells, data)
    singles = [fit_cell(cell, data) for cell in cells]
    for result, single in zip(stacked, singles):
        assert_same_figures(result, single)
    assert min(r.epochs_run for r in singles) < 8 == max(r.epochs_run for r in singles)  # the stack did shrink


def test_cells_of_different_schedules_never_share_a_stack():
    plain = wine_cell(OptimizerConfig(lr=0.1))
    assert stack_key(plain) != stack_key(wine_cell(RECIPE))
    assert stack_key(wine_cell(RECIPE)) != stack_key(wine_cell(replace(RECIPE, momentum_ramp=MomentumRamp(0.5, 3))))
    assert stack_key(wine_cell(RECIPE)) == stack_key(wine_cell(RECIPE, seed=1, reg="l2"))


# ---------------------------------------------------------------- suites: shape, identity, label


def write(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


SUITE = """
name = "sched"
keep_rates = [1.0, 0.5]
seeds = 2
epochs = 12
optimizer = {{ name = "sgd", lr = 0.1, momentum = 0.95{extra} }}
[[task]]
name = "wine"
"""


def cells_of(tmp_path, extra, name="s.toml"):
    return load_suite(str(write(tmp_path, SUITE.format(extra=extra), name))).cells()


def test_a_suite_gives_the_schedule_and_the_ramp_to_its_cells(tmp_path):
    extra = (
        ", schedule = { kind = 'exponential', gamma = 0.998, warmup_epochs = 2 }, momentum_ramp = { start = 0.5,"
        " epochs = 10 }"
    )
    optimizer = cells_of(tmp_path, extra)[0].task.optimizer
    assert optimizer.schedule == LrSchedule(kind="exponential", gamma=0.998, warmup_epochs=2)
    assert optimizer.momentum_ramp == MomentumRamp(start=0.5, epochs=10)
    assert optimizer.label == "sgd+exponential(0.998)+warmup(2)+momentum-ramp(0.5,10)"
    assert optimizer.as_identity()["schedule"] == {"kind": "exponential", "gamma": 0.998, "warmup_epochs": 2}
    step = cells_of(tmp_path, ", schedule = { kind = 'step', gamma = 0.5, every = 4 }", "t.toml")
    assert step[0].task.optimizer.label == "sgd+step(0.5,4)"
    cosine = cells_of(tmp_path, ", schedule = { kind = 'cosine', floor = 0.01 }", "u.toml")
    assert cosine[0].task.optimizer.label == "sgd+cosine(0.01)"
    # the ramp's start defaults to the paper's 0.5
    ramp = cells_of(tmp_path, ", momentum_ramp = { epochs = 5 }", "v.toml")[0].task.optimizer
    assert ramp.momentum_ramp == MomentumRamp(start=0.5, epochs=5) and ramp.label == "sgd+momentum-ramp(0.5,5)"


def test_a_task_overrides_or_drops_the_suites_schedule(tmp_path):
    text = SUITE.format(extra=", schedule = { kind = 'step', gamma = 0.5, every = 4 }, momentum_ramp = { epochs = 3 }")
    text += textwrap.dedent(
        """
        [[task]]
        name = "digits"
        optimizer = { lr = 0.05 }
        [[task]]
        name = "breast-cancer"
        optimizer = { schedule = { kind = "constant" }, momentum_ramp = { epochs = 0 } }
        [[task]]
        name = "diabetes"
        optimizer = { name = "adam", lr = 0.001 }
        """
    )
    wine, digits, cancer, diabetes = load_suite(str(write(tmp_path, text))).tasks
    assert digits.optimizer.schedule == wine.optimizer.schedule and digits.optimizer.lr == 0.05
    assert digits.optimizer.momentum_ramp == MomentumRamp(0.5, 3)
    assert cancer.optimizer == OptimizerConfig(lr=0.1, momentum=0.95)  # both dropped: the unscheduled optimizer
    # another optimizer starts from its defaults but keeps the lr's schedule; a ramp (SGD's) does not carry over
    assert diabetes.optimizer.schedule == wine.optimizer.schedule and diabetes.optimizer.momentum_ramp is None


def test_an_unscheduled_suite_keeps_its_cell_ids_and_a_schedule_changes_them(tmp_path):
    """The default written out (constant, no warm-up, a ramp of 0 epochs, a decay by 1) is no schedule: the same
    cells, the same ids. Any real schedule makes other cells, of another setup."""
    plain = cells_of(tmp_path, "")
    for i, extra in enumerate(
        [
            ", schedule = { kind = 'constant' }",
            ", schedule = { kind = 'constant', warmup_epochs = 0 }, momentum_ramp = { start = 0.3, epochs = 0 }",
            ", schedule = { kind = 'exponential', gamma = 1.0 }",
            ", schedule = { kind = 'step', gamma = 1, every = 3 }",
        ]
    ):
        same = cells_of(tmp_path, extra, f"same{i}.toml")
        assert [c.cell_id for c in same] == [c.cell_id for c in plain]
        assert same[0].task.optimizer.label == "sgd"
    ids = {c.cell_id for c in plain}
    setups = {plain[0].setup_id}
    for i, extra in enumerate(
        [
            ", schedule = { kind = 'exponential', gamma = 0.998 }",
            ", schedule = { kind = 'exponential', gamma = 0.99 }",
            ", schedule = { kind = 'constant', warmup_epochs = 1 }",
            ", schedule = { kind = 'cosine' }",
            ", momentum_ramp = { epochs = 5 }",
            ", momentum_ramp = { start = 0.6, epochs = 5 }",
        ]
    ):
        other = cells_of(tmp_path, extra, f"other{i}.toml")
        assert not ids & {c.cell_id for c in other}, extra
        ids |= {c.cell_id for c in other}
        assert other[0].setup_id not in setups, extra
        setups.add(other[0].setup_id)


def test_the_run_metadata_and_the_csv_row_record_the_schedule(tmp_path):
    from dropbench.runner import setup_values

    extra = ", schedule = { kind = 'cosine', floor = 0.01, warmup_epochs = 1 }, momentum_ramp = { epochs = 4 }"
    suite = load_suite(str(write(tmp_path, SUITE.format(extra=extra))))
    described = suite.describe()["tasks"][0]["optimizer"]
    assert described["schedule"] == {"kind": "cosine", "floor": 0.01, "warmup_epochs": 1}
    assert described["momentum_ramp"] == {"start": 0.5, "epochs": 4}
    values = setup_values(suite.cells()[0])
    assert values["optimizer"] == "sgd+cosine(0.01)+warmup(1)+momentum-ramp(0.5,4)"
    assert values["lr"] == "0.1" and values["momentum"] == "0.95"  # the lr before its schedule, the final momentum


# ---------------------------------------------------------------- bad suites: one line, exit 2


BAD = [
    ("schedule = { gamma = 0.9 }", "schedule: no kind; give kind = one of constant, exponential, step, cosine"),
    ("schedule = { kind = 'linear' }", "schedule.kind: unknown value 'linear'; allowed: constant, exponential"),
    ("schedule = 'exponential'", "optimizer.schedule: expected a table, got 'exponential'"),
    ("schedule = { kind = 'exponential' }", "optimizer.schedule: kind 'exponential' needs gamma"),
    ("schedule = { kind = 'step', gamma = 0.5 }", "optimizer.schedule: kind 'step' needs every"),
    (
        "schedule = { kind = 'cosine', gamma = 0.5 }",
        "optimizer.schedule (kind 'cosine'): unknown key 'gamma'; allowed: kind, floor, warmup_epochs",
    ),
    (
        "schedule = { kind = 'exponential', gamma = 0.9, warmup = 2 }",
        "unknown key 'warmup' (did you mean 'warmup_epochs'?); allowed: kind, gamma, warmup_epochs",
    ),
    ("schedule = { kind = 'exponential', gamma = 1.5 }", "optimizer.schedule.gamma: must be in (0, 1], got 1.5"),
    ("schedule = { kind = 'exponential', gamma = 0 }", "optimizer.schedule.gamma: must be in (0, 1], got 0"),
    ("schedule = { kind = 'exponential', gamma = nan }", "optimizer.schedule.gamma: expected a finite number, got nan"),
    ("schedule = { kind = 'step', gamma = 0.5, every = 0 }", "schedule.every: expected an integer ≥ 1, got 0"),
    ("schedule = { kind = 'cosine', floor = 1.0 }", "optimizer.schedule.floor: must be in [0, 1), got 1"),
    ("schedule = { kind = 'cosine', floor = -0.1 }", "optimizer.schedule.floor: must be in [0, 1), got -0.1"),
    ("schedule = { kind = 'constant', warmup_epochs = 1.5 }", "warmup_epochs: expected an integer ≥ 0, got 1.5"),
    (
        "schedule = { kind = 'constant', warmup_epochs = 12 }",
        "optimizer.schedule.warmup_epochs: 12 is not below the 12 epochs of task 'wine'",
    ),
    ("momentum_ramp = { start = 0.5 }", "optimizer.momentum_ramp: no epochs; give epochs = T"),
    ("momentum_ramp = { epochs = 3, end = 0.99 }", "momentum_ramp: unknown key 'end'; allowed: start, epochs"),
    ("momentum_ramp = { start = 1.0, epochs = 3 }", "optimizer.momentum_ramp.start: must be in [0, 1), got 1"),
    ("momentum_ramp = { epochs = -1 }", "optimizer.momentum_ramp.epochs: expected an integer ≥ 0, got -1"),
    (
        "momentum_ramp = { epochs = 500 }",
        "optimizer.momentum_ramp.epochs: 500 is not below the 12 epochs of task 'wine': the momentum would never "
        "reach its final 0.95",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_a_bad_schedule_is_refused_in_one_line_naming_file_key_and_value(tmp_path, capsys, extra, expected):
    path = write(tmp_path, SUITE.format(extra=", " + extra))
    with pytest.raises(UserError) as error:
        load_suite(str(path))
    assert str(path) in str(error.value) and expected in str(error.value)
    code = main(["run", str(path), "--jobs", "1", "-q", "--out", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("dropbench: error: ") and expected in err
    assert not (tmp_path / "out.csv").exists()


def test_a_momentum_ramp_for_adam_is_refused(tmp_path):
    text = SUITE.format(extra="").replace('name = "sgd"', 'name = "adam"')
    text = text.replace("momentum = 0.95", "momentum_ramp = { epochs = 3 }")
    with pytest.raises(UserError, match=r"optimizer.momentum_ramp: only for name = 'sgd' \(adam has no momentum"):
        load_suite(str(write(tmp_path, text)))


def test_the_task_that_gave_a_bad_warmup_is_named(tmp_path):
    text = SUITE.format(extra="") + textwrap.dedent(
        """
        [[task]]
        name = "digits"
        epochs = 3
        optimizer = { schedule = { kind = "constant", warmup_epochs = 3 } }
        """
    )
    with pytest.raises(UserError, match=r"task\[1\].optimizer.schedule.warmup_epochs: 3 is not below the 3 epochs"):
        load_suite(str(write(tmp_path, text)))
    # a warm-up the suite gives, too long for a task with fewer epochs: the suite's key is named
    text = SUITE.format(extra=", schedule = { kind = 'constant', warmup_epochs = 5 }") + textwrap.dedent(
        """
        [[task]]
        name = "digits"
        epochs = 4
        """
    )
    with pytest.raises(UserError, match=r"s.toml: optimizer.schedule.warmup_epochs: 5 is not below the 4 epochs"):
        load_suite(str(write(tmp_path, text, "s.toml")))


@pytest.mark.slow
def test_a_scheduled_run_writes_the_schedule_into_its_row_and_metadata(tmp_path, capsys):
    import json

    from dropbench.results import read_results

    extra = ", schedule = { kind = 'step', gamma = 0.5, every = 1 }, momentum_ramp = { epochs = 1 }"
    path = write(tmp_path, SUITE.format(extra=extra).replace("epochs = 12", "epochs = 2"))
    out = tmp_path / "run.csv"
    args = ["run", str(path), "--seeds", "1", "--keep", "1.0", "--jobs", "1", "-q", "--out", str(out)]
    assert main(args) == 0
    row = read_results(out).iloc[0]
    assert row["optimizer"] == "sgd+step(0.5,1)+momentum-ramp(0.5,1)" and row["lr"] == 0.1
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["suite"]["tasks"][0]["optimizer"]["schedule"] == {"kind": "step", "gamma": 0.5, "every": 1}
    assert main(args) == 0  # a rerun finds its cell done
    assert len(read_results(out)) == 1
    capsys.readouterr()
