"""Regularizers: dropbench Regularizer subclasses that override the hooks they need."""

import torch

from dropbench.models import Network
from dropbench.regularizers import Regularizer, Strength, Weights


class ActivityL1(Regularizer):
    """λ·Σ_layers mean_batch Σ_units |h|: an L1 penalty on hidden activations, added to the objective (never to
    the reported loss). `needs_activations` makes the model record them; it trains alone (no stack)."""

    summary = "penalty λ·Σ|h| on hidden activations (batch mean)"
    strength_meaning = "λ"
    default_strength = 1e-4
    needs_activations = True

    def penalty(self, model: Network) -> torch.Tensor:
        total = sum((h.abs().sum(dim=1).mean() for h in model.activations), start=torch.zeros(()))
        return (self.strength or 0.0) * total


class WeightClip(Regularizer):
    """Every weight clipped to [−c, c] after each step (biases never). A step hook that works on one model's
    weights (c a float) and on a stack's (c per member, [K, 1, 1]), so it declares `stackable`."""

    summary = "every weight clipped to [−c, c] after each step"
    strength_meaning = "c"
    default_strength = 1.0
    stackable = True
    neutral = float("inf")  # a stack member without weight-clip: clipped to [−inf, inf], i.e. untouched

    @torch.no_grad()
    def after_step(self, weights: Weights, strength: Strength) -> None:
        for weight in weights.all:
            weight.clamp_(-strength, strength)  # a float, or a per-member tensor broadcast over [K, in, out]
