"""Checkpoints between halving rungs: continuing a training from its state gives bit for bit the row training it
from scratch gives, in both trainers and across them; the state's bytes, the driver's store, work units."""

import math
from dataclasses import asdict, replace

import pytest
import torch
from conftest import make_cell
from test_stacked import assert_same_figures

from dropbench.checkpoints import CheckpointStore, Start, TrainingState, check_folder, checkpoint_folder
from dropbench.config import ModelConfig, OptimizerConfig
from dropbench.data import load_task_data
from dropbench.errors import UserError
from dropbench.executors import LocalExecutor, PoolExecutor, fit_alone
from dropbench.models import MLP
from dropbench.models import REGISTRY as MODELS
from dropbench.regularizers import REGISTRY as REGULARIZERS
from dropbench.regularizers import Regularizer, Weights
from dropbench.schedules import LrSchedule, MomentumRamp
from dropbench.seeding import make_generator
from dropbench.stacked import fit_stacked, stack_key, work_units
from dropbench.train import fit_cell

SGD = OptimizerConfig(lr=0.05, momentum=0.9)
ADAM = OptimizerConfig(name="adam", lr=0.003)
# An lr that decays per epoch after a warm-up, and a momentum raised over the first 5 epochs: both cross the rungs.
SCHEDULED = OptimizerConfig(
    lr=0.1,
    momentum=0.95,
    schedule=LrSchedule(kind="exponential", gamma=0.8, warmup_epochs=1),
    momentum_ramp=MomentumRamp(start=0.5, epochs=5),
)
COSINE = OptimizerConfig(name="adam", lr=0.01, schedule=LrSchedule(kind="cosine", floor=0.1))
EPOCHS, RUNGS = 8, (3, 6)  # a full training of 8 epochs; rungs after 3 and 6


def exact(result):
    """Every field of a result but its time, state and threads: figures, epochs, status and the epoch curves (NaN as
    text, so that a NaN that crossed a process boundary, another object, still compares equal)."""
    fields = {k: v for k, v in asdict(result).items() if k not in ("fit_seconds", "state", "threads")}
    return {k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in fields.items()}


def rungs_of(cell):
    """The cells of one training's rungs: its first 3, 6 epochs, then all of it."""
    return [replace(cell, epoch_limit=e) for e in RUNGS] + [cell]


def continued(fit, cell):
    """Each rung's result, each rung continuing from the state the rung before handed back."""
    results, start = [], None
    for rung in rungs_of(cell):
        result = fit(rung, start)
        results.append(result)
        start = Start.of(TrainingState.from_bytes(result.state)) if result.state is not None else None
    return results


def single(cell, start=None):
    return fit_cell(cell, load_task_data(cell.task.name), start=start)


def stacked_alone(cell, start=None):
    return fit_stacked([cell], load_task_data(cell.task.name), starts=[start])[0]


CASES = {
    "sgd dropout": dict(keep=0.5, input_keep=0.8, optimizer=SGD),
    "adam l1+l2": dict(reg="l1+l2", strengths={"l1": 1e-4, "l2": 1e-3}, optimizer=ADAM),
    "max-norm dropout": dict(reg="max-norm", strengths={"max-norm": 1.0}, keep=0.6, optimizer=SGD),
    # patience 1 at a large step: stops within the second rung, and its state says so at the third
    "early stopping": dict(reg="early-stopping", strengths={"early-stopping": 1}, optimizer=OptimizerConfig(lr=0.5)),
    # schedules: the epoch is restored, and a rung's horizon is the full training's (a cosine over all 8 epochs)
    "exponential lr, momentum ramp": dict(keep=0.5, input_keep=0.8, optimizer=SCHEDULED),
    "cosine lr, weight decay": dict(reg="weight-decay", strengths={"weight-decay": 0.01}, keep=0.6, optimizer=COSINE),
}


