"""Networks with dropout placed per layer: input units at the input keep rate, hidden units at the keep rate."""

import math

import torch
from torch import nn

from .config import ModelConfig
from .dropout import Dropout, SpatialDropout
from .errors import UserError

MODEL_KINDS = ("mlp", "cnn")


class Network(nn.Module):
    """What the trainer and the regularizers need of any model."""

    def linear_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, nn.Linear | nn.Conv2d)]

    def penalized_weights(self) -> list[nn.Parameter]:
        """Every weight tensor, output layer included; biases are never penalized."""
        return [layer.weight for layer in self.linear_layers()]

    def max_norm_weights(self) -> list[nn.Parameter]:
        """Incoming weights of hidden units (fully connected and conv filters), the ones max-norm bounds."""
        return [layer.weight for layer in self.linear_layers()[:-1]]

    def set_generator(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, Dropout):
                module.set_generator(generator)


class MLP(Network):
    """x -> [input dropout] -> (Linear -> ReLU -> dropout) per hidden layer -> Linear (logits or value)."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_out: int, keep: float, input_keep: float) -> None:
        super().__init__()
        widths = [n_in, *hidden]
        self.input_dropout = Dropout(input_keep)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.hidden_dropout = nn.ModuleList(Dropout(keep) for _ in hidden)
        self.output = nn.Linear(widths[-1], n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x.flatten(1))  # images arrive as [N, C, H, W]
        for layer, dropout in zip(self.hidden, self.hidden_dropout):
            x = dropout(torch.relu(layer(x)))
        return self.output(x)


class ConvNet(Network):
    """[input dropout] -> (conv3x3 -> ReLU -> maxpool2 -> [spatial dropout]) per block -> the MLP head.

    Hidden units of the head use the keep rate, as in the paper's conv nets; inputs stay images, so
    the input keep rate drops single pixels of every channel.
    """

    def __init__(self, config: ModelConfig, input_shape: tuple[int, ...], n_out: int, keep: float, input_keep: float):
        super().__init__()
        if len(input_shape) != 3:
            raise UserError(f"model 'cnn' needs image inputs [C, H, W]; this task's inputs are {input_shape}")
        channels, height, width = input_shape
        self.input_dropout = Dropout(input_keep)
        blocks: list[nn.Module] = []
        for out_channels in config.channels:
            blocks += [nn.Conv2d(channels, out_channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
            blocks.append(SpatialDropout(config.conv_keep))
            channels, height, width = out_channels, height // 2, width // 2
        self.features = nn.Sequential(*blocks)
        self.head = MLP(channels * height * width, config.hidden, n_out, keep, input_keep=1.0)
        # channels_last: ~25% faster convolutions on CPU (oneDNN), the same numbers.
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x.contiguous(memory_format=torch.channels_last))
        return self.head(self.features(x))


@torch.no_grad()
def init_parameters_(model: Network, generator: torch.Generator) -> None:
    """He-uniform weights (suited to ReLU), zero biases, drawn from the given generator only."""
    for layer in model.linear_layers():
        fan_in = layer.weight[0].numel()
        bound = math.sqrt(6.0 / fan_in)
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.zero_()


def build_model(
    config: ModelConfig, input_shape: tuple[int, ...], n_out: int, keep: float, input_keep: float
) -> Network:
    if config.kind == "cnn":
        return ConvNet(config, input_shape, n_out, keep, input_keep)
    if config.kind == "mlp":
        return MLP(math.prod(input_shape), config.hidden, n_out, keep, input_keep)
    raise UserError(f"unknown model kind '{config.kind}'; known: {', '.join(MODEL_KINDS)}")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
