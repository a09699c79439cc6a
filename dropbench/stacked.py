"""Train K cells of one task and architecture as one stacked model: per-step overhead paid once for K.

K MLPs of equal widths become stacked tensors (weights [K, in, out]) trained with batched matmuls. Every member
keeps the single-cell semantics of `train.train_model` (its own initialization, batch order, masks, strengths,
early stopping: the penalties and the stopping rule are `regularizers`' own), and at one torch thread a member's
figures are bit for bit those of a stack of one, whatever else the stack holds, because every per-member
operation acts on the member's own rows, widths are padded to ALIGN, the optimizer is `foreach`, and evaluation
chunks are fixed. docs/stacked.md says why each of these is needed; docs/performance.md where stacking pays.
"""

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from .checkpoints import Start, TrainingState
from .config import Cell
from .data import TaskData
from .devices import autocast
from .dropout import (
    drops_units,
    effective_keep_rate,
    kept_from_words,
    lane_bits,
    lane_limits,
    lane_threshold,
    random_words,
    random_words_,
    relu_dropout_,
    relu_dropout_gradient,
    relu_dropout_values_,
    words_for,
)
from .models import MLP, build_model, count_parameters, init_parameters_, model_class
from .regularizers import (
    REGISTRY,
    EarlyStopping,
    Regularizer,
    Weights,
    add_penalty_gradients_,
    apply_max_norm_,
    apply_weight_decay_,
    decay_factor,
    regularizer_class,
    sort_parts,
)
from .seeding import make_generator
from .threads import figures_threads
from .train import (
    CellResult,
    EpochProgress,
    EpochRecord,
    OnEpoch,
    check_start,
    load_optimizer_state,
    make_optimizer,
    measure_,
    resume_tracking,
    set_schedule_,
    subsample_training,
)

# Rows of the split per evaluation chunk, whatever K: a member's figures must not depend on how many other
# members share the chunk. 512 rows x MAX_GROUP (32) members: 16,384 rows at most, as before this rule.
EVAL_ROWS = 512


def stack_key(cell: Cell) -> tuple | None:
    """Cells with equal keys can be trained in one stack; None: this cell must be trained alone.

    Stackable: a model kind that declares it (the built-in plain MLP; not fixed p·n, whose widths depend on the
    keep rate), Bernoulli dropout (any keep rates), no MC dropout, and a regularizer whose every part declares it
    (none, l1, l2, max-norm, weight-decay, early-stopping, and plugins' with `stackable = True`; any strengths).
    A plugin regularizer or model that does not declare it trains alone, in the single-cell trainer, and so does
    a part with state of its own (`Regularizer.keeps_state`: a stack builds one part for all its members). The key
    holds everything the members must share: task, train_size, the model, batch size, epochs (the full training's
    and, for a halving rung, the epochs it stops after) and optimizer (with its lr schedule and momentum ramp: one
    lr and momentum per step for the whole stack). bf16 cells train alone.
    """
    model = cell.task.model
    if model.fixed_pn or cell.dropout != "bernoulli" or cell.mc_samples or not declares_stackable(model.kind):
        return None
    if cell.precision != "fp32":
        # bf16 rounds a batched matmul differently from a single one on some CPUs (validation loss 2e-3 apart
        # after 12 epochs on an AMD EPYC): a cell's figures must not depend on whether it was stacked.
        return None
    kinds = [regularizer_class(name) for name, _ in cell.regularizer.parts]
    if not all(kind.stackable and not kind.keeps_state() for kind in kinds):
        return None
    task = cell.task
    return (task.name, task.data, cell.train_size, model, task.batch_size, task.epochs, cell.epochs, task.optimizer)


def declares_stackable(kind: str) -> bool:
    """Whether a model kind's class itself says the stacked trainer reproduces it: a subclass of MLP that changes its
    forward pass must not inherit MLP's `stackable = True`, so only the class's own declaration counts."""
    return bool(vars(model_class(kind)).get("stackable", False))


