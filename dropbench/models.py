"""Networks with dropout placed per layer: input units at the input keep rate, hidden units at the keep rate.

Every model kind, built-in (`mlp`, `cnn`) or a plugin's, is a `Network` subclass in one registry (`REGISTRY`,
entry-point group `dropbench.models`), built by its `build(spec)`; docs/plugins.md has the protocol.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, cast

import torch
from torch import nn

from .catalogue import DROPOUT_KINDS
from .config import ModelConfig
from .dropout import ActivationNoise, DropConnectLinear, Dropout, SpatialDropout, make_dropout
from .errors import UserError
from .plugins import registry


@dataclass(frozen=True)
class ModelSpec:
    """Everything a model is built from: the suite's model table (`config`: kind, hidden widths, options), the
    task's input shape ([features] or [C, H, W]) and outputs (classes, or 1 for regression), one keep rate per
    hidden layer (`keeps`, as many as config.hidden), the input keep rate, and the cell's dropout kind."""

    config: ModelConfig
    input_shape: tuple[int, ...]
    n_out: int
    keeps: tuple[float, ...]
    input_keep: float
    dropout: str = "bernoulli"

    def option(self, name: str) -> object:
        """An option of the model's table: the suite's value, else the class's default (`Network.options`)."""
        given = dict(self.config.options)
        return given[name] if name in given else model_class(self.config.kind).options.get(name)


class Network(nn.Module):
    """What the trainer and the regularizers need of any model, and what a model kind declares.

    A subclass is built by `build(spec)` (by default `cls(spec)`), draws its dropout masks only from the generator
    `set_generator` hands it (dropbench's dropout layers take it: `dropout.Dropout`, `make_dropout`), and has
    `linear_layers()` (weights penalized and initialized) in input-to-output order, the output layer last.
    """

    # The dropout kinds it implements (the suite refuses others for it); options its suite table may set, with
    # their defaults; whether the stacked trainer may train it (only the built-in MLP: the stack is an MLP).
    dropout_kinds: ClassVar[tuple[str, ...]] = ("bernoulli",)
    options: ClassVar[Mapping[str, object]] = {}
    stackable: ClassVar[bool] = False
    summary: ClassVar[str] = ""

    # With `record` set, forward keeps each hidden layer's activations in `activations` (for activation penalties).
    record: bool = False
    activations: list[torch.Tensor]

    @classmethod
    def build(cls, spec: ModelSpec) -> "Network":
        return cls(spec)

    def linear_layers(self) -> list[nn.Linear | nn.Conv2d]:
        return [m for m in self.modules() if isinstance(m, nn.Linear | nn.Conv2d)]  # DropConnectLinear too

    def penalized_weights(self) -> list[torch.Tensor]:
        """Every weight tensor, output layer included; biases are never penalized."""
        return [layer.weight for layer in self.linear_layers()]

    def max_norm_weights(self) -> list[torch.Tensor]:
        """Incoming weights of hidden units (fully connected and conv filters), the ones max-norm bounds."""
        return [layer.weight for layer in self.linear_layers()[:-1]]

    def set_generator(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, ActivationNoise | DropConnectLinear):
                module.set_generator(generator)


def _activation_noise(kind: str) -> str:
    """The activation-noise layer a dropout kind uses after each hidden layer (DropConnect masks weights
    instead, and spatial dropout acts on conv maps: their fully connected units get Bernoulli masks)."""
    return kind if kind in ("gaussian", "alpha") else "bernoulli"


class MLP(Network):
    """x -> [input dropout] -> (Linear -> ReLU (SELU for alpha dropout) -> dropout) per hidden layer -> Linear.

    `keeps` holds one keep rate per hidden layer. With `record` set, each hidden layer's activations
    (after the nonlinearity, before dropout) are kept in `activations` for activation penalties.
    """

    dropout_kinds = ("bernoulli", "gaussian", "dropconnect", "alpha")
    stackable = True
    summary = "ReLU hidden layers of the widths `hidden` (SELU under alpha dropout), dropout after each"

    @classmethod
    def build(cls, spec: ModelSpec) -> "MLP":
        widths = spec.config.widths(spec.keeps)
        return cls(math.prod(spec.input_shape), widths, spec.n_out, spec.keeps, spec.input_keep, spec.dropout)

    def __init__(
        self,
        n_in: int,
        hidden: tuple[int, ...],
        n_out: int,
        keeps: tuple[float, ...],
        input_keep: float,
        kind: str = "bernoulli",
    ) -> None:
        super().__init__()
        widths = [n_in, *hidden]
        self.kind = kind
        self.selu = kind == "alpha"
        self.input_dropout = make_dropout(_activation_noise(kind), input_keep)
        if kind == "dropconnect":
            self.hidden = nn.ModuleList(DropConnectLinear(a, b, p) for a, b, p in zip(widths[:-1], widths[1:], keeps))
            self.hidden_dropout = nn.ModuleList(Dropout(1.0) for _ in hidden)  # the identity: weights are masked
        else:
            self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
            self.hidden_dropout = nn.ModuleList(make_dropout(_activation_noise(kind), p) for p in keeps)
        self.output = nn.Linear(widths[-1], n_out)
        self.record = False
        self.activations: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x.flatten(1))  # images arrive as [N, C, H, W]
        self.activations = []
        for layer, noise in zip(self.hidden, self.hidden_dropout):
            z = layer(x)
            if self.selu or self.record:
                h = torch.selu(z) if self.selu else torch.relu(z)
                if self.record:
                    self.activations.append(h)  # before the noise: the penalties see the units themselves
                x = noise(h)
            else:
                x = cast(ActivationNoise, noise).relu_then_drop_(z)  # hidden_dropout holds only ActivationNoise
        return self.output(x)


