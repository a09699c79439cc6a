"""The regularizers dropout is weighed against, and how they combine with `+`.

Penalties act on weight matrices only, never on biases, and are added to the gradients directly
(no extra autograd graph): an L2 strength λ adds λ·w, exactly what `torch.optim.SGD(weight_decay=λ)`
adds, i.e. the penalty (λ/2)·Σw². Reported losses never include a penalty: they are the data loss.

The penalties, max-norm, decoupled decay and early stopping are implemented once, here, for both trainers:
`train.py` passes one model's strengths as numbers, `stacked.py` a stack's as per-member tensors.

Every regularizer, built-in or a plugin's, is a `Regularizer` subclass in one registry (`REGISTRY`, entry-point
group `dropbench.regularizers`); the single-cell trainer calls their hooks and knows no regularizer by name.
docs/plugins.md has the protocol.
"""

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .catalogue import REGULARIZERS
from .errors import UserError
from .plugins import registry
from .seeding import derive_seed, make_generator

if TYPE_CHECKING:
    from .config import Cell
    from .models import Network


@dataclass(frozen=True)
class RegularizerSetting:
    """A regularizer or a `+` combination, each part with its strength, in registry order."""

    parts: tuple[tuple[str, float | None], ...]
    kl_target: float = 0.05  # ρ of kl-sparsity

    @property
    def name(self) -> str:
        return "+".join(part for part, _ in self.parts)

    @property
    def strength_label(self) -> str:
        """The strengths joined like the name ('1e-05+0.0001' for l1+l2); '' for none. A kl-sparsity
        target other than the default is appended to its strength ('0.001@0.1')."""
        labels = []
        for name, value in self.parts:
            if value is None:
                continue
            label = format(value, "g")
            if name == "kl-sparsity" and self.kl_target != 0.05:
                label += f"@{self.kl_target:g}"
            labels.append(label)
        return "+".join(labels)

    def strength(self, name: str) -> float | None:
        return dict(self.parts).get(name)

    @property
    def l1(self) -> float:
        return self.strength("l1") or 0.0

    @property
    def l2(self) -> float:
        return self.strength("l2") or 0.0

    @property
    def max_norm(self) -> float | None:
        return self.strength("max-norm")

    @property
    def weight_decay(self) -> float:
        return self.strength("weight-decay") or 0.0

    @property
    def kl_sparsity(self) -> float:
        return self.strength("kl-sparsity") or 0.0

    @property
    def label_smoothing(self) -> float:
        return self.strength("label-smoothing") or 0.0

    @property
    def mixup(self) -> float:
        return self.strength("mixup") or 0.0

    @property
    def patience(self) -> int | None:
        value = self.strength("early-stopping")
        return None if value is None else int(value)


def known_names() -> str:
    return ", ".join(REGISTRY.names()) + ", or module:object"


def sort_parts(names: Iterable[str]) -> list[str]:
    """Parts in the order a setting names them: the built-ins in registry order, then plugins' by name (so a
    setting's name, and its cell_id, do not depend on the order it was written in)."""
    builtins = list(REGISTRY.builtins)
    return sorted(names, key=lambda name: (0, builtins.index(name), "") if name in builtins else (1, 0, name))


def parse_regularizer(spec: str, strengths: Mapping[str, float] | None = None) -> RegularizerSetting:
    """'l1+l2' -> RegularizerSetting; `strengths` overrides the registry defaults by part name."""
    strengths = strengths or {}
    names = [part.strip() for part in spec.split("+")]
    for name in names:
        if not REGISTRY.known(name):
            raise UserError(f"unknown regularizer '{name}' in '{spec}'; known: {known_names()} (combine with +)")
    if len(set(names)) != len(names):
        raise UserError(f"regularizer '{spec}' names a part twice")
    if "none" in names and len(names) > 1:
        raise UserError(f"regularizer '{spec}': 'none' cannot be combined with others")
    parts = tuple((name, strengths.get(name, regularizer_class(name).default_strength)) for name in sort_parts(names))
    return RegularizerSetting(parts)


def expand_regularizer(
    spec: str, sweeps: Mapping[str, Sequence[float]], *, kl_target: float = 0.05
) -> list[RegularizerSetting]:
    """One setting per combination of the swept strengths of `spec`'s parts (a part not swept takes
    its single strength or the registry default)."""
    base = parse_regularizer(spec)
    choices: list[Sequence[float | None]] = [sweeps.get(name) or [value] for name, value in base.parts]
    return [
        RegularizerSetting(tuple(zip([name for name, _ in base.parts], combo)), kl_target=kl_target)
        for combo in itertools.product(*choices)
    ]


