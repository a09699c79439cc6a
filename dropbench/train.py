"""Fit one cell: a lean loop over preloaded tensors, then every split measured in eval mode."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn

from .checkpoints import Start, TrainingState
from .config import Cell, OptimizerConfig
from .data import TaskData
from .devices import autocast
from .errors import UserError
from .models import Network, build_model, count_parameters, init_parameters_
from .regularizers import EarlyStopping, LossFn, Regularizer, Weights, regularizer_class
from .report.stats import expected_calibration_error
from .seeding import derive_seed, make_generator
from .threads import figures_threads

EVAL_BATCH = 4096  # large batches under inference_mode: evaluation is cheap beside training
ECE_BINS = 15  # equal-width confidence bins, the usual choice since Guo et al. 2017


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's curve point. `fit_loss` is the mean minibatch data loss in training mode (with
    dropout, without penalties); `val_loss` and `val_acc` are measured in eval mode."""

    epoch: int
    fit_loss: float
    val_loss: float
    val_acc: float


@dataclass(frozen=True)
class EpochProgress:
    """Epoch `epoch` of at most `max_epochs` has ended for the cells `cell_ids` (a single cell, or the members
    still in a stack); `stopped` holds those whose training ended with it (early stopping, divergence, the
    last epoch). What a progress display counts; sent from worker processes, so plain data only."""

    epoch: int
    max_epochs: int
    cell_ids: tuple[str, ...]
    stopped: tuple[str, ...] = ()


OnEpoch = Callable[[EpochProgress], None]


@dataclass
class CellResult:
    status: str  # ok | diverged | failed
    error: str = ""
    epochs_run: int = 0
    best_epoch: int = 0
    train_loss: float = math.nan
    train_acc: float = math.nan
    val_loss: float = math.nan
    val_acc: float = math.nan
    test_loss: float = math.nan
    test_acc: float = math.nan
    test_ece: float = math.nan
    test_acc_mc: float = math.nan
    test_loss_mc: float = math.nan
    test_ece_mc: float = math.nan
    fit_seconds: float = math.nan
    n_params: int = 0
    curves: list[EpochRecord] = field(default_factory=list)
    # A cell that `continues` (a halving rung's): its training's state at the end (checkpoints.TrainingState as
    # bytes), which the next rung's cell starts from; None for any other cell, and for one that did not end ok.
    state: bytes | None = field(default=None, repr=False)
    # The most torch threads it trained with, set by the executor (0: not recorded): the CSV's `threads`. Not a
    # figure: under --threads auto it follows the cores free (dropbench.threads), and the figures do not.
    threads: int = 0


@dataclass(frozen=True)
class Measured:
    """A split measured once: mean loss (for classification the cross-entropy, i.e. the NLL), accuracy and ECE."""

    loss: float
    acc: float = math.nan
    ece: float = math.nan


def make_optimizer(config: OptimizerConfig, params: list[torch.Tensor], fused: bool = True) -> torch.optim.Optimizer:
    """SGD or Adam with torch's fused kernels: one pass over each parameter per step where `foreach` makes
    several (momentum, update), a visible share of a wide net's step (docs/performance.md). The same
    arithmetic either way; `foreach` where this torch has no fused kernel for the device (CPU kernels came in
    torch 2.4), or when asked (`fused=False`: docs/stacked.md says why a stack must not use the fused kernels)."""
    if fused:
        try:
            return _optimizer(config, params, fused=True)
        except RuntimeError:
            pass
    return _optimizer(config, params, foreach=True)


def _optimizer(
    config: OptimizerConfig, params: list[torch.Tensor], *, fused: bool | None = None, foreach: bool | None = None
) -> torch.optim.Optimizer:
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas, fused=fused, foreach=foreach)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, fused=fused, foreach=foreach
    )


