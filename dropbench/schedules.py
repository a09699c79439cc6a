"""Learning-rate schedules and the momentum ramp of a suite's optimizer, as pure functions.

The lr of a step is `lr · LrSchedule.factor(epoch, step, steps_per_epoch, total_epochs)` and the momentum of an
epoch `MomentumRamp.momentum(final, epoch)`: functions of where the step stands in the training and of nothing
else (no scheduler object with a hidden counter). A training continued after epoch k therefore sets exactly the
values an uninterrupted one sets, and every trainer (single cell, stack, any executor) sets the same.

Epochs are counted from 0 (the number of epochs finished before this one), steps from 0 within their epoch.

- Decay is per epoch, as the paper's recipe has it (Hinton et al. 2012, appendix A: the lr multiplied by 0.998
  after each epoch): `exponential` lr·γ^e, `step` lr·γ^⌊e/N⌋. `cosine` follows a half cosine from lr down to
  floor·lr over the training's steps (per step, as modern loops do; its horizon is the training's length, the
  one schedule that depends on it).
- Warm-up is per step: over the first W epochs the lr rises linearly, step by step, to lr itself at the last
  step of epoch W − 1 (the first step takes lr/(W·S), S the steps per epoch). Given in epochs, so the
  same suite warms up over the same share of the data whatever the batch size. The decay starts after it:
  epoch W is the decay's epoch 0 (for cosine, its horizon is the epochs after the warm-up).
- The momentum ramp is per epoch (Hinton et al. 2012; Srivastava et al. 2014, appendix A.2): from `start` at
  epoch 0 linearly to the final momentum at epoch T, then the final momentum.

Torch-free, so the suite parser and `--help` stay light.
"""

import math
from dataclasses import dataclass

SCHEDULE_KINDS = ("constant", "exponential", "step", "cosine")
# The keys a schedule table may hold, per kind (`kind` itself in every one).
SCHEDULE_KEYS = {
    "constant": ("kind", "warmup_epochs"),
    "exponential": ("kind", "gamma", "warmup_epochs"),
    "step": ("kind", "gamma", "every", "warmup_epochs"),
    "cosine": ("kind", "floor", "warmup_epochs"),
}
MOMENTUM_RAMP_KEYS = ("start", "epochs")
DEFAULT_RAMP_START = 0.5  # Hinton et al. 2012's (and Srivastava et al. 2014's) starting momentum


def _number_text(value: float) -> str:
    """A number in a label: the shortest text that reads back as the same float (0.998, 1e-05)."""
    return repr(float(value))


@dataclass(frozen=True)
class LrSchedule:
    """How the lr moves over a training: `kind` (SCHEDULE_KINDS) with its parameters, after `warmup_epochs`
    epochs of per-step linear warm-up. The default (constant, no warm-up) is the lr as given, at every step."""

    kind: str = "constant"
    gamma: float = 1.0  # exponential and step: the factor per epoch, or per `every` epochs
    every: int = 1  # step: epochs between two decays
    floor: float = 0.0  # cosine: where the lr ends, as a fraction of lr
    warmup_epochs: int = 0

    @property
    def is_constant(self) -> bool:
        """The default: every step at the lr as given."""
        return self.kind == "constant" and self.warmup_epochs == 0

    @property
    def uses_horizon(self) -> bool:
        """Whether the factor depends on the training's total epochs (cosine): a training of fewer epochs is then
        not the start of a longer one."""
        return self.kind == "cosine"

    def factor(self, epoch: int, step: int, steps_per_epoch: int, total_epochs: int) -> float:
        """The lr's multiplier at `step` (from 0) of `epoch` (from 0) of a training of `total_epochs` epochs of
        `steps_per_epoch` steps each. Exactly 1.0 for the default schedule."""
        warmup = self.warmup_epochs
        if epoch < warmup:
            return (epoch * steps_per_epoch + step + 1) / (warmup * steps_per_epoch)
        decay_epoch = epoch - warmup
        if self.kind == "exponential":
            return self.gamma**decay_epoch
        if self.kind == "step":
            return self.gamma ** (decay_epoch // self.every)
        if self.kind == "cosine":
            steps = (total_epochs - warmup) * steps_per_epoch
            progress = (decay_epoch * steps_per_epoch + step) / steps
            return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    def as_identity(self) -> dict[str, object]:
        """The kind and the parameters it uses, for a cell's identity."""
        params: dict[str, object] = {"kind": self.kind}
        if self.kind in ("exponential", "step"):
            params["gamma"] = self.gamma
        if self.kind == "step":
            params["every"] = self.every
        if self.kind == "cosine":
            params["floor"] = self.floor
        if self.warmup_epochs:
            params["warmup_epochs"] = self.warmup_epochs
        return params

    @property
    def label(self) -> str:
        """'exponential(0.998)', 'step(0.5,10)', 'cosine(0.01)', each with '+warmup(5)' after it where there is
        one; 'warmup(5)' alone for a constant lr after a warm-up; '' for the default."""
        parts = []
        if self.kind == "exponential":
            parts.append(f"exponential({_number_text(self.gamma)})")
        elif self.kind == "step":
            parts.append(f"step({_number_text(self.gamma)},{self.every})")
        elif self.kind == "cosine":
            parts.append(f"cosine({_number_text(self.floor)})")
        if self.warmup_epochs:
            parts.append(f"warmup({self.warmup_epochs})")
        return "+".join(parts)


@dataclass(frozen=True)
class MomentumRamp:
    """SGD's momentum raised linearly from `start` at epoch 0 to the optimizer's momentum at epoch `epochs`."""

    start: float = DEFAULT_RAMP_START
    epochs: int = 1

    def momentum(self, final: float, epoch: int) -> float:
        """The momentum of `epoch` (from 0); `final` itself from epoch `epochs` on."""
        if epoch >= self.epochs:
            return final
        return self.start + (final - self.start) * epoch / self.epochs

    def as_identity(self) -> dict[str, object]:
        return {"start": self.start, "epochs": self.epochs}

    @property
    def label(self) -> str:
        """'momentum-ramp(0.5,10)': from 0.5 over 10 epochs (to the `momentum` column's value)."""
        return f"momentum-ramp({_number_text(self.start)},{self.epochs})"