def validate_strength(name: str, value: object, where: str) -> float:
    """A strength from a suite file: a positive number (an integer patience for early-stopping)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: strength must be a number, got {value!r}")
    if not math.isfinite(value):  # before int(value), which raises on inf and nan
        raise UserError(f"{where}: strength must be a finite number, got {value!r}")
    return regularizer_class(name).check_strength(float(value), where)


# A strength: one number (a single model), or a tensor of per-member values broadcast along a stack's leading
# member axis ([K, 1, 1] for weights [K, in, out]: `stacked.py`), where a member without the regularizer has the
# neutral value (0 for a penalty, inf for max-norm, 1 for a decay factor).
Strength = float | torch.Tensor


@torch.no_grad()
def add_penalty_gradients_(
    weights: Iterable[torch.Tensor], l1: Strength | None = None, l2: Strength | None = None
) -> None:
    """Add the L1/L2 penalty gradients λ₁·sign(w) and λ₂·w to each weight's .grad in place (weights only, never
    biases; a zero or None strength adds nothing). A number adds as `torch.optim.SGD(weight_decay=λ)` does
    (`add_` with alpha); a per-member tensor by `addcmul_`."""
    l1, l2 = _used(l1), _used(l2)
    if l1 is None and l2 is None:
        return
    for weight in weights:
        if weight.grad is None:
            continue
        if l2 is not None:
            _add_scaled_(weight.grad, weight, l2)
        if l1 is not None:
            _add_scaled_(weight.grad, weight.sign(), l1)


def _used(strength: Strength | None) -> Strength | None:
    """None where a strength adds nothing: None or 0 (a tensor always counts: some member has the penalty)."""
    return strength if isinstance(strength, torch.Tensor) or strength else None


def _add_scaled_(target: torch.Tensor, values: torch.Tensor, strength: Strength) -> None:
    if isinstance(strength, torch.Tensor):
        target.addcmul_(values, strength)
    else:
        target.add_(values, alpha=strength)


@torch.no_grad()
def apply_max_norm_(weights: Iterable[torch.Tensor], max_norm: Strength, *, unit_dim: int = 0) -> None:
    """Rescale each unit's incoming weights to norm ≤ c (units already within it are left as they are).

    `unit_dim` says where the units are: 0 for `nn.Linear`'s [out, in] and a Conv2d's [out, in, kh, kw] (a unit's
    weights are a row, a filter); -1 for a stack's [K, in, out] (a unit's weights are a column of its member's
    matrix, `max_norm` a number or per member [K, 1, 1], inf where a member has no max-norm). Either way a
    unit's norm is taken over its weights laid out contiguously, so it rounds the same in both layouts, and
    c / norm is computed as reciprocal(norm) · c."""
    for weight in weights:
        if unit_dim == 0:
            norms = weight.flatten(1).norm(dim=1).view(-1, *([1] * (weight.dim() - 1)))
        elif unit_dim == -1:
            norms = weight.transpose(-1, -2).contiguous().norm(dim=-1).unsqueeze(-2)
        else:
            raise ValueError(f"unit_dim must be 0 or -1, not {unit_dim}")
        scale = norms.clamp_min(1e-12).reciprocal().mul_(max_norm)
        weight.mul_(scale.clamp_max(1.0))


def decay_factor(lr: float, decay: float) -> float:
    """Decoupled weight decay's factor 1 − lr·λ (1.0 without decay)."""
    return 1.0 - lr * decay


@torch.no_grad()
def apply_weight_decay_(weights: Iterable[torch.Tensor], factor: Strength) -> None:
    """Decoupled decay, as torch.optim.AdamW applies it before its update: w ← w·(1 − lr·λ), with `factor`
    from `decay_factor` (a number, or per member)."""
    for weight in weights:
        weight.mul_(factor)