def set_schedule_(
    optimizer: torch.optim.Optimizer,
    config: OptimizerConfig,
    epoch: int,
    step: int,
    steps_per_epoch: int,
    total_epochs: int,
) -> float:
    """Set the lr of `step` (from 0) of `epoch` (from 0) in every parameter group, and SGD's momentum of that
    epoch (`OptimizerConfig.lr_at`, `momentum_at`: pure functions of these numbers, so a continued training sets
    what an uninterrupted one does). torch's SGD and Adam, fused or foreach, read both from the group at every
    step. Returns the lr."""
    lr = config.lr_at(epoch, step, steps_per_epoch, total_epochs)
    momentum = config.momentum_at(epoch) if config.name == "sgd" else None
    for group in optimizer.param_groups:
        group["lr"] = lr
        if momentum is not None:
            group["momentum"] = momentum
    return lr


def data_loss(
    output: torch.Tensor, target: torch.Tensor, classification: bool, reduction: str = "mean", smoothing: float = 0.0
) -> torch.Tensor:
    """Cross-entropy for classes (label smoothing only when asked), MSE on the standardized target."""
    if classification:
        return F.cross_entropy(output, target, reduction=reduction, label_smoothing=smoothing)
    return F.mse_loss(output.squeeze(-1), target, reduction=reduction)


def _fsum(parts: list[torch.Tensor]) -> float:
    # math.fsum is exactly rounded: the figure does not depend on how a parallel reduction was split.
    return math.fsum(torch.cat(parts).double().tolist())


@torch.inference_mode()
def measure(model: nn.Module, data: TaskData, which: str) -> Measured:
    """The whole split in eval mode: mean loss (plain cross-entropy or MSE), accuracy, ECE."""
    x, y = data.split(which)
    was_training = model.training
    model.eval()
    losses, confidences, hits = [], [], []
    for start in range(0, len(y), EVAL_BATCH):
        out, target = model(data.inputs(x[start : start + EVAL_BATCH])), y[start : start + EVAL_BATCH]
        losses.append(data_loss(out, target, data.classification, reduction="none"))
        if data.classification:
            confidence, predicted = out.softmax(dim=1).max(dim=1)
            confidences.append(confidence)
            hits.append(predicted == target)
    model.train(was_training)
    loss = _fsum(losses) / len(y)
    if not data.classification:
        return Measured(loss)
    correct = torch.cat(hits)
    ece = expected_calibration_error(torch.cat(confidences).tolist(), correct.tolist(), bins=ECE_BINS)
    return Measured(loss, int(correct.sum()) / len(y), ece)


def evaluate(model: nn.Module, data: TaskData, which: str) -> tuple[float, float]:
    """(mean loss, accuracy) of a split in eval mode; accuracy is NaN for regression."""
    measured = measure(model, data, which)
    return measured.loss, measured.acc


@torch.inference_mode()
def measure_mc(model: Network, data: TaskData, passes: int, generator: torch.Generator) -> Measured:
    """MC dropout on the test split: the mean of `passes` stochastic forward passes' probabilities."""
    x, y = data.x_test, data.y_test
    model.set_generator(generator)
    model.train()
    probabilities = torch.zeros(len(y), data.n_outputs, dtype=torch.float64, device=x.device)
    for _ in range(passes):
        for start in range(0, len(y), EVAL_BATCH):
            out = model(data.inputs(x[start : start + EVAL_BATCH]))
            probabilities[start : start + EVAL_BATCH] += out.softmax(dim=1).double()
    model.eval()
    probabilities /= passes
    confidence, predicted = probabilities.max(dim=1)
    correct = predicted == y
    nll = -math.fsum(probabilities[torch.arange(len(y), device=x.device), y].clamp_min(1e-12).log().tolist()) / len(y)
    ece = expected_calibration_error(confidence.tolist(), correct.tolist(), bins=ECE_BINS)
    return Measured(nll, int(correct.sum()) / len(y), ece)


def subsample_training(data: TaskData, size: int) -> TaskData:
    """A stratified subsample of the training split, the same for every cell of this task and size."""
    n = len(data.y_train)
    if size >= n:
        raise UserError(f"train_size {size} is not below the {n} training rows of task '{data.name}'")
    stratify = data.y_train.cpu().numpy() if data.classification else None
    idx, _ = train_test_split(
        np.arange(n),
        train_size=size,
        stratify=stratify,
        random_state=derive_seed(data.name, "train_size", size) % 2**32,
    )
    idx = torch.as_tensor(np.sort(idx), device=data.y_train.device)
    return replace(data, x_train=data.x_train[idx], y_train=data.y_train[idx])


