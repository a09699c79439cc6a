"""A model kind: a dropbench Network subclass, built from a ModelSpec."""

import math

import torch
from torch import nn

from dropbench.dropout import make_dropout
from dropbench.models import ModelSpec, Network


class ResMLP(Network):
    """x -> [input dropout] -> Linear -> (h + scale·dropout(relu(Linear(h)))) per block -> Linear.

    One block per entry of `hidden` (all of one width: the residual sum needs it), its dropout at that layer's
    keep rate. The dropout layers are dropbench's (`make_dropout`): `Network.set_generator` hands them the cell's
    mask generator, so the masks are the cell's own and reproducible.
    """

    dropout_kinds = ("bernoulli", "gaussian")  # what make_dropout gives for units; the suite refuses the others
    options = {"scale": 1.0}  # the residual branch's weight: `model = { kind = "resmlp", scale = 0.5 }`
    summary = "residual MLP: blocks of the widths `hidden` (all equal), option scale"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        width = spec.config.hidden[0]
        if any(w != width for w in spec.config.hidden):
            raise ValueError(f"resmlp blocks share one width; got hidden = {list(spec.config.hidden)}")
        self.scale = float(str(spec.option("scale")))
        self.input_dropout = make_dropout(spec.dropout, spec.input_keep)
        self.project = nn.Linear(math.prod(spec.input_shape), width)
        # Layers in input-to-output order, the output last: penalties and max-norm read them so.
        self.blocks = nn.ModuleList(nn.Linear(width, width) for _ in spec.config.hidden)
        self.noise = nn.ModuleList(make_dropout(spec.dropout, keep) for keep in spec.keeps)
        self.output = nn.Linear(width, spec.n_out)
        self.record = False
        self.activations: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(self.input_dropout(x.flatten(1)))
        self.activations = []
        for block, noise in zip(self.blocks, self.noise):
            unit = torch.relu(block(h))
            if self.record:  # activation penalties (activity-l1, kl-sparsity) read them
                self.activations.append(unit)
            h = h + self.scale * noise(unit)
        return self.output(h)