@dataclass
class EarlyStopping:
    """One model's best validation loss so far, its epoch, and under early stopping (a `patience`) when to
    stop and the weights to go back to. A stack keeps one per member.

    Every run records its best epoch; only with a patience are the best weights kept (to be restored at the
    end) and training stopped after `patience` epochs without a lower validation loss."""

    patience: int | None
    best_loss: float = math.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None

    def update(self, epoch: int, val_loss: float, state: Callable[[], dict[str, torch.Tensor]]) -> bool:
        """Record an epoch's (finite) validation loss; True when training should stop after it. `state()`
        returns a copy of the current weights: called only for a new best under early stopping."""
        if val_loss < self.best_loss:
            self.best_loss, self.best_epoch = val_loss, epoch
            if self.patience is not None:
                self.best_state = state()
            return False
        return self.patience is not None and epoch - self.best_epoch >= self.patience


KL_FLOOR = 1e-6  # the least batch mean the sparsity penalty sees: only so that a dead unit gives no inf


def kl_sparsity_penalty(activations: Iterable[torch.Tensor], target: float, beta: float) -> torch.Tensor:
    """β·Σ_layers Σ_j KL(ρ ‖ q_j), the Bernoulli KL of the sparse autoencoder (Ng, "Sparse autoencoder",
    CS294A lecture notes, 2011), with q_j = m_j / (1 + m_j) and m_j the batch mean of ReLU unit j.

    Ng's ρ̂ is a sigmoid unit's mean, in (0, 1); a ReLU unit's m_j is unbounded. Reading m_j as the odds
    q_j/(1 − q_j) maps [0, ∞) onto [0, 1) smoothly, so KL(ρ ‖ q_j) = log(1 + m_j) − ρ·log(m_j) + const, whose
    derivative 1/(1 + m_j) − ρ/m_j vanishes only at the target m_j = ρ/(1 − ρ) (≈ ρ for small ρ) and stays
    about 1/m_j for the most active units. Clamping m_j into (0, 1) instead gave every unit with m_j ≥ 1 (14% of a
    784-512-512 MNIST net's at initialization) no gradient at all. The exponential-family KL ρ/m − log(ρ/m) − 1
    also keeps them, but its derivative (m − ρ)/m² is so steep for nearly silent units that SGD diverged at
    β = 1e-3 on digits and MNIST; this form is as gentle there as Ng's (−ρ/m).
    """
    total = torch.zeros(())
    constant = target * math.log(target) + (1 - target) * math.log(1 - target)
    for h in activations:
        # Floored, a dead unit gives a finite penalty and no gradient. A SELU net's (alpha dropout) units can
        # have a negative mean, outside the divergence's domain: clamped to the floor alike.
        m = h.mean(dim=0).clamp_min(KL_FLOOR)
        total = total + (torch.log1p(m) - target * torch.log(m) + constant).sum()
    return beta * total


# ---------------------------------------------------------------- the registry and its protocol

# A batch's data loss from (output, target): cross-entropy or MSE, as the hooks below have wrapped it.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Weights:
    """The weight tensors a step hook may change. `all`: every layer's weights, the output layer's last (never a
    bias); `hidden`: the incoming weights of hidden units (every layer's but the output's). `unit_dim`: the axis of
    a layer's units: 0 in a model (`nn.Linear`'s [out, in], a conv's [out, in, kh, kw]), -1 in a stack ([K, in,
    out] per layer, K members)."""

    all: list[torch.Tensor]
    hidden: list[torch.Tensor]
    unit_dim: int = 0