def optimizer_state(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The optimizer's per-parameter state by parameter name (`names` in the order of its parameters), copied."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return {name: _copied(optimizer.state[p]) for name, p in zip(names, params) if optimizer.state.get(p)}


def _copied(state: dict) -> dict:
    return {key: value.detach().clone() if isinstance(value, torch.Tensor) else value for key, value in state.items()}


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, names: list[str], state: dict[str, dict[str, torch.Tensor]]
) -> None:
    """Put back `optimizer_state`'s output. Through load_state_dict, which places each tensor as this optimizer
    keeps it (Adam's step on the device for the fused kernels, on the CPU for foreach); copies, because it keeps
    tensors it is given that are already in place, and the steps would then change the caller's state."""
    saved = optimizer.state_dict()
    saved["state"] = {i: _copied(state[name]) for i, name in enumerate(names) if name in state}
    optimizer.load_state_dict(saved)


class Training:
    """One cell's model, optimizer and random streams, and its training step.

    Random streams: initialization and batch order from (task, seed), shared by every cell that
    differs only in regularizer or keep rate (common random numbers); masks (and a part's own streams, such as
    mixup's) from the whole cell (its `seed_key`, the digits of its `training_id`: a halving rung's cell draws
    what the first epochs of its full training draw). The regularizer's parts act through their hooks
    (`regularizers.Regularizer`), called in the order it gives.
    """

    def __init__(self, cell: Cell, data: TaskData) -> None:
        self.cell, self.data = cell, data
        parts = []
        for name, strength in cell.regularizer.parts:
            kind = regularizer_class(name)
            if kind.classification_only and not data.classification:
                raise UserError(f"{name} needs a classification task; '{data.name}' is a regression")
            parts.append(kind(strength, cell))
        device = data.x_train.device
        self.order = make_generator(cell.task.name, cell.seed, "order")
        self.model = build_model(
            cell.task.model, data.input_shape, data.n_outputs, cell.layer_keep_rates, cell.input_keep_rate, cell.dropout
        )
        init_parameters_(self.model, make_generator(cell.task.name, cell.seed, "init"))  # CPU: same on every device
        self.model.to(device)
        self.masks = make_generator(cell.seed_key, "masks", device=device)
        self.model.set_generator(self.masks)
        self.model.record = any(type(part).needs_activations for part in parts)
        self.optimizer = make_optimizer(cell.task.optimizer, list(self.model.parameters()))
        # Where the training stands: epochs finished (the schedule's epoch of the next one) and the lr of the
        # last step set (decoupled weight decay scales with it, as AdamW's does).
        self.epoch, self.lr = 0, cell.task.optimizer.lr
        self.weights = Weights(self.model.penalized_weights(), self.model.max_norm_weights())
        self.loss: LossFn = partial(data_loss, classification=data.classification)
        for part in _with_hook(parts, "loss_fn"):
            self.loss = part.loss_fn(self.loss)
        self.batch_parts, self.penalties = _with_hook(parts, "batch"), _with_hook(parts, "penalty")
        self.gradient_parts, self.before_step = _with_hook(parts, "gradients"), _with_hook(parts, "before_step")
        self.after_step = _with_hook(parts, "after_step")
        # The parts that carry state from one epoch to the next (their own random streams): a checkpoint keeps it.
        self.stateful = {
            name: part for (name, _), part in zip(cell.regularizer.parts, parts) if type(part).keeps_state()
        }

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One SGD step on the training rows `idx`; returns the minibatch data loss (on the device, no sync)."""
        cell, data, weights = self.cell, self.data, self.weights
        inputs, target = data.inputs(data.x_train[idx]), data.y_train[idx]
        with autocast(inputs.device.type, cell.precision):
            loss_fn = self.loss
            for part in self.batch_parts:
                inputs, loss_fn = part.batch(inputs, loss_fn)
            loss = loss_fn(self.model(inputs), target)
        objective = loss
        for part in self.penalties:
            penalty = part.penalty(self.model)
            if penalty is not None:
                objective = objective + penalty
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        for part in self.gradient_parts:
            part.gradients(weights, _strength(part))
        for part in self.before_step:
            part.before_step(weights, _strength(part), self.lr)
        self.optimizer.step()
        for part in self.after_step:
            part.after_step(weights, _strength(part))
        return loss.detach()

    def run_epoch(self) -> float:
        """One pass over the training rows in a fresh seeded order, each step at its scheduled lr and momentum;
        the mean minibatch data loss."""
        n, device = len(self.data.y_train), self.data.x_train.device
        task = self.cell.task
        steps, scheduled = math.ceil(n / task.batch_size), task.optimizer.scheduled
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.model.train()
        # The permutation is drawn on the CPU (the order generator lives there) so every device sees the same batches.
        for step, idx in enumerate(torch.randperm(n, generator=self.order).to(device).split(task.batch_size)):
            if scheduled:
                self.lr = set_schedule_(self.optimizer, task.optimizer, self.epoch, step, steps, task.epochs)
            loss_sum += self.step(idx).double() * len(idx)
        self.epoch += 1
        return loss_sum.item() / n  # the epoch's one host sync

    def parameter_names(self) -> list[str]:
        return [name for name, _ in self.model.named_parameters()]

    def state(self, stopping: EarlyStopping, result: CellResult, stopped: bool) -> TrainingState:
        """The training as it stands after `result.epochs_run` epochs (see checkpoints.TrainingState)."""
        return TrainingState(
            training_id=self.cell.training_id,
            epoch=result.epochs_run,
            stopped=stopped,
            weights={k: v.detach().clone() for k, v in self.model.state_dict().items()},
            optimizer=optimizer_state(self.optimizer, self.parameter_names()),
            order=self.order.get_state(),
            masks=self.masks.get_state(),
            best_loss=stopping.best_loss,
            best_epoch=stopping.best_epoch,
            best_weights=stopping.best_state,
            curves=[(p.epoch, p.fit_loss, p.val_loss, p.val_acc) for p in result.curves],
            fit_seconds=result.fit_seconds,
            device=self.data.x_train.device.type,
            threads=figures_threads(),
            parts=self.part_states(),
        )

    def part_states(self) -> dict[str, dict[str, object]]:
        """The state of each part that keeps one (`Regularizer.state`), by the part's name."""
        return {name: part.state() for name, part in self.stateful.items()}

    def restore(self, state: TrainingState, stopping: EarlyStopping, result: CellResult) -> None:
        """Continue from `state`: the model, optimizer, streams, early-stopping tracker and curves as they were."""
        self.model.load_state_dict(state.weights)
        load_optimizer_state(self.optimizer, self.parameter_names(), state.optimizer)
        self.order.set_state(state.order)
        self.masks.set_state(state.masks)
        for name, part in self.stateful.items():
            if name not in state.parts:
                raise ValueError(f"a training state without the state of its regularizer part {name}")
            part.restore(state.parts[name])
        self.epoch = state.epoch  # the schedule's position: the next epoch's lr and momentum
        resume_tracking(stopping, result, state)