@pytest.mark.parametrize("trainer", [single, stacked_alone], ids=["single", "stacked"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_continuing_from_each_rung_gives_the_row_trained_from_scratch(trainer, case):
    cell = make_cell("wine", epochs=EPOCHS, hidden=(16,), **CASES[case])
    for from_checkpoint, rung in zip(continued(trainer, cell), rungs_of(cell)):
        assert exact(from_checkpoint) == exact(trainer(rung)), rung.epochs
    if case == "early stopping":
        assert from_checkpoint.epochs_run < RUNGS[1]  # it stopped before the last rung, which trained nothing more


@pytest.mark.parametrize("optimizer", [SGD, SCHEDULED], ids=["sgd", "scheduled"])
def test_mixup_streams_continue_too(optimizer):
    """Mixup is a regularizer part with random streams of its own: its state travels in the checkpoint."""
    cell = make_cell("wine", reg="mixup", keep=0.5, epochs=EPOCHS, hidden=(16,), optimizer=optimizer)
    results = continued(single, cell)
    assert [exact(r) for r in results] == [exact(single(rung)) for rung in rungs_of(cell)]
    parts = TrainingState.from_bytes(results[0].state).parts
    assert set(parts) == {"mixup"} and isinstance(parts["mixup"]["pairs"], torch.Tensor)
    assert stack_key(cell) is None  # not a step regularizer: alone, in the single-cell trainer


class GradientNoise(Regularizer):
    """A plugin's part with a random stream of its own: N(0, λ²) noise on every weight's gradient."""

    default_strength = 1e-2
    stackable = True  # step hooks only; a part with state still trains alone

    def __init__(self, strength, cell):
        super().__init__(strength, cell)
        self.noise = make_generator(cell.seed_key, "gradient-noise")

    def gradients(self, weights: Weights, strength) -> None:
        for weight in weights.all:
            noise = torch.randn(weight.shape, generator=self.noise)
            weight.grad.add_(noise.to(weight.device), alpha=float(strength))

    def state(self):
        return {"noise": self.noise.get_state()}

    def restore(self, state):
        self.noise.set_state(state["noise"])


class ForgetfulNoise(GradientNoise):
    """The same part without its state hooks: a continued training starts its stream over."""

    state = Regularizer.state
    restore = Regularizer.restore


def test_a_plugin_parts_state_continues_through_its_hooks(monkeypatch):
    for name, kind in (("gradient-noise", GradientNoise), ("forgetful-noise", ForgetfulNoise)):
        monkeypatch.setitem(REGULARIZERS.builtins, name, REGULARIZERS.check(kind, name))
    cell = make_cell("wine", reg="l2+gradient-noise", keep=0.5, epochs=EPOCHS, hidden=(16,), optimizer=SCHEDULED)
    assert GradientNoise.keeps_state() and stack_key(cell) is None  # its state is per cell: never in a stack
    results = continued(single, cell)
    assert [exact(r) for r in results] == [exact(single(rung)) for rung in rungs_of(cell)]
    assert set(TrainingState.from_bytes(results[0].state).parts) == {"gradient-noise"}
    forgetful = make_cell("wine", reg="l2+forgetful-noise", keep=0.5, epochs=EPOCHS, hidden=(16,), optimizer=SGD)
    assert not ForgetfulNoise.keeps_state() and stack_key(forgetful) is not None
    assert exact(continued(single, forgetful)[-1]) != exact(single(forgetful))  # what the hooks are for


def test_a_part_with_state_but_no_restore_is_refused():
    class Half(Regularizer):
        def state(self):
            return {}

    with pytest.raises(UserError, match="overrides only one of state and restore"):
        REGULARIZERS.check(Half, "half")


class DeclaredMLP(MLP):
    """A plugin model kind: an MLP subclass that declares itself stackable (its forward is the MLP's)."""

    stackable = True


@pytest.mark.parametrize("trainer", [single, stacked_alone], ids=["single", "stacked"])
def test_a_plugin_model_declared_stackable_continues_as_the_mlp_does(trainer, monkeypatch):
    monkeypatch.setitem(MODELS.builtins, "declared-mlp", DeclaredMLP)
    cell = make_cell("wine", reg="max-norm", strengths={"max-norm": 1.0}, keep=0.5, epochs=EPOCHS, optimizer=SCHEDULED)
    cell = replace(cell, task=replace(cell.task, model=ModelConfig(kind="declared-mlp", hidden=(16, 8))))
    assert stack_key(cell) is not None
    for from_checkpoint, rung in zip(continued(trainer, cell), rungs_of(cell)):
        assert exact(from_checkpoint) == exact(trainer(rung)), rung.epochs


def test_a_continued_cells_time_counts_its_whole_training():
    cell = make_cell("wine", epochs=EPOCHS, hidden=(16,))
    first, second, last = continued(single, cell)
    assert 0 < first.fit_seconds < second.fit_seconds < last.fit_seconds
    assert last.state is None  # the last rung's training is over: nothing to continue


def test_stacked_members_continue_as_a_stack_from_scratch_does():
    """A stack of several members, each from its own checkpoint, one of them stopping early: bit for bit the stack
    trained from scratch, whatever the members were stacked with before."""
    data = load_task_data("breast-cancer")
    fast = OptimizerConfig(lr=0.1, momentum=0.9)
    cells = [
        make_cell("breast-cancer", reg="early-stopping", strengths={"early-stopping": 2}, epochs=12, optimizer=fast),
        make_cell("breast-cancer", reg="l2", strengths={"l2": 1e-3}, keep=0.5, seed=1, epochs=12, optimizer=fast),
        make_cell("breast-cancer", keep=0.8, input_keep=0.9, seed=2, epochs=12, optimizer=fast),
    ]
    first = [replace(c, epoch_limit=5) for c in cells]
    states = [Start.of(TrainingState.from_bytes(r.state)) for r in fit_stacked(first[::-1], data)][::-1]
    assert not any(s.stopped for s in states)  # a stack's members start from the same epoch
    scratch = fit_stacked(cells, data)
    assert 5 < scratch[0].epochs_run < 12  # the early-stopping member stops after the checkpoint, before the end
    assert exact_list(fit_stacked(cells, data, starts=states)) == exact_list(scratch)
    alone = [fit_stacked([c], data, starts=[s])[0] for c, s in zip(cells, states)]
    assert exact_list(alone) == exact_list(scratch)


def exact_list(results):
    return [exact(r) for r in results]


@pytest.mark.parametrize("optimizer", [SGD, ADAM], ids=["sgd", "adam"])
def test_a_state_of_either_trainer_continues_in_the_other(optimizer):
    """The state is in an MLP's layout whichever trainer wrote it: a stacked member's checkpoint continued by the
    single-cell trainer (and back) gives that trainer's figures, to the float32 rounding that stacked and single
    figures always differ by (tests/test_stacked.py)."""
    data = load_task_data("wine")
    cell = make_cell("wine", reg="l2", strengths={"l2": 1e-3}, epochs=6, hidden=(32, 16), optimizer=optimizer)
    first = replace(cell, epoch_limit=3)
    from_stack = Start.of(TrainingState.from_bytes(fit_stacked([first], data)[0].state))
    from_single = Start.of(TrainingState.from_bytes(fit_cell(first, data).state))
    assert_same_figures(fit_cell(cell, data, start=from_stack), fit_cell(cell, data))
    assert_same_figures(fit_stacked([cell], data, starts=[from_single])[0], fit_stacked([cell], data)[0])
    # and each trainer continuing its own state: stacked and single agree as they do from scratch
    assert_same_figures(fit_stacked([cell], data, starts=[from_stack])[0], fit_cell(cell, data, start=from_single))


def test_a_start_from_another_training_or_beyond_the_cell_is_refused():
    cell = make_cell("wine", epochs=EPOCHS, hidden=(16,))
    state = Start.of(TrainingState.from_bytes(single(replace(cell, epoch_limit=6)).state))
    with pytest.raises(ValueError, match="after 6 epochs cannot start a cell of 3"):
        single(replace(cell, epoch_limit=3), state)
    with pytest.raises(ValueError, match="cannot start cell"):
        single(replace(cell, seed=1), state)
    with pytest.raises(ValueError, match="same epoch"):
        other = make_cell("wine", seed=1, epochs=EPOCHS, hidden=(16,))
        fit_stacked([cell, other], load_task_data("wine"), starts=[state, None])


# ---------------------------------------------------------------- cells and their identity


def test_an_epoch_limit_names_a_rung_of_the_same_training():
    cell = make_cell("wine", epochs=EPOCHS)
    rung = replace(cell, epoch_limit=3)
    assert "epoch_limit" not in cell.identity() and rung.identity()["epoch_limit"] == 3
    assert rung.cell_id != cell.cell_id and rung.training_id == cell.training_id == cell.cell_id
    assert (rung.epochs, cell.epochs, rung.continues, cell.continues) == (3, EPOCHS, True, False)
    assert rung.setup_id != cell.setup_id  # a rung's rows are never pooled with the full training's
    for bad in (-1, EPOCHS, EPOCHS + 1):
        with pytest.raises(ValueError, match="epoch_limit"):
            replace(cell, epoch_limit=bad)


# ---------------------------------------------------------------- the state's bytes


def test_a_state_round_trips_through_its_bytes_and_anything_else_is_refused(monkeypatch):
    result = single(replace(make_cell("wine", keep=0.5, epochs=EPOCHS, hidden=(16,), optimizer=ADAM), epoch_limit=3))
    state = TrainingState.from_bytes(result.state)
    assert state.epoch == 3 and len(state.curves) == 3 and not state.stopped and state.device == "cpu"
    assert set(state.optimizer) == set(state.weights) and "exp_avg" in state.optimizer["hidden.0.weight"]
    again = TrainingState.from_bytes(state.to_bytes())
    assert (again.curves, again.best_loss, again.epoch) == (state.curves, state.best_loss, 3)
    assert all(torch.equal(again.weights[k], v) for k, v in state.weights.items())
    for data in (b"", b"not a checkpoint", result.state[: len(result.state) // 2]):
        with pytest.raises(ValueError, match="not a training state"):
            TrainingState.from_bytes(data)
    monkeypatch.setattr("dropbench.checkpoints.package_version", lambda name: "0.0.0-other")
    with pytest.raises(ValueError, match="not by this dropbench and torch"):
        TrainingState.from_bytes(result.state)


def test_a_checkpoint_is_never_loaded_as_code(tmp_path):
    """torch.load(weights_only=True): a pickle that would run code is refused, not run."""
    import pickle

    class Boom:
        def __reduce__(self):
            return (print, ("ran",))

    with pytest.raises(ValueError, match="not a training state"):
        TrainingState.from_bytes(pickle.dumps({"format": 1, "x": Boom()}, protocol=2))


# ---------------------------------------------------------------- the driver's store


@pytest.fixture
def rung_state():
    cell = make_cell("wine", epochs=EPOCHS, hidden=(16,))
    return cell, single(replace(cell, epoch_limit=3)).state


def test_the_store_gives_a_cell_its_trainings_checkpoint_when_usable(tmp_path, rung_state):
    cell, data = rung_state
    notes = []
    store = CheckpointStore(tmp_path / "r.csv", "cpu", torch.get_num_threads(), notes.append)
    assert store.folder == checkpoint_folder(tmp_path / "r.csv") == tmp_path / "r.checkpoints"
    assert store.start(cell) is None  # nothing saved yet
    store.save(replace(cell, epoch_limit=3), data)
    assert store.path(cell.training_id).is_file() and store.start(cell) == Start(3, False, data)
    assert store.start(replace(cell, epoch_limit=6)).epoch == 3  # any later rung of the training
    assert store.start(replace(cell, epoch_limit=2)) is None  # it holds more epochs than the cell trains
    assert store.start(replace(cell, seed=1)) is None  # another training
    assert CheckpointStore(tmp_path / "r.csv", "cpu", 2).start(cell) is None  # its figures: another thread count's
    assert CheckpointStore(tmp_path / "r.csv", "cuda", torch.get_num_threads()).start(cell) is None
    store.path(cell.training_id).write_bytes(b"torn")
    assert store.start(cell) is None and "not used" in notes[0] and "trains from scratch" in notes[0]


def test_the_store_removes_only_its_own_files(tmp_path, rung_state):
    cell, data = rung_state
    store = CheckpointStore(tmp_path / "r.csv", "cpu", 1)
    other = make_cell("wine", seed=1, epochs=EPOCHS)
    for c in (cell, other):
        store.save(replace(c, epoch_limit=3), data)
    store.keep_only({other.training_id})
    assert [p.name for p in store.ours()] == [f"{other.training_id}.pt"]
    (store.folder / "notes.txt").write_text("the user's")
    (store.folder / f".{other.training_id}.pt.tmp").write_bytes(b"half")  # a kill while it was written
    store.clear()
    assert store.ours() == [] and store.ours(partial=True) == []
    assert (store.folder / "notes.txt").is_file()  # not ours: it stays, and so does its folder
    (store.folder / "notes.txt").unlink()
    store.clear()
    assert not store.folder.exists()
    store.clear()  # nothing there: nothing to do


def test_a_checkpoints_path_that_is_not_a_folder_is_refused_in_one_line(tmp_path):
    check_folder(tmp_path / "r.csv")  # absent: fine
    (tmp_path / "r.checkpoints").write_text("")
    with pytest.raises(UserError, match=r"r.checkpoints: not a folder; .* choose another --out$"):
        check_folder(tmp_path / "r.csv")


# ---------------------------------------------------------------- work units and executors


def test_work_units_carry_starts_and_stack_only_members_at_the_same_epoch():
    cells = [replace(make_cell("wine", seed=s, epochs=EPOCHS), epoch_limit=6) for s in range(4)]
    starts = {cells[0].cell_id: Start(3, False, b"a"), cells[1].cell_id: Start(3, False, b"b")}
    starts[cells[2].cell_id] = Start(2, True, b"c")  # early stopping ended it at 2: nothing to train with the others
    units = work_units(cells, jobs=1, stack=True, starts=starts)
    assert sorted((len(u.cells), u.starts) for u in units) == sorted(
        [(2, (starts[cells[0].cell_id], starts[cells[1].cell_id])), (1, (starts[cells[2].cell_id],)), (1, ())]
    )
    assert all(u.stacked for u in units)
    alone = work_units(cells, jobs=1, stack=False, starts=starts)
    assert [u.start(0) for u in alone] == [starts.get(c.cell_id) for c in cells]


@pytest.mark.slow  # spawns two worker processes
def test_a_process_pool_carries_states_to_its_workers_and_back():
    cells = [make_cell("wine", seed=s, keep=0.5, epochs=EPOCHS, hidden=(16,)) for s in range(3)]
    first = [replace(c, epoch_limit=3) for c in cells]
    local = {cell.cell_id: result for cell, result, _ in LocalExecutor(threads=1).run(first)}
    starts = {c.cell_id: Start.of(TrainingState.from_bytes(local[f.cell_id].state)) for c, f in zip(cells, first)}
    pooled = {cell.cell_id: result for cell, result, _ in PoolExecutor(2, threads=1).run(cells, starts=starts)}
    for cell in cells:
        assert exact(pooled[cell.cell_id]) == exact(fit_alone(cell, load_task_data("wine")))  # as from scratch
        assert not math.isnan(pooled[cell.cell_id].test_acc)