class Regularizer:
    """A part of a regularizer setting (`l2`, `max-norm`, a plugin's), built once per cell with its strength.

    A subclass overrides the hooks it needs; a training step calls them in this order (each phase's hooks in the
    order of `order`, then of the setting's parts):

    1. `loss_fn(loss)`: once, at the start: the batch loss the others see (label smoothing);
    2. `batch(inputs, loss)`: per step, before the forward pass: new inputs and loss (mixup);
    3. `penalty(model)`: a term added to the objective before backward (kl-sparsity; `needs_activations` makes the
       model keep each hidden layer's activations in `model.activations`);
    4. `gradients(weights, strength)`: after backward, on the weights' .grad (l1, l2);
    5. `before_step(weights, strength, lr)`: just before the optimizer's step (decoupled weight decay);
    6. `after_step(weights, strength)`: just after it (max-norm).

    Step hooks (4-6) take the strength as an argument: a float for one model, or, in a stack that a `stackable`
    regularizer may join, a [K, 1, 1] tensor of the members' strengths (`neutral` where a member has no such
    part), with the stack's weights (`Weights.unit_dim` -1). The reported losses are the batch loss of 1-2,
    never a penalty. Random draws come from generators derived from the cell's training (`self.cell.seed_key`, the
    hash in its training_id).

    A part that carries anything from one step to the next (its random streams' positions, a running average)
    overrides `state()` and `restore(state)`: a successive-halving rung's checkpoint (dropbench.checkpoints) keeps
    what `state()` returns after the rung's last epoch, and the next rung's training hands it to `restore` before its
    first step, so that it goes on as it would have without the pause. Only the single-cell trainer builds one part
    per cell: a part with state trains alone, never in a stack.
    """

    summary: ClassVar[str] = ""
    strength_meaning: ClassVar[str] = "λ"
    default_strength: ClassVar[float | None] = None  # None: the regularizer takes no strength
    stackable: ClassVar[bool] = False  # whether the stacked trainer may train it (step hooks only)
    neutral: ClassVar[float] = 0.0  # the strength of a stack member without this part (stackable only)
    needs_activations: ClassVar[bool] = False
    classification_only: ClassVar[bool] = False
    order: ClassVar[int] = 0  # within a phase, lower first; the built-in l2 adds its gradient before l1's

    def __init__(self, strength: float | None, cell: "Cell") -> None:
        self.strength = strength
        self.cell = cell

    @classmethod
    def check_strength(cls, value: float, where: str) -> float:
        """A strength from a suite or a flag, already a finite number: refuse what this regularizer cannot take."""
        if value <= 0:
            raise UserError(f"{where}: strength must be > 0, got {value!r}")
        return value

    def loss_fn(self, loss: LossFn) -> LossFn:
        return loss

    def batch(self, inputs: torch.Tensor, loss: LossFn) -> tuple[torch.Tensor, LossFn]:
        return inputs, loss

    def penalty(self, model: "Network") -> torch.Tensor | None:
        return None

    def gradients(self, weights: Weights, strength: Strength) -> None:
        pass

    def before_step(self, weights: Weights, strength: Strength, lr: float) -> None:
        pass

    def after_step(self, weights: Weights, strength: Strength) -> None:
        pass

    def state(self) -> dict[str, object]:
        """What this part carries from one epoch to the next, as tensors and plain values (str, int, float, bool,
        None, and lists and dicts of them: a checkpoint is read back with `torch.load(weights_only=True)`)."""
        return {}

    def restore(self, state: dict[str, object]) -> None:
        """Take back what `state()` returned (in another process, maybe on another day): the part then draws and
        acts exactly as the one that returned it would have gone on to."""

    @classmethod
    def keeps_state(cls) -> bool:
        """Whether this part has training state of its own (`state`, `restore`): a checkpoint keeps it, and its
        cells train alone, never in a stack."""
        return cls.overrides("state")

    @classmethod
    def overrides(cls, hook: str) -> bool:
        """Whether this class has its own `hook` (the trainers call only those)."""
        return getattr(cls, hook) is not getattr(Regularizer, hook)


STEP_HOOKS = ("gradients", "before_step", "after_step")
BATCH_HOOKS = ("loss_fn", "batch", "penalty")


def _check_regularizer(value: object, name: str) -> type[Regularizer]:
    """What a plugin registers: a Regularizer subclass; a stackable one with step hooks only."""
    if not (isinstance(value, type) and issubclass(value, Regularizer)):
        raise UserError(f"a regularizer is a subclass of dropbench.regularizers.Regularizer, got {value!r}")
    if value.overrides("state") != value.overrides("restore"):
        raise UserError(
            f"{value.__name__} overrides only one of state and restore: a checkpoint needs both (docs/plugins.md)"
        )
    if value.stackable:
        batch_hooks = [hook for hook in BATCH_HOOKS if value.overrides(hook)]
        if batch_hooks or value.needs_activations or value.order < 0:
            raise UserError(
                f"{value.__name__} declares stackable = True but has {', '.join(batch_hooks) or 'needs_activations'}"
                f"{' or order < 0' if value.order < 0 else ''}: a stack calls only the step hooks "
                f"({', '.join(STEP_HOOKS)}), after the built-ins'"
            )
    return value


REGISTRY = registry("dropbench.regularizers", "regularizer", _check_regularizer)


def regularizer_class(name: str) -> type[Regularizer]:
    """The class registered as `name`: a built-in, a plugin's entry point, or a module:object reference."""
    found = REGISTRY.get(name)
    if found is None:
        raise REGISTRY.unknown(name)
    return found