def resume_tracking(stopping: EarlyStopping, result: CellResult, state: TrainingState) -> None:
    """The early-stopping tracker and the result's epochs, curves and time as `state` left them."""
    stopping.best_loss, stopping.best_epoch = state.best_loss, state.best_epoch
    stopping.best_state = None if state.best_weights is None else {k: v.clone() for k, v in state.best_weights.items()}
    result.curves = [EpochRecord(*point) for point in state.curves]
    result.epochs_run, result.best_epoch, result.fit_seconds = state.epoch, state.best_epoch, state.fit_seconds


def _with_hook(parts: list[Regularizer], hook: str) -> list[Regularizer]:
    """The parts with a `hook` of their own, in the order a phase calls them: by `order`, then as the setting lists
    them (sorted() is stable)."""
    return sorted((part for part in parts if type(part).overrides(hook)), key=lambda part: type(part).order)


def _strength(part: Regularizer) -> float:
    """A part's strength as a step hook takes it (0 for one that has none)."""
    return 0.0 if part.strength is None else part.strength


def fit_cell(cell: Cell, data: TaskData, on_epoch: OnEpoch | None = None, start: Start | None = None) -> CellResult:
    """Train one cell and measure train/val/test in eval mode (on the best weights under early stopping).
    A cell that diverged is not measured: its figures are NaN (empty in the CSV). `on_epoch` hears of each
    epoch as it ends. With `start` the training continues from that state (see `train_model`)."""
    if cell.train_size:
        data = subsample_training(data, cell.train_size)
    model, result = train_model(cell, data, on_epoch, start.state() if start is not None else None)
    if result.status == "diverged":
        return result  # a model gone non-finite measures nothing real: every figure stays NaN
    measure_(result, model, data)
    if cell.mc_samples and data.classification:
        device = data.x_test.device
        mc = measure_mc(model, data, cell.mc_samples, make_generator(cell.seed_key, "mc-dropout", device=device))
        result.test_acc_mc, result.test_loss_mc, result.test_ece_mc = mc.acc, mc.loss, mc.ece
    return result


