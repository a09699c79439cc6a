"""Networks with dropout placed per layer: input units at the input keep rate, hidden units at the keep rate."""

import math

import torch
from torch import nn

from .config import ModelConfig
from .dropout import Dropout
from .errors import UserError


class MLP(nn.Module):
    """x -> [input dropout] -> (Linear -> ReLU -> dropout) per hidden layer -> Linear (logits or value)."""

    def __init__(self, n_in: int, hidden: tuple[int, ...], n_out: int, keep: float, input_keep: float) -> None:
        super().__init__()
        widths = [n_in, *hidden]
        self.input_dropout = Dropout(input_keep)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.hidden_dropout = nn.ModuleList(Dropout(keep) for _ in hidden)
        self.output = nn.Linear(widths[-1], n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x)
        for layer, dropout in zip(self.hidden, self.hidden_dropout):
            x = dropout(torch.relu(layer(x)))
        return self.output(x)

    def linear_layers(self) -> list[nn.Linear]:
        return [*self.hidden, self.output]

    def penalized_weights(self) -> list[nn.Parameter]:
        """Every weight matrix, output layer included; biases are never penalized."""
        return [layer.weight for layer in self.linear_layers()]

    def max_norm_weights(self) -> list[nn.Parameter]:
        """The incoming weights of hidden units, the ones Srivastava et al. 2014 constrain."""
        return [layer.weight for layer in self.hidden]

    def set_generator(self, generator: torch.Generator) -> None:
        for module in self.modules():
            if isinstance(module, Dropout):
                module.set_generator(generator)


@torch.no_grad()
def init_parameters_(model: MLP, generator: torch.Generator) -> None:
    """He-uniform weights (suited to ReLU), zero biases, drawn from the given generator only."""
    for layer in model.linear_layers():
        bound = math.sqrt(6.0 / layer.in_features)
        layer.weight.uniform_(-bound, bound, generator=generator)
        layer.bias.zero_()


def build_model(config: ModelConfig, n_in: int, n_out: int, keep: float, input_keep: float) -> MLP:
    if config.kind != "mlp":
        raise UserError(f"unknown model kind '{config.kind}'; known: mlp")
    return MLP(n_in, config.hidden, n_out, keep, input_keep)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
