"""Fit one cell: a lean loop over preloaded tensors, then every split measured in eval mode."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn

from .config import Cell, OptimizerConfig
from .data import TaskData
from .devices import autocast
from .errors import UserError
from .models import Network, build_model, count_parameters, init_parameters_
from .regularizers import (
    EarlyStopping,
    add_penalty_gradients_,
    apply_max_norm_,
    apply_weight_decay_,
    decay_factor,
    kl_sparsity_penalty,
)
from .report.stats import expected_calibration_error
from .seeding import derive_seed, make_generator

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


class _Mixup:
    """Convex mixes of example pairs (Zhang et al. 2018): λ ~ Beta(α, α) per batch, from the cell's streams."""

    def __init__(self, alpha: float, cell_id: str) -> None:
        self.alpha = alpha
        self.rng = np.random.default_rng(derive_seed(cell_id, "mixup"))
        self.generator = make_generator(cell_id, "mixup-pairs")

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        lam = float(self.rng.beta(self.alpha, self.alpha))
        partner = torch.randperm(len(x), generator=self.generator).to(x.device)
        return lam * x + (1 - lam) * x[partner], partner, lam


class Training:
    """One cell's model, optimizer and random streams, and its training step.

    Random streams: initialization and batch order from (task, seed), shared by every cell that
    differs only in regularizer or keep rate (common random numbers); masks from the whole cell.
    """

    def __init__(self, cell: Cell, data: TaskData) -> None:
        setting = cell.regularizer
        if setting.label_smoothing and not data.classification:
            raise UserError(f"label-smoothing needs a classification task; '{data.name}' is a regression")
        self.cell, self.data = cell, data
        device = data.x_train.device
        self.order = make_generator(cell.task.name, cell.seed, "order")
        self.model = build_model(
            cell.task.model, data.input_shape, data.n_outputs, cell.layer_keep_rates, cell.input_keep_rate, cell.dropout
        )
        init_parameters_(self.model, make_generator(cell.task.name, cell.seed, "init"))  # CPU: same on every device
        self.model.to(device)
        self.model.set_generator(make_generator(cell.cell_id, "masks", device=device))
        self.model.record = bool(setting.kl_sparsity)
        self.optimizer = make_optimizer(cell.task.optimizer, list(self.model.parameters()))
        # Where the training stands: epochs finished (the schedule's epoch of the next one) and the lr of the
        # last step set (decoupled weight decay scales with it, as AdamW's does).
        self.epoch, self.lr = 0, cell.task.optimizer.lr
        self.mixup = _Mixup(setting.mixup, cell.cell_id) if setting.mixup else None
        self.penalized, self.constrained = self.model.penalized_weights(), self.model.max_norm_weights()

    def step(self, idx: torch.Tensor) -> torch.Tensor:
        """One SGD step on the training rows `idx`; returns the minibatch data loss (on the device, no sync)."""
        cell, data, setting = self.cell, self.data, self.cell.regularizer
        inputs, target = data.inputs(data.x_train[idx]), data.y_train[idx]
        smoothing = setting.label_smoothing
        with autocast(inputs.device.type, cell.precision):
            if self.mixup is not None:
                inputs, partner, lam = self.mixup(inputs)
                out = self.model(inputs)
                loss = lam * data_loss(out, target, data.classification, smoothing=smoothing) + (1 - lam) * data_loss(
                    out, target[partner], data.classification, smoothing=smoothing
                )
            else:
                out = self.model(inputs)
                loss = data_loss(out, target, data.classification, smoothing=smoothing)
        objective = loss
        if setting.kl_sparsity:
            objective = loss + kl_sparsity_penalty(self.model.activations, setting.kl_target, setting.kl_sparsity)
        self.optimizer.zero_grad(set_to_none=True)
        objective.backward()
        add_penalty_gradients_(self.penalized, l1=setting.l1, l2=setting.l2)
        if setting.weight_decay:  # before the step, as AdamW does
            apply_weight_decay_(self.penalized, decay_factor(self.lr, setting.weight_decay))
        self.optimizer.step()
        if setting.max_norm is not None:
            apply_max_norm_(self.constrained, setting.max_norm)
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


def fit_cell(cell: Cell, data: TaskData, on_epoch: OnEpoch | None = None) -> CellResult:
    """Train one cell and measure train/val/test in eval mode (on the best weights under early stopping).
    A cell that diverged is not measured: its figures are NaN (empty in the CSV). `on_epoch` hears of each
    epoch as it ends."""
    if cell.train_size:
        data = subsample_training(data, cell.train_size)
    model, result = train_model(cell, data, on_epoch)
    if result.status == "diverged":
        return result  # a model gone non-finite measures nothing real: every figure stays NaN
    measure_(result, model, data)
    if cell.mc_samples and data.classification:
        device = data.x_test.device
        mc = measure_mc(model, data, cell.mc_samples, make_generator(cell.cell_id, "mc-dropout", device=device))
        result.test_acc_mc, result.test_loss_mc, result.test_ece_mc = mc.acc, mc.loss, mc.ece
    return result


def measure_(result: CellResult, model: nn.Module, data: TaskData) -> None:
    """Fill the final figures: each split whole, in eval mode, so no dropout noise enters a gap."""
    train, val, test = (measure(model, data, which) for which in ("train", "val", "test"))
    result.train_loss, result.train_acc = train.loss, train.acc
    result.val_loss, result.val_acc = val.loss, val.acc
    result.test_loss, result.test_acc, result.test_ece = test.loss, test.acc, test.ece


def train_model(cell: Cell, data: TaskData, on_epoch: OnEpoch | None = None) -> tuple[Network, CellResult]:
    """Train one cell; returns the model (best weights under early stopping) and its curves so far.
    `fit_seconds` is the wall time of the training loop, the per-epoch validation pass included."""
    training = Training(cell, data)
    model, max_epochs = training.model, cell.task.epochs
    result = CellResult(status="ok", n_params=count_parameters(model))
    stopping = EarlyStopping(cell.regularizer.patience)

    def weights() -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    started = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
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
        if stop:
            break
    if stopping.best_state is not None:
        model.load_state_dict(stopping.best_state)
    model.record = False
    result.fit_seconds = time.perf_counter() - started
    return model, result