class ConvNet(Network):
    """[input dropout] -> (conv3x3 -> ReLU -> maxpool2 -> [spatial dropout]) per block -> the MLP head.

    Hidden units of the head use the keep rates, as in the paper's conv nets; inputs stay images, so
    the input keep rate drops single pixels of every channel. Conv blocks get spatial dropout at
    `conv_keep`, or at the head's first keep rate when the cell's dropout kind is 'spatial'.
    """

    dropout_kinds = ("bernoulli", "gaussian", "dropconnect", "spatial")
    summary = "blocks of 3x3 conv, ReLU, 2x2 max-pool (`channels`), then the MLP head"

    @classmethod
    def build(cls, spec: ModelSpec) -> "ConvNet":
        return cls(spec.config, spec.input_shape, spec.n_out, spec.keeps, spec.input_keep, spec.dropout)

    def __init__(
        self,
        config: ModelConfig,
        input_shape: tuple[int, ...],
        n_out: int,
        keeps: tuple[float, ...],
        input_keep: float,
        kind: str = "bernoulli",
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise UserError(f"model 'cnn' needs image inputs [C, H, W]; this task's inputs are {input_shape}")
        channels, height, width = input_shape
        conv_keep = keeps[0] if kind == "spatial" and keeps else config.conv_keep
        self.input_dropout = Dropout(input_keep)
        blocks: list[nn.Module] = []
        for out_channels in config.channels:
            blocks += [nn.Conv2d(channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            blocks.append(SpatialDropout(conv_keep))
            channels, height, width = out_channels, height // 2, width // 2
        self.features = nn.Sequential(*blocks)
        head_kind = "bernoulli" if kind == "spatial" else kind
        self.head = MLP(channels * height * width, config.widths(keeps), n_out, keeps, 1.0, head_kind)
        # channels_last: faster convolutions on CPU (oneDNN; docs/performance.md), the same numbers.
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # missing from torch's stubs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x.contiguous(memory_format=torch.channels_last))
        return self.head(self.features(x))

    @property
    def record(self) -> bool:
        return self.head.record

    @record.setter
    def record(self, value: bool) -> None:
        self.head.record = value

    @property
    def activations(self) -> list[torch.Tensor]:
        return self.head.activations

    @activations.setter
    def activations(self, value: list[torch.Tensor]) -> None:
        self.head.activations = value


@torch.no_grad()
def init_parameters_(model: Network, generator: torch.Generator) -> None:
    """Weights drawn from the given generator only, biases zero: He-uniform for ReLU nets, LeCun normal
    (std 1/√fan_in) for SELU nets, the initialization self-normalization assumes."""
    selu = isinstance(model, MLP) and model.selu
    for layer in model.linear_layers():
        fan_in = layer.weight[0].numel()
        if selu:
            layer.weight.normal_(0.0, 1.0 / math.sqrt(fan_in), generator=generator)
        else:
            bound = math.sqrt(6.0 / fan_in)
            layer.weight.uniform_(-bound, bound, generator=generator)
        if layer.bias is not None:  # every layer here has one
            layer.bias.zero_()


def build_model(
    config: ModelConfig,
    input_shape: tuple[int, ...],
    n_out: int,
    keeps: tuple[float, ...],
    input_keep: float,
    kind: str = "bernoulli",
) -> Network:
    """The network of a cell: `keeps` has one keep rate per hidden layer (widths n / p under fixed p·n)."""
    model = model_class(config.kind).build(ModelSpec(config, input_shape, n_out, keeps, input_keep, kind))
    if not isinstance(model, Network):
        raise UserError(f"model kind '{config.kind}' built a {type(model).__name__}, not a dropbench.models.Network")
    return model


def _check_model(value: object, name: str) -> type[Network]:
    """What a plugin registers: a Network subclass, stackable only as an MLP (the stacked trainer stacks MLPs)."""
    if not (isinstance(value, type) and issubclass(value, Network)):
        raise UserError(f"a model kind is a subclass of dropbench.models.Network, got {value!r}")
    unknown = [kind for kind in value.dropout_kinds if kind not in DROPOUT_KINDS]
    if unknown:
        raise UserError(
            f"{value.__name__}.dropout_kinds: unknown kind '{unknown[0]}'; known: {', '.join(DROPOUT_KINDS)}"
        )
    if value.stackable and not issubclass(value, MLP):
        raise UserError(f"{value.__name__} declares stackable = True, but the stacked trainer stacks MLPs only")
    return value


REGISTRY = registry("dropbench.models", "model kind", _check_model)
REGISTRY.register("mlp", MLP)
REGISTRY.register("cnn", ConvNet)
MODEL_KINDS = tuple(REGISTRY.builtins)


def model_class(kind: str) -> type[Network]:
    """The class registered as `kind`: a built-in, a plugin's entry point, or a module:object reference."""
    found = REGISTRY.get(kind)
    if found is None:
        raise REGISTRY.unknown(kind)
    return found


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
