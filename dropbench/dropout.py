"""Dropout keyed by keep rate p (Srivastava et al. 2014): y = x * m / p with m ~ Bernoulli(p).

This is the one place where a keep rate meets randomness. PyTorch's `nn.Dropout` takes the *drop*
probability; nothing here calls it, so there is no conversion to get wrong.

Masks come from raw random bits rather than `torch.rand`: one 64-bit draw yields four 16-bit lanes,
and a lane is kept when it falls below `round(p * 65536)`. On this 2-core CPU a p = 0.5 mask for a
256x1024 activation costs ~0.9 ms this way against ~4.3 ms for `F.dropout` (and ~3.6 ms for the
256x1024 @ 1024x1024 matmul beside it). The keep rate is thereby rounded to the nearest 1/65536
(error <= 7.6e-6); the scale uses that *effective* rate, so the expectation is preserved exactly.
"""

import math

import torch
from torch import nn

LANE_BITS = 16
LANES_PER_WORD = 64 // LANE_BITS
LANE_LEVELS = 1 << LANE_BITS
_LANE_MIN = -(1 << (LANE_BITS - 1))


def effective_keep_rate(keep: float) -> float:
    """The keep rate a 16-bit threshold realises: `keep` rounded to a multiple of 1/65536, never 0."""
    return max(1, round(keep * LANE_LEVELS)) / LANE_LEVELS