def _stored(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A weight between `nn.Linear`'s [out, in] and the stack's [in, out] (its own inverse); biases as they are."""
    return tensor.transpose(-1, -2).contiguous() if name.endswith("weight") else tensor


@dataclass(frozen=True)
class _LaneGroup:
    """The members of a stack that draw masks of one lane width at a site (`dropout.lane_bits`)."""

    members: tuple[int, ...]  # positions in the stack
    bits: int
    limits: torch.Tensor  # [len(members), lanes per byte (1 for 16-bit lanes), 1]: `dropout.lane_limits`


@dataclass(frozen=True)
class _SitePlan:
    """Dropout at one site (the input, or a hidden layer's output) for all members of a stack.

    The groups' masks, then all-ones rows for the members that draw nothing, are concatenated; `order`
    puts the rows back in stack order (None where they already are). One index_select of whole rows:
    index_copy_ into a mask of ones costs ten times as much on CPU.
    """

    groups: tuple[_LaneGroup, ...]
    keep_all: int  # how many members draw nothing here
    order: torch.Tensor | None  # [K] row of the concatenation that each stack member takes
    scales: torch.Tensor  # [K, 1, 1] float32: 1 / p_eff (1.0 for members that draw nothing)

    def bits_of(self, member: int) -> int | None:
        """The lane width member `member` draws here; None where it draws nothing."""
        return next((group.bits for group in self.groups if member in group.members), None)


def _site_plan(rates: Sequence[float], device: torch.device) -> _SitePlan | None:
    """How a site's masks are drawn: members grouped by lane width, so each group is one batched comparison."""
    draws = [drops_units(p) for p in rates]  # as `Dropout` decides: a rate that rounds to 1 draws nothing
    if not any(draws):
        return None
    by_width: dict[int, list[int]] = {}
    for k, (p, d) in enumerate(zip(rates, draws)):
        if d:
            by_width.setdefault(lane_bits(p), []).append(k)
    groups = []
    for bits, members in sorted(by_width.items()):
        thresholds = torch.tensor([lane_threshold(rates[k]) for k in members], device=device).view(-1, 1, 1)
        groups.append(_LaneGroup(tuple(members), bits, lane_limits(bits, thresholds)))
    keep_all = [k for k, d in enumerate(draws) if not d]
    concatenated = [k for group in groups for k in group.members] + keep_all
    order = None
    if concatenated != list(range(len(rates))):
        order = torch.empty(len(rates), dtype=torch.long)
        order[torch.tensor(concatenated)] = torch.arange(len(rates))
        order = order.to(device)
    scales = torch.tensor([1.0 / effective_keep_rate(p) if d else 1.0 for p, d in zip(rates, draws)], device=device)
    return _SitePlan(tuple(groups), len(keep_all), order, scales.view(-1, 1, 1))


@dataclass(frozen=True)
class _LayerInput:
    """What a training pass keeps of one layer for `StackedMLP.backward`: its input (after the ReLU and dropout
    below it), and the dropout's scales [K, 1, 1] (None where no member drops there, or for the first layer)."""

    values: torch.Tensor
    scale: torch.Tensor | None


Masking = tuple[torch.Tensor, torch.Tensor]  # a site's kept units [K, rows, padded width] (uint8) and scales [K, 1, 1]
# How much of a stack's masks (uint8, every site) `step_masks` draws at a time on a CPU: 2 MiB, a few steps of a
# wide stack, a whole epoch of most tabular ones.
MASK_BLOCK_BYTES = 2 << 20


def _segment(drawn: torch.Tensor | None, offset: int, words: int) -> torch.Tensor:
    """A member's words of one site for every step of a block: columns [offset, offset + words) of its draw."""
    assert drawn is not None  # a member with a segment drew words
    return drawn[:, offset : offset + words]


def _kept_in_stack_order(plan: _SitePlan, words: Sequence[torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
    """A site's kept units [K, *shape] (uint8 0/1; shape ends in rows, width) from each lane group's words
    [group members, *shape[:-2], W]: one comparison per group, all-ones rows for the members that draw nothing,
    then the rows in stack order. `site_kept` (one step) and `StackedMLP.step_masks` (a block of steps) share it."""
    count, lead = shape[-2] * shape[-1], len(shape) - 2
    blocks = []
    for group, group_words in zip(plan.groups, words):
        limits = group.limits.view(len(group.members), *[1] * lead, *group.limits.shape[1:])  # the same every step
        kept = kept_from_words(group_words, group.bits, limits, count, dtype=torch.uint8)
        blocks.append(kept.view(len(group.members), *shape))
    if plan.keep_all:
        blocks.append(torch.ones(plan.keep_all, *shape, dtype=torch.uint8, device=words[0].device))
    kept = blocks[0] if len(blocks) == 1 else torch.cat(blocks)
    return kept if plan.order is None else kept.index_select(0, plan.order)


ALIGN = 16  # floats: 64 bytes, the CPU allocator's alignment (and one AVX-512 vector)


def padded(width: int) -> int:
    """`width` rounded up to a multiple of ALIGN (docs/stacked.md says why)."""
    return -(-width // ALIGN) * ALIGN


def _same_scalar(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return bool(torch.equal(a, b))
    return a == b


def _pad_last(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """`tensor` with zeros appended along its last axis up to `width` (itself when it is that wide)."""
    extra = width - tensor.shape[-1]
    return tensor if extra == 0 else F.pad(tensor, (0, extra))


def _padded_param(name: str, tensor: torch.Tensor) -> torch.Tensor:
    """A stored weight [in, out] or bias [out], its widths padded with zeros (see ALIGN)."""
    if name.endswith("weight"):
        rows = tensor.shape[0]
        return _pad_last(F.pad(tensor, (0, 0, 0, padded(rows) - rows)), padded(tensor.shape[1]))
    return _pad_last(tensor, padded(tensor.shape[0]))


class StackedMLP:
    """K MLPs of equal widths as stacked tensors, in `MLP.named_parameters()` order:
    hidden.0.weight, hidden.0.bias, ..., output.weight, output.bias.

    Weights are held as [K, in, out], each member's `nn.Linear` weight transposed, so the forward pass is
    `x @ W` and autograd hands back gradients in the parameters' own layout (with [K, out, in] and
    `W.transpose`, every step paid a copy of every weight gradient, which dominated at large widths).
    Biases are [K, out]. Every width is padded to a multiple of ALIGN; `widths` holds the real ones
    (inputs, each hidden layer, outputs).

    `keeps[k]` holds member k's keep rate per dropout site: the input, then each hidden layer.
    `generators[k]` is member k's mask generator (on the parameters' device).
    """

    def __init__(
        self,
        names: Sequence[str],
        params: Sequence[torch.Tensor],
        keeps: Sequence[tuple[float, ...]],
        generators: Sequence[torch.Generator],
        widths: Sequence[int],
    ) -> None:
        self.names = list(names)
        self.widths = tuple(widths)
        self.params = [p.detach().clone().requires_grad_(True) for p in params]
        self.keeps = [tuple(k) for k in keeps]
        self.generators = list(generators)
        self.size = self.params[0].shape[0]
        device = self.params[0].device
        self._plans = [_site_plan([member[site] for member in self.keeps], device) for site in range(len(self.weights))]

    @classmethod
    def from_members(
        cls, members: Sequence[MLP], keeps: Sequence[tuple[float, ...]], generators: Sequence[torch.Generator]
    ) -> "StackedMLP":
        """Stack the parameters of K MLPs of equal widths (copied: the MLPs are left as they are)."""
        named = [dict(m.named_parameters()) for m in members]
        names = list(named[0])
        params = [
            torch.stack([_padded_param(name, _stored(name, member[name].detach())) for member in named])
            for name in names
        ]
        weights = [named[0][name] for name in names[0::2]]  # nn.Linear's [out, in]
        widths = [weights[0].shape[1], *(w.shape[0] for w in weights)]
        return cls(names, params, keeps, generators, widths)

    @property
    def weights(self) -> list[torch.Tensor]:
        """Every layer's weights [K, in, out], output layer last (the ones l1/l2/weight decay act on)."""
        return self.params[0::2]

    @property
    def biases(self) -> list[torch.Tensor]:
        return self.params[1::2]

    def member_state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Member k's parameters (copies, without the padding) as a state_dict an `MLP` of the same widths loads."""
        return {name: self.member_tensor(name, param, k) for name, param in zip(self.names, self.params)}

    def member_tensor(self, name: str, tensor: torch.Tensor, k: int) -> torch.Tensor:
        """Member k's part of a tensor shaped as the parameter `name` ([K, in, out] padded, or [K, out] padded): the
        parameter itself, or its optimizer state (a momentum buffer). A copy, in the MLP's layout."""
        layer = self.names.index(name) // 2
        n_in, n_out = self.widths[layer], self.widths[layer + 1]
        if name.endswith("weight"):
            return _stored(name, tensor[k, :n_in, :n_out].detach()).clone()
        return tensor[k, :n_out].detach().clone()

    def member_optimizer_state(self, optimizer: torch.optim.Optimizer, k: int) -> dict[str, dict[str, torch.Tensor]]:
        """Member k's optimizer state by parameter name, in the MLP's layout (`train.optimizer_state`'s form): the
        per-element tensors sliced and unpadded, scalars (Adam's step, shared by the stack) copied."""
        state: dict[str, dict[str, torch.Tensor]] = {}
        for name, param in zip(self.names, self.params):
            per_param = optimizer.state.get(param)
            if per_param:
                state[name] = {
                    key: (self.member_tensor(name, v, k) if v.dim() > 0 else v.detach().clone())
                    if isinstance(v, torch.Tensor)
                    else v
                    for key, v in per_param.items()
                }
        return state

    def stacked_optimizer_state(
        self, members: Sequence[dict[str, dict[str, torch.Tensor]]]
    ) -> dict[str, dict[str, torch.Tensor]]:
        """The inverse of member_optimizer_state for all members at once: per-element tensors stacked and padded
        with zeros (a padded unit's gradient is always zero, so a stack trained from scratch has zeros there too);
        scalars must be equal in every member, as they are when all have trained the same epochs."""
        state: dict[str, dict[str, torch.Tensor]] = {}
        for name in self.names:
            if name not in members[0]:
                continue
            state[name] = {}
            for key, first in members[0][name].items():
                values = [member[name][key] for member in members]
                if not isinstance(first, torch.Tensor) or first.dim() == 0:
                    if any(not _same_scalar(v, first) for v in values):
                        raise ValueError(f"members' optimizer states differ in {name}.{key}: they cannot share a stack")
                    state[name][key] = first
                else:
                    state[name][key] = torch.stack([_padded_param(name, _stored(name, v)) for v in values])
        return state

    def subset(self, positions: Sequence[int]) -> "StackedMLP":
        """A stack of the members at `positions` only: new parameter tensors, the same generators."""
        index = torch.tensor(list(positions), dtype=torch.long, device=self.params[0].device)
        params = [p.detach().index_select(0, index) for p in self.params]
        keeps, generators = [self.keeps[i] for i in positions], [self.generators[i] for i in positions]
        return StackedMLP(self.names, params, keeps, generators, self.widths)

    def site_kept(self, site: int, rows: int, width: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The members' kept units [K, rows, width] (uint8 0/1) at one site and their scales [K, 1, 1] (1/p_eff),
        or None where no member drops.

        Member k's units are `dropout.kept_units((rows, width), keep, generator_k)`: the same bits from its own
        generator, the same threshold; members that do not drop here draw nothing and keep all (scale 1).
        """
        plan = self._plans[site]
        if plan is None:
            return None
        device, count = self.params[0].device, rows * width
        words = [
            torch.stack([random_words(count, group.bits, self.generators[k], device) for k in group.members])
            for group in plan.groups
        ]
        return _kept_in_stack_order(plan, words, (rows, width)), plan.scales

    def forward(
        self,
        x: torch.Tensor,
        train: bool,
        shared: bool = False,
        trace: list["_LayerInput"] | None = None,
        masks: Sequence[Masking | None] | None = None,
    ) -> torch.Tensor:
        """Inputs [K, B, ...] (or, `shared`, one batch [B, ...] for every member) -> outputs [K, B, n_out].

        In training, dropout follows the input and each hidden ReLU (fused with it), as in `MLP.forward`; its
        masks are drawn here, or are `masks` (one per site, from `step_masks`). `trace` (a training pass outside
        autograd, for `backward`): each layer's input is appended to it, with the scale of the dropout that made it.
        """
        width = padded(self.widths[0])
        h = _pad_last(x.flatten(1), width).expand(self.size, -1, -1) if shared else _pad_last(x.flatten(2), width)

        def site_masking(site: int) -> Masking | None:
            if not train:
                return None
            return masks[site] if masks is not None else self._padded_site_kept(site, h.shape[1])

        masking = site_masking(0)
        if masking is not None:
            kept, scales = masking
            h = torch.mul(h, kept).mul_(scales)
        last = len(self.weights) - 1
        scale = None  # of the dropout that made h, where it is a hidden layer's output
        for site, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if trace is not None:
                trace.append(_LayerInput(h, scale))
            h = torch.baddbmm(bias.unsqueeze(1), h, weight)
            if site == last:
                break
            masking = site_masking(site + 1)
            scale = None if masking is None else masking[1]
            if masking is None:
                h = torch.relu_(h)
            else:  # the same arithmetic; the autograd Function only where autograd records (its call costs)
                h = (relu_dropout_ if torch.is_grad_enabled() else relu_dropout_values_)(h, *masking)
        return h[..., : self.widths[-1]]

    def backward(self, grad: torch.Tensor, trace: Sequence["_LayerInput"]) -> list[torch.Tensor]:
        """The parameters' gradients (in `params` order) from the loss's gradient at the padded outputs
        [K, B, n_out padded] of a `forward` that filled `trace`.

        The operations are those autograd runs back through `forward` (baddbmm's and the ReLU-dropout's backward
        formulas, a broadcast bias's sum), so the gradients are the same bits; done by hand, a small stack's step
        no longer pays autograd's bookkeeping for every operation, which cost more than its arithmetic."""
        grads: list[torch.Tensor] = [grad] * len(self.params)
        for layer in range(len(trace) - 1, -1, -1):
            h, scale = trace[layer].values, trace[layer].scale
            # The input's gradient first, back through the ReLU and dropout while it is in cache (the inputs need none)
            below = relu_dropout_gradient(grad.bmm(self.weights[layer].transpose(1, 2)), h, scale) if layer else None
            grads[2 * layer] = h.transpose(1, 2).bmm(grad)
            grads[2 * layer + 1] = grad.sum(1, keepdim=True).squeeze(1)
            if below is not None:
                grad = below
        return grads

    def _padded_site_kept(self, site: int, rows: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """site_kept for the site's real units, its mask padded with zeros to the padded width."""
        masking = self.site_kept(site, rows, self.widths[site])
        if masking is None:
            return None
        kept, scales = masking
        return _pad_last(kept, padded(self.widths[site])), scales

    def step_masks(self, step_rows: Sequence[int]) -> Iterator[list[Masking | None]]:
        """Each step's masks, site by site (`_padded_site_kept`'s), for steps of `step_rows` rows in turn.

        On a CPU, the masks of consecutive steps of equal rows are drawn together, as many at a time as fit
        MASK_BLOCK_BYTES: each member's words for those steps in one draw, then one comparison per site and lane
        group for all of them. A CPU generator draws serially, so the words, and the masks, are those that a draw
        per step and site takes, in that order (tests/test_stacked.py); a step's handful of small operations was
        most of a small net's dropout cost. Elsewhere (a CUDA generator's draws depend on how they are split)
        each step draws its own.
        """
        plans = self._plans
        if self.params[0].device.type != "cpu" or not any(plans):
            for rows in step_rows:
                yield [self._padded_site_kept(site, rows) for site in range(len(plans))]
            return
        per_step = self.size * sum(padded(self.widths[site]) for site, plan in enumerate(plans) if plan)
        start = 0
        while start < len(step_rows):
            rows = step_rows[start]
            block = 1
            limit = max(1, MASK_BLOCK_BYTES // (per_step * rows))
            while start + block < len(step_rows) and block < limit and step_rows[start + block] == rows:
                block += 1
            sites = self._block_masks(rows, block)
            for step in range(block):
                yield [None if site is None else (site[0][step], site[1]) for site in sites]
            start += block

    def _block_masks(self, rows: int, steps: int) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """Per site, the kept units of `steps` steps of `rows` rows [steps, K, rows, padded width] and the
        scales [K, 1, 1] (None where no member drops): `step_masks` on a CPU."""
        counts = [rows * width for width in self.widths[: len(self._plans)]]
        # Member k's words for one step: its sites' words in site order (what it draws where it drops).
        segments: list[dict[int, tuple[int, int]]] = []  # per member: site -> (offset, words) in a step's row
        for k in range(self.size):
            offset, mine = 0, {}
            for site, plan in enumerate(self._plans):
                bits = plan.bits_of(k) if plan else None
                if bits is not None:
                    mine[site] = (offset, words_for(counts[site], bits))
                    offset += mine[site][1]
            segments.append(mine)
        drawn = [
            random_words_(torch.empty(steps, sum(w for _, w in mine.values()), dtype=torch.int64), generator)
            if mine
            else None
            for mine, generator in zip(segments, self.generators)
        ]
        masks: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        for site, plan in enumerate(self._plans):
            if plan is None:
                masks.append(None)
                continue
            width = self.widths[site]
            words = [torch.stack([_segment(drawn[k], *segments[k][site]) for k in g.members]) for g in plan.groups]
            kept = _kept_in_stack_order(plan, words, (steps, rows, width))
            masks.append((_pad_last(kept, padded(width)).transpose(0, 1).contiguous(), plan.scales))
        return masks


def member_losses(out: torch.Tensor, target: torch.Tensor, classification: bool) -> torch.Tensor:
    """Each member's mean loss [K] of outputs [K, B, C] against targets [K, B] (as `train.data_loss`)."""
    k, b = target.shape
    if classification:
        losses = F.cross_entropy(out.reshape(k * b, -1), target.reshape(k * b), reduction="none")
        return losses.view(k, b).mean(dim=1)
    return F.mse_loss(out.squeeze(-1), target, reduction="none").mean(dim=1)


def losses_and_gradient(
    out: torch.Tensor, target: torch.Tensor, classification: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """`member_losses` of outputs [K, B, C], and the gradient of their sum at those outputs [K, B, C], without
    building an autograd graph for them.

    Cross-entropy by the operations autograd runs for `member_losses` (log-softmax, the NLL, the mean's
    1/B, then their backward formulas), so the same bits; a regression's MSE through autograd itself."""
    k, b = target.shape
    if not classification:
        leaf = out.detach().requires_grad_()
        losses = member_losses(leaf, target, classification)
        losses.sum().backward()
        assert leaf.grad is not None  # for mypy: backward() has just set it
        return losses.detach(), leaf.grad
    ignore = -100  # F.cross_entropy's ignore_index, which nll_loss's forward and backward take explicitly
    flat_target = target.reshape(k * b)
    log_p = torch.log_softmax(out.reshape(k * b, -1), 1)
    example_losses, total_weight = torch.ops.aten.nll_loss_forward(log_p, flat_target, None, 0, ignore)
    losses = example_losses.view(k, b).mean(dim=1)
    per_example = torch.ones(k, b, dtype=out.dtype, device=out.device).div(b)  # the mean's backward: 1/B each
    grad = torch.ops.aten.nll_loss_backward(per_example.view(k * b), log_p, flat_target, None, 0, ignore, total_weight)
    grad = torch.ops.aten._log_softmax_backward_data(grad, log_p, 1, out.dtype)
    return losses, grad.view(k, b, -1)


@torch.inference_mode()
def _evaluate(stack: StackedMLP, data: TaskData, which: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per member, in eval mode on the whole split: (sum of example losses [K] float64, correct count [K])."""
    x, y = data.split(which)
    rows = EVAL_ROWS
    loss_sum = torch.zeros(stack.size, dtype=torch.float64, device=x.device)
    correct = torch.zeros(stack.size, dtype=torch.float64, device=x.device)
    for start in range(0, len(y), rows):
        out = stack.forward(data.inputs(x[start : start + rows]), train=False, shared=True)
        target = y[start : start + rows].expand(stack.size, -1)
        k, b = target.shape
        if data.classification:
            losses = F.cross_entropy(out.reshape(k * b, -1), target.reshape(k * b), reduction="none").view(k, b)
            predicted = out.softmax(dim=2).max(dim=2).indices
            correct += (predicted == target).sum(dim=1).double()
        else:
            losses = F.mse_loss(out.squeeze(-1), target, reduction="none")
        loss_sum += losses.double().sum(dim=1)
    return loss_sum, correct


@dataclass
class _Members:
    """The per-member strengths of a stack as [K, 1, 1] tensors (`regularizers.Strength`; None where no member
    has the regularizer), rebuilt whenever the stack shrinks."""

    l1: torch.Tensor | None
    l2: torch.Tensor | None
    decay: torch.Tensor | None  # the factor 1 - lr·λ of decoupled weight decay (`regularizers.decay_factor`)
    max_norm: torch.Tensor | None  # c, or inf for members without max-norm
    # Decoupled decay's λ per member and the lr `decay` holds the factors of: a scheduled lr needs new factors.
    weight_decays: tuple[float, ...] = ()
    decay_lr: float = math.nan
    # Plugin regularizers that declare `stackable`: each part once, with its members' strengths [K, 1, 1] (its
    # `neutral` where a member lacks it), in the order their step hooks run, after the built-ins' above.
    plugins: tuple[tuple[Regularizer, torch.Tensor], ...] = ()

    @classmethod
    def of(cls, cells: Sequence[Cell], device: torch.device) -> "_Members":
        settings = [cell.regularizer for cell in cells]
        lr = cells[0].task.optimizer.lr
        l1, l2 = [s.l1 for s in settings], [s.l2 for s in settings]
        decay = [s.weight_decay for s in settings]
        norms = [s.max_norm for s in settings]
        return cls(
            l1=_column(l1, any(l1), device),
            l2=_column(l2, any(l2), device),
            decay=_column([decay_factor(lr, d) for d in decay], any(decay), device),
            max_norm=_column([math.inf if c is None else c for c in norms], any(c is not None for c in norms), device),
            weight_decays=tuple(decay),
            decay_lr=lr,
            plugins=_plugin_parts(cells, device),
        )

    def hooks(self, hook: str) -> list[tuple[Regularizer, torch.Tensor]]:
        """The plugin parts with their own `hook`, with their members' strengths."""
        return [(part, strengths) for part, strengths in self.plugins if type(part).overrides(hook)]

    def decay_at(self, lr: float) -> torch.Tensor | None:
        """The members' decay factors 1 - lr·λ at this lr (the same numbers a single cell's `decay_factor` gives)."""
        if self.decay is not None and lr != self.decay_lr:
            self.decay = _column([decay_factor(lr, d) for d in self.weight_decays], True, self.decay.device)
            self.decay_lr = lr
        return self.decay


def _plugin_parts(cells: Sequence[Cell], device: torch.device) -> tuple[tuple[Regularizer, torch.Tensor], ...]:
    """Each plugin part of the members once (in the single-cell trainer's order: by `order`, then the parts'
    order), built with the first member that has it, and the members' strengths as a column."""
    names = {name for cell in cells for name, _ in cell.regularizer.parts if name not in REGISTRY.builtins}
    parts = []
    for name in sorted(sort_parts(names), key=lambda name: regularizer_class(name).order):
        kind = regularizer_class(name)
        strengths = [cell.regularizer.strength(name) for cell in cells]
        first = next(cell for cell, value in zip(cells, strengths) if name in dict(cell.regularizer.parts))
        values = [kind.neutral if value is None else value for value in strengths]
        parts.append((kind(dict(first.regularizer.parts)[name], first), _column(values, True, device)))
    return tuple((part, column) for part, column in parts if column is not None)


def _column(values: list[float], used: bool, device: torch.device) -> torch.Tensor | None:
    """Per-member values as a [K, 1, 1] float32 tensor; None where no member uses them."""
    return torch.tensor(values, dtype=torch.float32, device=device).view(-1, 1, 1) if used else None


def _train_one_epoch(
    stack: StackedMLP,
    optimizer: torch.optim.Optimizer,
    members: _Members,
    cells: Sequence[Cell],
    data: TaskData,
    orders: Sequence[torch.Generator],
    epoch: int = 0,
) -> torch.Tensor:
    """One epoch of every member (`epoch`: epochs finished before it, for the schedule: one for all members, whose
    stack key holds the optimizer with its schedule); returns the members' summed minibatch data losses [K]
    (float64, on device)."""
    x, y = data.x_train, data.y_train
    task = cells[0].task
    n, batch = len(y), task.batch_size
    steps, scheduled = math.ceil(n / batch), task.optimizer.scheduled
    precision = cells[0].precision
    device = x.device
    # Each member's permutation from its own order generator, drawn on the CPU as the single trainer draws it.
    perms = torch.stack([torch.randperm(n, generator=order) for order in orders]).to(device)
    loss_sum = torch.zeros(stack.size, dtype=torch.float64, device=device)
    weights, hidden_weights = stack.weights, stack.weights[:-1]
    layers = Weights(weights, hidden_weights, unit_dim=-1)  # what plugin parts' step hooks see
    gradient_hooks, before_hooks, after_hooks = (members.hooks(h) for h in ("gradients", "before_step", "after_step"))
    batches = perms.split(batch, dim=1)
    masks = stack.step_masks([idx.shape[1] for idx in batches])
    for step, (idx, step_masks) in enumerate(zip(batches, masks)):
        if scheduled:  # as the single-cell trainer: the lr (and momentum) of this step, the decay at that lr
            members.decay_at(set_schedule_(optimizer, task.optimizer, epoch, step, steps, task.epochs))
        inputs, target = data.inputs(x[idx]), y[idx]
        trace: list[_LayerInput] = []
        with torch.no_grad(), autocast(device.type, precision):
            out = stack.forward(inputs, train=True, trace=trace, masks=step_masks)
        # No autograd graph: the loss's gradient and the network's backward pass are the stack's own.
        losses, out_grad = losses_and_gradient(out, target, data.classification)
        for param, grad in zip(stack.params, stack.backward(_pad_last(out_grad, padded(out.shape[-1])), trace)):
            param.grad = grad
        add_penalty_gradients_(weights, l1=members.l1, l2=members.l2)  # weights only, as the single-cell trainer
        for part, strengths in gradient_hooks:
            part.gradients(layers, strengths)
        if members.decay is not None:  # before the step, as the single-cell trainer (and AdamW)
            apply_weight_decay_(weights, members.decay)
        for part, strengths in before_hooks:
            part.before_step(layers, strengths, optimizer.param_groups[0]["lr"])
        _step_(optimizer)
        if members.max_norm is not None:  # a hidden unit's incoming weights: a column of its member's [in, out]
            apply_max_norm_(hidden_weights, members.max_norm, unit_dim=-1)
        for part, strengths in after_hooks:
            part.after_step(layers, strengths)
        loss_sum += losses.detach().double() * idx.shape[1]
    return loss_sum


def _step_(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.step(); for the stack's SGD (foreach, no dampening, weight decay or maximize: what
    `make_optimizer` builds) the update without the Optimizer's per-call wrapping, which costs more than the
    update itself on a small stack."""
    group = optimizer.param_groups[0]
    if type(optimizer) is torch.optim.SGD and len(optimizer.param_groups) == 1 and _plain_foreach_sgd(group):
        _sgd_step_(optimizer, group)
    else:
        optimizer.step()


def _plain_foreach_sgd(group: dict) -> bool:
    return bool(group["foreach"]) and not (
        group["dampening"] or group["weight_decay"] or group["maximize"] or group["fused"]
    )


@torch.no_grad()
def _sgd_step_(optimizer: torch.optim.SGD, group: dict) -> None:
    """SGD's foreach update, the operations of torch's own in their order (so the same bits), the momentum
    buffers kept in `optimizer.state` as step() keeps them (checkpoints and a shrinking stack read them there)."""
    params = [p for p in group["params"] if p.grad is not None]
    grads = [p.grad for p in params]
    momentum = group["momentum"]
    update = grads
    if momentum != 0:
        states = [optimizer.state[p] for p in params]
        buffers = [state.get("momentum_buffer") for state in states]
        if all(buffer is not None for buffer in buffers):
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, grads, alpha=1.0)
        else:
            for i, (buffer, grad) in enumerate(zip(buffers, grads)):
                buffers[i] = grad.detach().clone() if buffer is None else buffer.mul_(momentum).add_(grad, alpha=1.0)
            for state, buffer in zip(states, buffers):
                state["momentum_buffer"] = buffer
        update = buffers
        if group["nesterov"]:
            torch._foreach_add_(grads, buffers, alpha=momentum)
            update = grads
    torch._foreach_add_(params, update, alpha=-group["lr"])


def _carry_optimizer(
    old: torch.optim.Optimizer,
    new: torch.optim.Optimizer,
    old_params: Sequence[torch.Tensor],
    new_params: Sequence[torch.Tensor],
    index: torch.Tensor,
) -> None:
    """Move the per-element optimizer state of the members at `index` to the smaller stack's optimizer. The lr and
    momentum are not state: a scheduled optimizer has them set again before its next step (`set_schedule_`)."""
    size = old_params[0].shape[0]
    for old_param, new_param in zip(old_params, new_params):
        state = old.state.get(old_param)
        if not state:
            continue
        new.state[new_param] = {
            key: (value.index_select(0, index) if value.dim() > 0 and value.shape[0] == size else value.clone())
            if isinstance(value, torch.Tensor)
            else value
            for key, value in state.items()
        }


def _check_stackable(cells: Sequence[Cell]) -> None:
    if not cells:
        raise ValueError("fit_stacked needs at least one cell")
    keys = {stack_key(cell) for cell in cells}
    if None in keys:
        bad = next(cell for cell in cells if stack_key(cell) is None)
        raise ValueError(f"cell {bad.describe()} cannot be stacked (stack_key is None)")
    if len(keys) > 1:
        raise ValueError(f"cells of {len(keys)} different stack keys cannot be trained in one stack")


def _check_starts(cells: Sequence[Cell], starts: Sequence[TrainingState | None]) -> None:
    """A stack trains its members epoch by epoch in step: all start from scratch, or all from states of their own
    trainings after the same epochs, all stopped or none (what `work_units` groups)."""
    if len(starts) != len(cells):
        raise ValueError(f"{len(starts)} start states for {len(cells)} cells")
    if len({(s.epoch, s.stopped) if s is not None else None for s in starts}) > 1:
        raise ValueError("members of one stack must start from the same epoch")
    for cell, start in zip(cells, starts):
        if start is not None:
            check_start(cell, start)


def _member_state(
    stack: StackedMLP,
    optimizer: torch.optim.Optimizer,
    position: int,
    cell: Cell,
    generators: tuple[torch.Generator, torch.Generator],
    stopping: EarlyStopping,
    result: CellResult,
    stopped: bool,
) -> TrainingState:
    """The training of `cell`, the member at `position`, as it stands (checkpoints.TrainingState, in an MLP's
    layout)."""
    order, masks = generators
    return TrainingState(
        training_id=cell.training_id,
        epoch=result.epochs_run,
        stopped=stopped,
        weights=stack.member_state_dict(position),
        optimizer=stack.member_optimizer_state(optimizer, position),
        order=order.get_state(),
        masks=masks.get_state(),
        best_loss=stopping.best_loss,
        best_epoch=stopping.best_epoch,
        best_weights=stopping.best_state,
        curves=[(p.epoch, p.fit_loss, p.val_loss, p.val_acc) for p in result.curves],
        fit_seconds=result.fit_seconds,
        device=stack.params[0].device.type,
        threads=figures_threads(),
    )


def _resume(
    begin: Sequence[TrainingState | None],
    stack: StackedMLP,
    optimizer: torch.optim.Optimizer,
    stopping: Sequence[EarlyStopping],
    results: Sequence[CellResult],
) -> tuple[int, bool]:
    """Put back what the members' states hold beyond their weights and streams (set as they are built): the
    early-stopping trackers, curves and times, and the optimizer state. (the first epoch to train, whether early
    stopping had ended every member); (1, False) without states."""
    start = begin[0]
    if start is None:
        return 1, False
    for tracker, result, state in zip(stopping, results, begin):
        if state is not None:
            resume_tracking(tracker, result, state)
    states = [state.optimizer for state in begin if state is not None]
    load_optimizer_state(optimizer, stack.names, stack.stacked_optimizer_state(states))
    return start.epoch + 1, start.stopped


def train_stacked(
    cells: Sequence[Cell],
    data: TaskData,
    on_epoch: OnEpoch | None = None,
    starts: Sequence[TrainingState | None] | None = None,
) -> tuple[list[MLP], list[CellResult]]:
    """Train cells of one stack key together; per cell (in order), its MLP holding its final weights (the
    best under early stopping) and its result with curves, as `train.train_model` returns for one cell.
    `on_epoch` hears of each epoch as it ends, for the members that trained in it.

    `starts` (one per cell, or None) continues each member from a state of its own training, as `train_model`
    does; all from the same epoch (`_check_starts`). A member that `continues` hands back its end state in
    `result.state`.

    `fit_seconds` is each cell's share of the training loop's wall time: every epoch's time split evenly
    among the members that trained in it, summed over the cell's epochs. The shares add up to the stack's
    time, and a member that stopped early is charged only for the epochs it trained.
    """
    _check_stackable(cells)
    begin = list(starts) if starts is not None else [None] * len(cells)
    _check_starts(cells, begin)
    device = data.x_train.device
    models: list[MLP] = []
    keeps, mask_generators, orders = [], [], []
    for cell, start in zip(cells, begin):
        model = build_model(
            cell.task.model, data.input_shape, data.n_outputs, cell.layer_keep_rates, cell.input_keep_rate, cell.dropout
        )
        if not isinstance(model, MLP):  # _check_stackable let only plain MLPs through
            raise TypeError(f"cell {cell.describe()} builds a {type(model).__name__}; a stack trains MLPs only")
        init_parameters_(model, make_generator(cell.task.name, cell.seed, "init"))  # on the CPU, as train_model
        models.append(model.to(device))
        keeps.append((cell.input_keep_rate, *cell.layer_keep_rates))
        mask_generators.append(make_generator(cell.seed_key, "masks", device=device))
        orders.append(make_generator(cell.task.name, cell.seed, "order"))
        if start is not None:
            model.load_state_dict(start.weights)
            mask_generators[-1].set_state(start.masks)
            orders[-1].set_state(start.order)
    stack = StackedMLP.from_members(models, keeps, mask_generators)
    results = [CellResult(status="ok", n_params=count_parameters(models[0]), fit_seconds=0.0) for _ in cells]
    stopping = [EarlyStopping(cell.regularizer.patience) for cell in cells]
    optimizer = make_optimizer(cells[0].task.optimizer, stack.params, fused=False)  # not fused: docs/stacked.md
    first, over = _resume(begin, stack, optimizer, stopping, results)
    stopped, last = [over] * len(cells), first - 1 if over else cells[0].epochs  # over: nothing to train
    final_state: list[dict[str, torch.Tensor] | None] = [None] * len(cells)
    end_states: list[TrainingState | None] = [None] * len(cells)
    active = list(range(len(cells)))  # the cells still in the stack, by stack position
    members = _Members.of(cells, device)
    n_train, n_val, max_epochs = len(data.y_train), len(data.y_val), cells[0].epochs

    def finish(position: int) -> None:
        """Member `active[position]` trains no more: keep its final weights, and its state where it continues."""
        i = active[position]
        best = stopping[i].best_state
        final_state[i] = best if best is not None else stack.member_state_dict(position)
        if cells[i].continues and results[i].status == "ok":
            member = (orders[i], mask_generators[i])
            end_states[i] = _member_state(
                stack, optimizer, position, cells[i], member, stopping[i], results[i], stopped[i]
            )

    clock = time.perf_counter()
    for epoch in range(first, last + 1):
        active_cells, active_orders = [cells[i] for i in active], [orders[i] for i in active]
        fit_sum = _train_one_epoch(stack, optimizer, members, active_cells, data, active_orders, epoch - 1)
        val_sum, val_correct = _evaluate(stack, data, "val")
        fit_sums, val_sums, corrects = torch.stack([fit_sum, val_sum, val_correct]).tolist()  # the one host sync
        finished: list[int] = []
        for position, i in enumerate(active):
            result = results[i]
            fit_loss, val_loss = fit_sums[position] / n_train, val_sums[position] / n_val
            val_acc = int(corrects[position]) / n_val if data.classification else math.nan
            result.curves.append(EpochRecord(epoch, fit_loss, val_loss, val_acc))
            result.epochs_run = epoch
            if not (math.isfinite(fit_loss) and math.isfinite(val_loss)):
                result.status, result.error = "diverged", f"non-finite loss at epoch {epoch}"
                finished.append(position)
            else:
                if stopping[i].update(epoch, val_loss, partial(stack.member_state_dict, position)):
                    finished.append(position)
                    stopped[i] = True
                result.best_epoch = stopping[i].best_epoch
        if epoch == max_epochs:
            finished = list(range(len(active)))
        for position in finished:
            finish(position)
        trained = active
        # Finished members are taken out (they can no longer change); the others train on in a smaller stack.
        if finished and len(finished) < len(active):
            positions = [p for p in range(len(active)) if p not in finished]
            index = torch.tensor(positions, dtype=torch.long, device=device)
            smaller = stack.subset(positions)
            new_optimizer = make_optimizer(cells[0].task.optimizer, smaller.params, fused=False)
            _carry_optimizer(optimizer, new_optimizer, stack.params, smaller.params, index)
            stack, optimizer = smaller, new_optimizer
            active = [active[p] for p in positions]
            members = _Members.of([cells[i] for i in active], device)
        now = time.perf_counter()
        for i in trained:  # this epoch's time, shared by the members that trained in it
            results[i].fit_seconds += (now - clock) / len(trained)
        clock = now
        if on_epoch is not None:
            ended = tuple(cells[trained[p]].cell_id for p in finished)
            on_epoch(EpochProgress(epoch, max_epochs, tuple(cells[i].cell_id for i in trained), ended))
        if len(finished) == len(trained):
            break
    for position, i in enumerate(active):  # no epoch was left to train (their states were at the end already)
        if final_state[i] is None:
            finish(position)
    for model, state, end, result in zip(models, final_state, end_states, results):
        if state is not None:
            model.load_state_dict(state)
        if end is not None:  # its share of the epoch it finished in was added after it finished
            end.fit_seconds = result.fit_seconds
            result.state = end.to_bytes()
    return models, results


def fit_stacked(
    cells: Sequence[Cell],
    data: TaskData,
    on_epoch: OnEpoch | None = None,
    starts: Sequence[Start | None] | None = None,
) -> list[CellResult]:
    """Train cells of one `stack_key` as one stacked model; one CellResult per cell, in order, with the
    figures `train.fit_cell` gives (measured per member in eval mode on each whole split, on its best
    weights under early stopping; NaN for a member that diverged). `starts`: where each member's training
    resumes (`train_stacked`).

    `fit_seconds` of each result is the cell's share of the stack's training time (`train_stacked`).
    Raises ValueError when the cells do not share one non-None key.
    """
    _check_stackable(cells)
    if cells[0].train_size:
        data = subsample_training(data, cells[0].train_size)
    states = None if starts is None else [start.state() if start is not None else None for start in starts]
    models, results = train_stacked(cells, data, on_epoch, states)
    for model, result in zip(models, results):
        if result.status != "diverged":  # as fit_cell: a diverged member's figures stay NaN
            measure_(result, model, data)
    return results


# On a CPU, stacking pays while per-step overhead dominates; on wide nets the matmuls already run at the machine's
# limit and a stack was slower than its cells one by one (docs/performance.md has the figures).
MAX_CPU_STACK_WIDTH = 256
MAX_GROUP = 32  # members per stacked model: larger stacks gave no more cells per second on tabular nets


@dataclass(frozen=True)
class WorkUnit:
    """Cells trained together as one stacked model (`stacked`), or a single cell trained alone; `starts`, one per
    cell where any continues from a checkpoint (else empty), says where each one's training resumes."""

    cells: list[Cell]
    stacked: bool
    starts: tuple[Start | None, ...] = ()

    def start(self, position: int) -> Start | None:
        return self.starts[position] if self.starts else None

    def alone(self, position: int) -> "WorkUnit":
        """The cell at `position` as a unit of its own, trained as this unit trains it."""
        return WorkUnit([self.cells[position]], self.stacked, (self.start(position),) if self.starts else ())


def stacks(cell: Cell, device: str = "cpu") -> bool:
    """Whether this cell trains in the stacked trainer when stacking is on. It depends on the cell alone,
    never on which other cells a run holds, so a cell takes the same code path (and gives the same
    numbers) in a full run, a shard or a resume."""
    narrow = device != "cpu" or max(cell.task.model.hidden, default=0) <= MAX_CPU_STACK_WIDTH
    return narrow and stack_key(cell) is not None


def work_units(
    cells: Sequence[Cell],
    *,
    jobs: int,
    stack: bool,
    device: str = "cpu",
    starts: Mapping[str, Start] | None = None,
) -> list[WorkUnit]:
    """The cells as units of work: stackable cells grouped (at most MAX_GROUP each, and at least `jobs`
    groups where there are enough cells, so every worker has work), every other cell on its own. `starts`
    (cell_id -> Start) holds the cells that continue from a checkpoint; a stack's members start from the same
    epoch, so those are grouped by it as well."""
    starts = starts or {}
    groups: dict[tuple, list[Cell]] = {}
    units: list[WorkUnit] = []

    def unit(members: list[Cell], stacked: bool) -> WorkUnit:
        found = tuple(starts.get(cell.cell_id) for cell in members)
        return WorkUnit(members, stacked, found if any(found) else ())

    for cell in cells:
        key = stack_key(cell) if stack and stacks(cell, device) else None
        if key is not None:
            begin = starts.get(cell.cell_id)
            groups.setdefault((key, (begin.epoch, begin.stopped) if begin else None), []).append(cell)
        else:
            units.append(unit([cell], stacked=False))
    for members in groups.values():
        chunks = max(math.ceil(len(members) / MAX_GROUP), min(jobs, len(members)))
        size = math.ceil(len(members) / chunks)
        units += [unit(members[i : i + size], stacked=True) for i in range(0, len(members), size)]
    return units
