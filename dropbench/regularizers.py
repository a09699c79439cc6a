"""The regularizers dropout is weighed against, and how they combine with `+`.

Penalties act on weight matrices only, never on biases, and are added to the gradients directly
(no extra autograd graph): an L2 strength λ adds λ·w, exactly what `torch.optim.SGD(weight_decay=λ)`
adds, i.e. the penalty (λ/2)·Σw². Reported losses never include a penalty: they are the data loss.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from .errors import UserError


@dataclass(frozen=True)
class RegularizerInfo:
    """One registry entry: what its strength means, and its default with the reason for it."""

    name: str
    summary: str
    strength_meaning: str
    default_strength: float | None


REGULARIZERS: dict[str, RegularizerInfo] = {
    info.name: info
    for info in [
        RegularizerInfo("none", "no regularizer besides the keep rate (the baseline at keep rate 1.0)", "", None),
        RegularizerInfo(
            "l1",
            "L1 penalty on weights: λ·Σ|w|, subgradient λ·sign(w)",
            "λ",
            1e-5,  # an order below L2: the L1 subgradient does not shrink with the weight
        ),
        RegularizerInfo(
            "l2",
            "L2 penalty on weights: (λ/2)·Σw², gradient λ·w (= SGD weight_decay λ)",
            "λ",
            1e-4,  # common weight-decay value for MLPs of this size; strong enough to show, weak enough to fit
        ),
        RegularizerInfo(
            "max-norm",
            "after every step, rescale each unit's incoming weight vector to norm ≤ c (hidden layers)",
            "c",
            3.0,  # Srivastava et al. 2014 report c between 3 and 4 working best
        ),
        RegularizerInfo(
            "early-stopping",
            "stop after `patience` epochs without a lower validation loss; restore the best weights",
            "patience (epochs)",
            10,  # long enough to ride out noisy validation losses on small splits
        ),
    ]
}


@dataclass(frozen=True)
class RegularizerSetting:
    """A regularizer or a `+` combination, each part with its strength, in registry order."""

    parts: tuple[tuple[str, float | None], ...]

    @property
    def name(self) -> str:
        return "+".join(part for part, _ in self.parts)

    @property
    def strength_label(self) -> str:
        """The strengths joined like the name ('1e-05+0.0001' for l1+l2); '' for none."""
        return "+".join(format(s, "g") for _, s in self.parts if s is not None)

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


def validate_strength(name: str, value: object, where: str) -> float:
    """A strength from a suite file: a positive number (an integer patience for early-stopping)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UserError(f"{where}: strength must be a number, got {value!r}")
    if name == "early-stopping" and (value != int(value) or value < 1):
        raise UserError(f"{where}: early-stopping strength is a patience in epochs, an integer ≥ 1; got {value!r}")
    if value <= 0:
        raise UserError(f"{where}: strength must be > 0, got {value!r}")
    return float(value)


@torch.no_grad()
def add_penalty_gradients_(weights: Iterable[torch.nn.Parameter], setting: RegularizerSetting) -> None:
    """Add the L1/L2 penalty gradients to each weight's .grad in place (weights only, never biases)."""
    l1, l2 = setting.l1, setting.l2
    if not (l1 or l2):
        return
    for weight in weights:
        if weight.grad is None:
            continue
        if l2:
            weight.grad.add_(weight, alpha=l2)
        if l1:
            weight.grad.add_(weight.sign(), alpha=l1)


@torch.no_grad()
def apply_max_norm_(weights: Iterable[torch.Tensor], max_norm: float) -> None:
    """Rescale each unit's incoming weights (a row of a Linear weight, one filter of a Conv2d) to norm ≤ c."""
    for weight in weights:
        norms = weight.flatten(1).norm(dim=1)
        scale = (max_norm / norms.clamp_min(1e-12)).clamp_max(1.0)
        weight.mul_(scale.view(-1, *([1] * (weight.dim() - 1))))