def _builtin(name: str) -> Callable[[type[Regularizer]], type[Regularizer]]:
    """Register a built-in under `name`, its description and default from the catalogue (`--help` reads them
    there without importing torch)."""

    def register(cls: type[Regularizer]) -> type[Regularizer]:
        info = REGULARIZERS[name]
        cls.summary, cls.strength_meaning, cls.default_strength = (
            info.summary,
            info.strength_meaning,
            info.default_strength,
        )
        return REGISTRY.register(name, cls)

    return register


@_builtin("none")
class NoRegularizer(Regularizer):
    stackable = True


@_builtin("l1")
class L1(Regularizer):
    stackable = True

    def gradients(self, weights: Weights, strength: Strength) -> None:
        add_penalty_gradients_(weights.all, l1=strength)


@_builtin("l2")
class L2(Regularizer):
    stackable = True
    order = -1  # its gradient is added before l1's, as they were when one call added both (the same bits)

    def gradients(self, weights: Weights, strength: Strength) -> None:
        add_penalty_gradients_(weights.all, l2=strength)


@_builtin("max-norm")
class MaxNorm(Regularizer):
    stackable = True
    neutral = math.inf

    def after_step(self, weights: Weights, strength: Strength) -> None:
        apply_max_norm_(weights.hidden, strength, unit_dim=weights.unit_dim)


@_builtin("weight-decay")
class WeightDecay(Regularizer):
    stackable = True

    def before_step(self, weights: Weights, strength: Strength, lr: float) -> None:  # as AdamW, before the step
        factor = 1.0 - lr * strength if isinstance(strength, torch.Tensor) else decay_factor(lr, strength)
        apply_weight_decay_(weights.all, factor)


@_builtin("kl-sparsity")
class KLSparsity(Regularizer):
    needs_activations = True

    def penalty(self, model: "Network") -> torch.Tensor:
        return kl_sparsity_penalty(model.activations, self.cell.regularizer.kl_target, self.strength or 0.0)


@_builtin("label-smoothing")
class LabelSmoothing(Regularizer):
    classification_only = True

    @classmethod
    def check_strength(cls, value: float, where: str) -> float:
        value = super().check_strength(value, where)
        if value >= 1:
            raise UserError(f"{where}: label-smoothing ε must be in (0, 1), got {value!r}")
        return value

    def loss_fn(self, loss: LossFn) -> LossFn:
        smoothing = self.strength or 0.0
        return lambda output, target: F.cross_entropy(output, target, label_smoothing=smoothing)


@_builtin("mixup")
class Mixup(Regularizer):
    """Convex mixes of example pairs (Zhang et al. 2018): λ ~ Beta(α, α) per batch, from the cell's streams."""

    def __init__(self, strength: float | None, cell: "Cell") -> None:
        super().__init__(strength, cell)
        self.rng = np.random.default_rng(derive_seed(cell.seed_key, "mixup"))
        self.generator = make_generator(cell.seed_key, "mixup-pairs")

    def batch(self, inputs: torch.Tensor, loss: LossFn) -> tuple[torch.Tensor, LossFn]:
        alpha = self.strength or 0.0
        lam = float(self.rng.beta(alpha, alpha))
        partner = torch.randperm(len(inputs), generator=self.generator).to(inputs.device)

        def mixed(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return lam * loss(output, target) + (1 - lam) * loss(output, target[partner])

        return lam * inputs + (1 - lam) * inputs[partner], mixed

    def state(self) -> dict[str, object]:
        """Both streams' positions: the Beta draws' numpy bit generator and the pairs' torch generator."""
        return {"bits": self.rng.bit_generator.state, "pairs": self.generator.get_state()}

    def restore(self, state: dict[str, object]) -> None:
        bits, pairs = state.get("bits"), state.get("pairs")
        if not isinstance(bits, dict) or not isinstance(pairs, torch.Tensor):
            raise ValueError("a mixup state without its generators' states")
        self.rng.bit_generator.state = bits
        self.generator.set_state(pairs)


@_builtin("early-stopping")
class EarlyStoppingRule(Regularizer):
    """Patience in epochs: both trainers stop, and restore weights, through `EarlyStopping` (`setting.patience`)."""

    stackable = True

    @classmethod
    def check_strength(cls, value: float, where: str) -> float:
        if value != int(value) or value < 1:
            raise UserError(f"{where}: early-stopping strength is a patience in epochs, an integer ≥ 1; got {value!r}")
        return value