def random_bits(count: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """`count` uniform int16 values from ceil(count / 4) full-range int64 draws."""
    words = -(-count // LANES_PER_WORD)
    # random_(from=-2**63, to=None) draws all 64 bits; the default random_() leaves the top bit at 0,
    # which would make every fourth lane non-negative and bias the mask.
    draws = torch.empty(words, dtype=torch.int64, device=device).random_(-(2**63), None, generator=generator)
    return draws.view(torch.int16)[:count]


def lane_threshold(keep: float) -> int:
    """The int16 lane value below which a unit is kept: kept with probability effective_keep_rate(keep)."""
    return _LANE_MIN + round(effective_keep_rate(keep) * LANE_LEVELS)


def kept_lanes(
    shape: torch.Size | tuple[int, ...], keep: float, generator: torch.Generator, device: torch.device | str
) -> torch.Tensor:
    """The boolean "kept" mask behind every dropout kind: the same bits give the same units everywhere."""
    return random_bits(math.prod(shape), generator, device).view(shape) < lane_threshold(keep)


def keep_mask(
    shape: torch.Size | tuple[int, ...],
    keep: float,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A mask of 0 and 1/p_eff: each entry independently kept with probability p_eff."""
    return kept_lanes(shape, keep, generator, device).to(dtype).mul_(1.0 / effective_keep_rate(keep))


class Dropout(nn.Module):
    """Inverted Bernoulli dropout with keep rate `keep`; the identity in eval mode and at keep = 1.

    The generator is set by the trainer (`set_generator`) so masks come from the cell's own stream.
    """

    def __init__(self, keep: float) -> None:
        super().__init__()
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep rate must be in (0, 1], got {keep}")
        self.keep = keep
        self.generator: torch.Generator | None = None

    def set_generator(self, generator: torch.Generator) -> None:
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep >= 1.0:
            return x  # draws no random numbers: p = 1 and eval mode are exactly the identity
        if self.generator is None:
            raise RuntimeError("Dropout.set_generator must be called before training")
        return x * keep_mask(x.shape, self.keep, self.generator, dtype=x.dtype, device=x.device)

    def extra_repr(self) -> str:
        return f"keep={self.keep}"


class SpatialDropout(Dropout):
    """Drops whole channels of a [N, C, H, W] map (one mask entry per example and channel), as
    neighbouring pixels of a feature map are too correlated for per-pixel masks to regularize."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep >= 1.0:
            return x
        if self.generator is None:
            raise RuntimeError("Dropout.set_generator must be called before training")
        shape = (x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))
        return x * keep_mask(shape, self.keep, self.generator, dtype=x.dtype, device=x.device)


# --- Other kinds of dropout, all keyed by the keep rate p ---------------------------------------------------------

SELU_SCALE = 1.0507009873554805  # lambda of Klambauer et al. 2017
SELU_ALPHA = 1.6732632423543772  # alpha of Klambauer et al. 2017
SELU_SATURATION = -SELU_SCALE * SELU_ALPHA  # alpha' = -lambda * alpha: SELU's limit as its input goes to -inf


class GaussianDropout(Dropout):
    """Multiplicative Gaussian noise (Srivastava et al. 2014, section 10): y = x * (1 + sigma * eps).

    eps ~ N(0, 1) per example and unit and sigma = sqrt((1 - p) / p), so the noise has mean 1 and the
    variance (1 - p) / p of Bernoulli dropout's m / p. No bits are drawn, so `keep` is used as given
    (not rounded to 1/65536 as the Bernoulli kinds round it).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep >= 1.0:
            return x
        if self.generator is None:
            raise RuntimeError("Dropout.set_generator must be called before training")
        sigma = ((1.0 - self.keep) / self.keep) ** 0.5
        eps = torch.randn(x.shape, generator=self.generator, dtype=x.dtype, device=x.device)
        return x * eps.mul_(sigma).add_(1.0)


def alpha_dropout_affine(keep: float) -> tuple[float, float]:
    """(a, b) of alpha dropout at keep rate `keep`, from the effective keep rate the mask realises.

    With q = 1 - p_eff: a = ((1 - q)(1 + q alpha'^2))^(-1/2) and b = -a alpha' q, which map a unit of
    mean 0 and variance 1, dropped to alpha' with probability q, back to mean 0 and variance 1.
    """
    q = 1.0 - effective_keep_rate(keep)
    a = ((1.0 - q) * (1.0 + q * SELU_SATURATION**2)) ** -0.5
    return a, -a * SELU_SATURATION * q


class AlphaDropout(Dropout):
    """Alpha dropout for SELU networks (Klambauer et al. 2017): keeps mean 0 and variance 1.

    Dropped units are set to alpha' = -lambda * alpha (SELU's saturation value, not 0), then every unit
    goes through a * y + b (`alpha_dropout_affine`). A dropped unit therefore outputs a * alpha' + b.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep >= 1.0:
            return x
        if self.generator is None:
            raise RuntimeError("Dropout.set_generator must be called before training")
        a, b = alpha_dropout_affine(self.keep)
        kept = kept_lanes(x.shape, self.keep, self.generator, x.device)
        return torch.where(kept, x, SELU_SATURATION).mul_(a).add_(b)


class DropConnectLinear(nn.Linear):
    """`nn.Linear` with DropConnect (Wan et al. 2013): each weight kept with probability p, biases never masked.

    In training, y = x @ (W * M / p_eff)^T + b with M ~ Bernoulli(p_eff) per weight. One mask is drawn
    per forward call and shared by all examples of the minibatch: the common practical form. The
    paper's exact form draws a mask per example, which costs a copy of the weight matrix per example.
    Eval mode and keep = 1 are a plain `nn.Linear` and draw no random numbers.

    Not a `Dropout` subclass (it is an `nn.Linear`), so code that hands generators only to `Dropout`
    instances must also call `set_generator` here; training without one raises.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        keep: float,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if not 0.0 < keep <= 1.0:
            raise ValueError(f"keep rate must be in (0, 1], got {keep}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.keep = keep
        self.generator: torch.Generator | None = None

    def set_generator(self, generator: torch.Generator) -> None:
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.keep >= 1.0:
            return nn.functional.linear(x, self.weight, self.bias)
        if self.generator is None:
            raise RuntimeError("DropConnectLinear.set_generator must be called before training")
        weight = self.weight
        mask = keep_mask(weight.shape, self.keep, self.generator, dtype=weight.dtype, device=weight.device)
        return nn.functional.linear(x, weight * mask, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keep={self.keep}"


DROPOUT_KINDS: dict[str, str] = {
    "bernoulli": "inverted Bernoulli dropout: each unit kept with probability p and scaled by 1/p",
    "gaussian": "multiplicative Gaussian noise of mean 1 and variance (1 - p)/p per unit",
    "dropconnect": "DropConnect: each weight of a Linear layer kept with probability p, biases never masked",
    "alpha": "alpha dropout for SELU nets: dropped units set to -lambda*alpha, then affine back to mean 0, var 1",
    "spatial": "spatial dropout: whole channels of a conv feature map kept with probability p",
}

_ACTIVATION_DROPOUTS: dict[str, type[Dropout]] = {
    "bernoulli": Dropout,
    "gaussian": GaussianDropout,
    "alpha": AlphaDropout,
    "spatial": SpatialDropout,
}


def make_dropout(kind: str, keep: float) -> nn.Module:
    """The activation-noise layer of `kind` at keep rate `keep` (every kind of DROPOUT_KINDS but dropconnect)."""
    if kind == "dropconnect":
        raise ValueError(
            "dropconnect is not an activation layer: it replaces the Linear layer (models use DropConnectLinear)"
        )
    if kind not in _ACTIVATION_DROPOUTS:
        raise ValueError(f"unknown dropout kind {kind!r}; known kinds: {', '.join(DROPOUT_KINDS)}")
    return _ACTIVATION_DROPOUTS[kind](keep)
