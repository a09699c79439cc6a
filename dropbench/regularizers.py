"""The regularizers dropout is weighed against, and how they combine with `+`.

Penalties act on weight matrices only, never on biases, and are added to the gradients directly
(no extra autograd graph): an L2 strength λ adds λ·w, exactly what `torch.optim.SGD(weight_decay=λ)`
adds, i.e. the penalty (λ/2)·Σw². Reported losses never include a penalty: they are the data loss.

The penalties, max-norm, decoupled decay and early stopping are implemented once, here, for both trainers:
`train.py` passes one model's strengths as numbers, `stacked.py` a stack's as per-member tensors.
"""

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from .catalogue import REGULARIZERS
from .errors import UserError


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
    return ", ".join(REGULARIZERS)


def parse_regularizer(spec: str, strengths: Mapping[str, float] | None = None) -> RegularizerSetting:
    """'l1+l2' -> RegularizerSetting; `strengths` overrides the registry defaults by part name."""
    strengths = strengths or {}
    names = [part.strip() for part in spec.split("+")]
    for name in names:
        if name not in REGULARIZERS:
            raise UserError(f"unknown regularizer '{name}' in '{spec}'; known: {known_names()} (combine with +)")
    if len(set(names)) != len(names):
        raise UserError(f"regularizer '{spec}' names a part twice")
    if "none" in names and len(names) > 1:
        raise UserError(f"regularizer '{spec}': 'none' cannot be combined with others")
    order = list(REGULARIZERS)
    ordered = sorted(names, key=order.index)
    parts = tuple((name, strengths.get(name, REGULARIZERS[name].default_strength)) for name in ordered)
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
    if name == "early-stopping" and (value != int(value) or value < 1):
        raise UserError(f"{where}: early-stopping strength is a patience in epochs, an integer ≥ 1; got {value!r}")
    if value <= 0:
        raise UserError(f"{where}: strength must be > 0, got {value!r}")
    if name == "label-smoothing" and value >= 1:
        raise UserError(f"{where}: label-smoothing ε must be in (0, 1), got {value!r}")
    return float(value)


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