def measure_(result: CellResult, model: nn.Module, data: TaskData) -> None:
    """Fill the final figures: each split whole, in eval mode, so no dropout noise enters a gap."""
    train, val, test = (measure(model, data, which) for which in ("train", "val", "test"))
    result.train_loss, result.train_acc = train.loss, train.acc
    result.val_loss, result.val_acc = val.loss, val.acc
    result.test_loss, result.test_acc, result.test_ece = test.loss, test.acc, test.ece


def train_model(
    cell: Cell, data: TaskData, on_epoch: OnEpoch | None = None, start: TrainingState | None = None
) -> tuple[Network, CellResult]:
    """Train one cell; returns the model (best weights under early stopping) and its curves so far.
    `fit_seconds` is the wall time of the training loop, the per-epoch validation pass included.

    With `start` (a state of the same training, `Cell.training_id`, after at most `cell.epochs` epochs) the training
    continues from it, bit for bit as it would have gone on: the result is the one training from scratch gives,
    its `fit_seconds` the state's plus this part's. A cell that `continues` (a halving rung's) hands back its
    end state in `result.state`, for the next rung's cell to start from."""
    training = Training(cell, data)
    model, max_epochs = training.model, cell.epochs
    result = CellResult(status="ok", n_params=count_parameters(model))
    stopping = EarlyStopping(cell.regularizer.patience)
    first, stop = 1, False
    if start is not None:
        check_start(cell, start)
        training.restore(start, stopping, result)
        first, stop = start.epoch + 1, start.stopped

    def weights() -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    started, before = time.perf_counter(), start.fit_seconds if start is not None else 0.0
    for epoch in range(first, max_epochs + 1):
        if stop:
            break
        fit_loss = training.run_epoch()
        val_loss, val_acc = evaluate(model, data, "val")
        result.curves.append(EpochRecord(epoch, fit_loss, val_loss, val_acc))
        result.epochs_run = epoch
        if not (math.isfinite(fit_loss) and math.isfinite(val_loss)):
            result.status, result.error = "diverged", f"non-finite loss at epoch {epoch}"
            stop = True
        else:
            stop = stopping.update(epoch, val_loss, weights)
            result.best_epoch = stopping.best_epoch
        if on_epoch is not None:
            ended = (cell.cell_id,) if stop or epoch == max_epochs else ()
            on_epoch(EpochProgress(epoch, max_epochs, (cell.cell_id,), ended))
    result.fit_seconds = before + time.perf_counter() - started
    if cell.continues and result.status == "ok":  # a diverged training has nothing to continue
        result.state = training.state(stopping, result, stop).to_bytes()
    if stopping.best_state is not None:
        model.load_state_dict(stopping.best_state)
    model.record = False
    return model, result


def check_start(cell: Cell, start: TrainingState) -> None:
    """ValueError unless `start` can start `cell`: a state of another training, or from beyond the cell's epochs,
    would give another cell's numbers."""
    if start.training_id != cell.training_id:
        raise ValueError(f"a training state of {start.training_id} cannot start cell {cell.cell_id}")
    if start.epoch > cell.epochs:
        raise ValueError(f"a training state after {start.epoch} epochs cannot start a cell of {cell.epochs}")
