"""Dropout keyed by keep rate p (Srivastava et al. 2014): y = x * m / p with m ~ Bernoulli(p).

This is the one place where a keep rate meets randomness. PyTorch's `nn.Dropout` takes the *drop*
probability; nothing here calls it, so there is no conversion to get wrong.

Masks come from raw random bits rather than `torch.rand` or `bernoulli_`: full-range int64 draws are
cut into lanes, and a unit is kept when its lane falls below a threshold. The keep rate is rounded to
the nearest 1/65536 (error <= 7.6e-6) and the scale uses that *effective* rate, so the expectation is
preserved exactly. A rate within 2^-17 of 1 rounds to 1 and is no dropout at all: nothing is drawn.
Rates below 1/65536 are refused (`keeprates.keep_rate_problem`). A lane is as narrow as that rate
allows: p = 0.5 needs 1 bit per unit, 0.25 and 0.75 need 2, 0.8 needs all 16. The distribution is the
same either way; only the number of draws changes. Masks are uint8, written straight by the comparison
(a bool mask cast afterwards costs more than the comparison). Drawn this way a mask costs a fraction of
`F.dropout`'s, which costs more than the matmul beside it (docs/performance.md). After a ReLU, dropout is
fused with it (`relu_dropout_`).
"""

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from .catalogue import DROPOUT_KINDS
from .keeprates import LANE_BITS, LANE_LEVELS, keep_rate_problem

if TYPE_CHECKING:
    from torch.autograd.function import BackwardCFunction

    class _ReluDropoutCtx(BackwardCFunction):
        """The ctx torch hands _ReluDropout (a BackwardCFunction at run time), with the scale forward stores."""

        scale: float | torch.Tensor


LANE_WIDTHS = (1, 2, 4, 8, 16)  # lane widths that tile a byte (or, at 16, an int16)
WORD_BITS = 64
_LANE_MIN = -(1 << (LANE_BITS - 1))


def effective_keep_rate(keep: float) -> float:
    """The keep rate a 16-bit threshold realises: `keep` rounded to a multiple of 1/65536, never 0."""
    return max(1, round(keep * LANE_LEVELS)) / LANE_LEVELS


def _keep_levels(keep: float) -> int:
    """effective_keep_rate(keep) * 65536, an integer in [1, 65536]."""
    return round(effective_keep_rate(keep) * LANE_LEVELS)


def drops_units(keep: float) -> bool:
    """Whether a mask at this keep rate needs random bits: not where the rate rounds to 1 (all units kept)."""
    return _keep_levels(keep) < LANE_LEVELS


def _lane_levels(keep: float) -> int:
    """_keep_levels(keep), refused at 65536 (a rate that rounds to 1): its threshold, 2**bits, does not fit the
    uint8 or int16 the lanes are compared as, and wrapped round to keep 7 units in 8."""
    levels = _keep_levels(keep)
    if levels == LANE_LEVELS:
        raise ValueError(f"keep rate {keep:g} rounds to 1: it keeps every unit and draws no lanes")
    return levels


def lane_bits(keep: float) -> int:
    """The fewest bits per unit (of LANE_WIDTHS) whose lanes realise effective_keep_rate(keep) exactly:
    the 16-bit level count with its trailing zero bits dropped. 1 at p = 0.5, 2 at 0.25 and 0.75."""
    levels = _lane_levels(keep)
    trailing_zeros = (levels & -levels).bit_length() - 1
    needed = LANE_BITS - trailing_zeros
    return next(bits for bits in LANE_WIDTHS if bits >= needed)


def lane_threshold(keep: float) -> int:
    """The lane value below which a unit is kept, for lanes of lane_bits(keep) bits: unsigned values in
    [0, 2**bits) for narrow lanes, int16 values for 16-bit lanes. P(lane < threshold) = effective rate."""
    bits = lane_bits(keep)
    levels = _lane_levels(keep) >> (LANE_BITS - bits)
    return _LANE_MIN + levels if bits == LANE_BITS else levels


