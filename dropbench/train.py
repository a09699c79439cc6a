"""Fit one cell: a lean loop over preloaded tensors, then every split measured in eval mode."""

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import Cell, OptimizerConfig
from .data import TaskData
from .models import build_model, count_parameters, init_parameters_
from .regularizers import add_penalty_gradients_, apply_max_norm_
from .seeding import make_generator

EVAL_BATCH = 4096  # large batches under inference_mode: evaluation is cheap beside training


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's curve point. `fit_loss` is the mean minibatch data loss in training mode (with
    dropout, without penalties); `val_loss` and `val_acc` are measured in eval mode."""

    epoch: int
    fit_loss: float
    val_loss: float
    val_acc: float


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
    fit_seconds: float = math.nan
    n_params: int = 0
    curves: list[EpochRecord] = field(default_factory=list)


def make_optimizer(config: OptimizerConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if config.name == "adam":
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas, foreach=True)
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, foreach=True)


def data_loss(
    output: torch.Tensor, target: torch.Tensor, classification: bool, reduction: str = "mean"
) -> torch.Tensor:
    """Cross-entropy for classes, MSE (on the standardized target) for regression."""
    if classification:
        return F.cross_entropy(output, target, reduction=reduction)
    return F.mse_loss(output.squeeze(-1), target, reduction=reduction)


@torch.inference_mode()
def evaluate(model: nn.Module, data: TaskData, which: str) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole split in eval mode; accuracy is NaN for regression.

    Per-example losses are summed with math.fsum (exactly rounded), so the figure does not depend on
    how many threads a parallel reduction would have used.
    """
    x, y = data.split(which)
    was_training = model.training
    model.eval()
    losses, correct = [], 0
    for start in range(0, len(y), EVAL_BATCH):
        out, target = model(data.inputs(x[start : start + EVAL_BATCH])), y[start : start + EVAL_BATCH]
        losses.append(data_loss(out, target, data.classification, reduction="none"))
        if data.classification:
            correct += int((out.argmax(dim=1) == target).sum())
    model.train(was_training)
    loss = math.fsum(torch.cat(losses).double().tolist()) / len(y)
    return loss, (correct / len(y) if data.classification else math.nan)


def _train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cell: Cell,
    data: TaskData,
    order: torch.Generator,
) -> float:
    x, y = data.x_train, data.y_train
    n, batch = len(y), cell.task.batch_size
    setting = cell.regularizer
    penalized, constrained = model.penalized_weights(), model.max_norm_weights()
    loss_sum = torch.zeros((), dtype=torch.float64, device=x.device)
    model.train()
    for idx in torch.randperm(n, generator=order, device=x.device).split(batch):
        loss = data_loss(model(data.inputs(x[idx])), y[idx], data.classification)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        add_penalty_gradients_(penalized, setting)
        optimizer.step()
        if setting.max_norm is not None:
            apply_max_norm_(constrained, setting.max_norm)
        loss_sum += loss.detach().double() * len(idx)
    return loss_sum.item() / n  # the epoch's one host sync


def fit_cell(cell: Cell, data: TaskData) -> CellResult:
    """Train one cell and measure train/val/test in eval mode (on the best weights under early stopping)."""
    model, result = train_model(cell, data)
    measure_(result, model, data)
    return result


def measure_(result: CellResult, model: nn.Module, data: TaskData) -> None:
    """Fill the final figures: each split whole, in eval mode, so no dropout noise enters a gap."""
    result.train_loss, result.train_acc = evaluate(model, data, "train")
    result.val_loss, result.val_acc = evaluate(model, data, "val")
    result.test_loss, result.test_acc = evaluate(model, data, "test")


def train_model(cell: Cell, data: TaskData) -> tuple[nn.Module, CellResult]:
    """Train one cell; returns the model (best weights under early stopping) and its curves so far.

    Random streams: initialization and batch order from (task, seed), shared by every cell that
    differs only in regularizer or keep rate (common random numbers); masks from the whole cell.
    """
    init = make_generator(cell.task.name, cell.seed, "init")
    order = make_generator(cell.task.name, cell.seed, "order")
    masks = make_generator(cell.cell_id, "masks")
    model = build_model(cell.task.model, data.input_shape, data.n_outputs, cell.keep_rate, cell.input_keep_rate)
    init_parameters_(model, init)
    model.set_generator(masks)
    optimizer = make_optimizer(cell.task.optimizer, list(model.parameters()))
    patience = cell.regularizer.patience

    result = CellResult(status="ok", n_params=count_parameters(model))
    best_loss, best_state = math.inf, None
    started = time.perf_counter()
    for epoch in range(1, cell.task.epochs + 1):
        fit_loss = _train_one_epoch(model, optimizer, cell, data, order)
        val_loss, val_acc = evaluate(model, data, "val")
        result.curves.append(EpochRecord(epoch, fit_loss, val_loss, val_acc))
        result.epochs_run = epoch
        if not (math.isfinite(fit_loss) and math.isfinite(val_loss)):
            result.status, result.error = "diverged", f"non-finite loss at epoch {epoch}"
            break
        if val_loss < best_loss:
            best_loss, result.best_epoch = val_loss, epoch
            if patience is not None:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif patience is not None and epoch - result.best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    result.fit_seconds = time.perf_counter() - started
    return model, result