def random_words(count: int, bits: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """Full-range int64 draws enough for `count` lanes of `bits` bits."""
    return random_words_(torch.empty(words_for(count, bits), dtype=torch.int64, device=device), generator)


def words_for(count: int, bits: int) -> int:
    """How many 64-bit words `count` lanes of `bits` bits take."""
    return -(-count * bits // WORD_BITS)


def random_words_(words: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """`words` (int64) filled with full-range draws, in memory order."""
    # random_(from=-2**63, to=None) draws all 64 bits; the default random_() leaves the top bit at 0,
    # which would make the top lane of every word non-uniform and bias the mask.
    return words.random_(-(2**63), None, generator=generator)


_FIELD_CACHE: dict[tuple[int, str], torch.Tensor] = {}
_LIMIT_CACHE: dict[tuple[float, str], torch.Tensor] = {}


def lane_fields(bits: int, device: torch.device | str) -> torch.Tensor:
    """The byte masks [lanes per byte, 1] (uint8) that isolate each lane of a byte, lowest lane first."""
    key = (bits, str(device))
    if key not in _FIELD_CACHE:
        field = (1 << bits) - 1
        _FIELD_CACHE[key] = torch.tensor(
            [field << shift for shift in range(0, 8, bits)], dtype=torch.uint8, device=device
        ).unsqueeze(1)
    return _FIELD_CACHE[key]


def lane_limits(bits: int, thresholds: torch.Tensor) -> torch.Tensor:
    """Per-lane limits to compare the words' lanes against, from thresholds of shape [..., 1, 1].

    A narrow lane is compared where it sits in its byte, (byte & field) < threshold << shift, which is
    lane < threshold without shifting every byte: [..., lanes per byte, 1] uint8. 16-bit lanes compare
    as int16 against the threshold itself.
    """
    if bits == LANE_BITS:
        return thresholds.to(torch.int16)
    shifts = torch.arange(0, 8, bits, device=thresholds.device).view(-1, 1)
    return (thresholds << shifts).to(torch.uint8)


def kept_from_words(
    words: torch.Tensor, bits: int, limits: torch.Tensor, count: int, *, dtype: torch.dtype
) -> torch.Tensor:
    """1 where a unit is kept, 0 where dropped: [..., count] from draws [..., W], as `dtype`.

    Lanes are laid out lane-major within each row of words: unit i is lane i // B of byte i % B (B bytes
    per row). Broadcasting the lane axis outside the bytes keeps every elementwise pass contiguous;
    broadcasting it innermost is ten times slower on CPU.
    """
    if bits == LANE_BITS:
        lanes = words.view(torch.int16).unsqueeze(-2)  # [..., 1, 4W]
    else:
        octets = words.view(torch.uint8).unsqueeze(-2)  # [..., 1, 8W]
        lanes = octets if bits == 8 else octets & lane_fields(bits, words.device)
    # [..., lanes per byte, bytes]; torch.broadcast_shapes would cost as much as the comparison.
    shape = (*words.shape[:-1], limits.shape[-2], lanes.shape[-1])
    out = torch.empty(shape, dtype=dtype, device=words.device)
    torch.lt(lanes, limits, out=out)  # written in `dtype` directly: a bool mask cast to float costs more
    return out.flatten(-2)[..., :count]


def _single_limits(keep: float, device: torch.device | str) -> torch.Tensor:
    """lane_limits for one keep rate, made once per rate and device: building them costs as much as a mask."""
    key = (keep, str(device))
    if key not in _LIMIT_CACHE:
        threshold = torch.tensor(lane_threshold(keep), device=device).view(1, 1)
        _LIMIT_CACHE[key] = lane_limits(lane_bits(keep), threshold)
    return _LIMIT_CACHE[key]


def kept_units(
    shape: torch.Size | tuple[int, ...],
    keep: float,
    generator: torch.Generator,
    device: torch.device | str,
    dtype: torch.dtype = torch.uint8,
) -> torch.Tensor:
    """1 where a unit is kept, 0 where dropped: the bits behind every dropout kind, so the same bits give the
    same units everywhere. uint8 by default: a quarter of a float mask's memory traffic. All ones, and no
    draw, where the rate rounds to 1."""
    if not drops_units(keep):
        return torch.ones(shape, dtype=dtype, device=device)
    count, bits = math.prod(shape), lane_bits(keep)
    words = random_words(count, bits, generator, device)
    limits = _single_limits(keep, device)
    return kept_from_words(words, bits, limits, count, dtype=dtype).view(shape)


def keep_mask(
    shape: torch.Size | tuple[int, ...],
    keep: float,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """A mask of 0 and 1/p_eff: each entry independently kept with probability p_eff."""
    return kept_units(shape, keep, generator, device, dtype).mul_(1.0 / effective_keep_rate(keep))


class _ReluDropout(torch.autograd.Function):
    """relu(z) * kept * scale, in place on z, with a backward that needs only the output y.

    Where y > 0 the unit was kept and z > 0, so dy/dz = scale; elsewhere it is 0. The gradient is thus
    threshold_backward(grad, y, 0) * scale: no mask is kept for the backward pass, and y is the tensor
    the next layer's matmul saves anyway. In place because a matmul's output is not needed by its own
    backward, and rewriting it while it is still in cache costs about half as much as writing fresh memory.
    """

    @staticmethod
    def forward(
        ctx: "_ReluDropoutCtx", z: torch.Tensor, kept: torch.Tensor, scale: float | torch.Tensor
    ) -> torch.Tensor:
        ctx.mark_dirty(z)
        y = relu_dropout_values_(z, kept, scale)
        ctx.save_for_backward(y)
        ctx.scale = scale
        return y

    @staticmethod
    def backward(ctx: "_ReluDropoutCtx", grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (y,) = ctx.saved_tensors
        return relu_dropout_gradient(grad, y, ctx.scale), None, None


def relu_dropout_values_(z: torch.Tensor, kept: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """relu(z) * kept * scale in z's own memory, outside autograd: the arithmetic of `relu_dropout_` (and of the
    stacked trainer's own backward pass, which must round as it does)."""
    return z.relu_().mul_(kept).mul_(scale)


def relu_dropout_gradient(grad: torch.Tensor, y: torch.Tensor, scale: float | torch.Tensor | None) -> torch.Tensor:
    """The gradient at z of y = relu(z) * kept * scale, from y alone (see `_ReluDropout`); `scale` None: a plain
    ReLU's, as autograd computes it for `relu_`."""
    below = torch.ops.aten.threshold_backward(grad, y, 0)
    return below if scale is None else below.mul_(scale)


def relu_dropout_(z: torch.Tensor, kept: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """relu(z) * kept * scale computed in z's own memory (z must be a fresh result nothing else reads).

    `kept` is 0/1 (uint8) broadcastable to z; `scale` a float or a tensor broadcastable to z (1/p_eff).
    """
    return _ReluDropout.apply(z, kept, scale)


class ActivationNoise(nn.Module):
    """Noise on a layer's units at keep rate `keep`; the identity in eval mode and at keep = 1 (for the masked
    kinds also at rates that round to 1), where it draws no random numbers. The generator is set by the
    trainer (`set_generator`) so the noise comes from the cell's own stream."""

    def __init__(self, keep: float) -> None:
        super().__init__()
        if problem := keep_rate_problem(keep):
            raise ValueError(problem)
        self.keep = keep
        self.generator: torch.Generator | None = None

    def set_generator(self, generator: torch.Generator) -> None:
        self.generator = generator

    @property
    def active(self) -> bool:
        """Training with a keep rate that drops something; a rate that rounds to 1 is no dropout."""
        return self.training and drops_units(self.keep)

    def relu_then_drop_(self, z: torch.Tensor) -> torch.Tensor:
        """ReLU then this noise; z is a layer's fresh output, which the ReLU may overwrite."""
        return self(torch.relu_(z))

    def _generator(self) -> torch.Generator:
        if self.generator is None:
            raise RuntimeError(f"{type(self).__name__}.set_generator must be called before training")
        return self.generator

    def extra_repr(self) -> str:
        return f"keep={self.keep}"


class Dropout(ActivationNoise):
    """Inverted Bernoulli dropout with keep rate `keep`: y = x * m / p_eff, m ~ Bernoulli(p_eff) per unit."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        kept = kept_units(x.shape, self.keep, self._generator(), x.device)
        return torch.mul(x, kept).mul_(self.scale)

    def relu_then_drop_(self, z: torch.Tensor) -> torch.Tensor:
        """ReLU then dropout, fused and in place on z: see `relu_dropout_`."""
        if not self.active:
            return torch.relu_(z)
        return relu_dropout_(z, kept_units(z.shape, self.keep, self._generator(), z.device), self.scale)

    @property
    def scale(self) -> float:
        """1 / p_eff: the factor that keeps the expectation (p_eff is the rate the lanes realise)."""
        return 1.0 / effective_keep_rate(self.keep)


class SpatialDropout(ActivationNoise):
    """Drops whole channels of a [N, C, H, W] map (one mask entry per example and channel), as
    neighbouring pixels of a feature map are too correlated for per-pixel masks to regularize."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        shape = (x.shape[0], x.shape[1], *([1] * (x.dim() - 2)))
        return x * keep_mask(shape, self.keep, self._generator(), dtype=x.dtype, device=x.device)


# --- Other kinds of dropout, all keyed by the keep rate p ---------------------------------------------------------

SELU_SCALE = 1.0507009873554805  # lambda of Klambauer et al. 2017
SELU_ALPHA = 1.6732632423543772  # alpha of Klambauer et al. 2017
SELU_SATURATION = -SELU_SCALE * SELU_ALPHA  # alpha' = -lambda * alpha: SELU's limit as its input goes to -inf


class GaussianDropout(ActivationNoise):
    """Multiplicative Gaussian noise (Srivastava et al. 2014, section 10): y = x * (1 + sigma * eps).

    eps ~ N(0, 1) per example and unit and sigma = sqrt((1 - p) / p), so the noise has mean 1 and the
    variance (1 - p) / p of Bernoulli dropout's m / p. No bits are drawn, so `keep` is used as given
    (not rounded to 1/65536 as the Bernoulli kinds round it).
    """

    @property
    def active(self) -> bool:
        """At every keep rate below 1: the noise is not rounded to lanes, so nothing rounds to 1."""
        return self.training and self.keep < 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        sigma = ((1.0 - self.keep) / self.keep) ** 0.5
        eps = torch.randn(x.shape, generator=self._generator(), dtype=x.dtype, device=x.device)
        return x * eps.mul_(sigma).add_(1.0)


def alpha_dropout_affine(keep: float) -> tuple[float, float]:
    """(a, b) of alpha dropout at keep rate `keep`, from the effective keep rate the mask realises.

    With q = 1 - p_eff: a = ((1 - q)(1 + q alpha'^2))^(-1/2) and b = -a alpha' q, which map a unit of
    mean 0 and variance 1, dropped to alpha' with probability q, back to mean 0 and variance 1.
    """
    q = 1.0 - effective_keep_rate(keep)
    a = ((1.0 - q) * (1.0 + q * SELU_SATURATION**2)) ** -0.5
    return a, -a * SELU_SATURATION * q


class AlphaDropout(ActivationNoise):
    """Alpha dropout for SELU networks (Klambauer et al. 2017): keeps mean 0 and variance 1.

    Dropped units are set to alpha' = -lambda * alpha (SELU's saturation value, not 0), then every unit
    goes through a * y + b (`alpha_dropout_affine`). A dropped unit therefore outputs a * alpha' + b.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        a, b = alpha_dropout_affine(self.keep)
        kept = kept_units(x.shape, self.keep, self._generator(), x.device, torch.bool)
        return torch.where(kept, x, SELU_SATURATION).mul_(a).add_(b)


class DropConnectLinear(nn.Linear):
    """`nn.Linear` with DropConnect (Wan et al. 2013): each weight kept with probability p, biases never masked.

    In training, y = x @ (W * M / p_eff)^T + b with M ~ Bernoulli(p_eff) per weight. One mask is drawn
    per forward call and shared by all examples of the minibatch: the common practical form. The
    paper's exact form draws a mask per example, which costs a copy of the weight matrix per example.
    Eval mode and keep = 1 (or a rate that rounds to 1) are a plain `nn.Linear` and draw no random numbers.

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
        if problem := keep_rate_problem(keep):
            raise ValueError(problem)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.keep = keep
        self.generator: torch.Generator | None = None

    def set_generator(self, generator: torch.Generator) -> None:
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not drops_units(self.keep):
            return nn.functional.linear(x, self.weight, self.bias)
        if self.generator is None:
            raise RuntimeError("DropConnectLinear.set_generator must be called before training")
        weight = self.weight
        mask = keep_mask(weight.shape, self.keep, self.generator, dtype=weight.dtype, device=weight.device)
        return nn.functional.linear(x, weight * mask, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keep={self.keep}"


_ACTIVATION_DROPOUTS: dict[str, type[ActivationNoise]] = {
    "bernoulli": Dropout,
    "gaussian": GaussianDropout,
    "alpha": AlphaDropout,
    "spatial": SpatialDropout,
}


def make_dropout(kind: str, keep: float) -> ActivationNoise:
    """The activation-noise layer of `kind` at keep rate `keep` (every kind of DROPOUT_KINDS but dropconnect)."""
    if kind == "dropconnect":
        raise ValueError(
            "dropconnect is not an activation layer: it replaces the Linear layer (models use DropConnectLinear)"
        )
    if kind not in _ACTIVATION_DROPOUTS:
        raise ValueError(f"unknown dropout kind {kind!r}; known kinds: {', '.join(DROPOUT_KINDS)}")
    return _ACTIVATION_DROPOUTS[kind](keep)
