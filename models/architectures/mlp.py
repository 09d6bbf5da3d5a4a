"""A fully connected network: the baseline for vectors (regression, synthetic data) and small images."""

from __future__ import annotations

import math
from collections import OrderedDict

from torch import Tensor, nn

from core.enums import Architecture
from core.specs.model import MLPParams
from models.architectures.common import ARCHITECTURES, make_activation


class MLP(nn.Module):
    """flatten → (Linear → activation → Dropout) per hidden width → Linear(num_outputs).

    Layers are named (`hidden.fc1`, `out`, …) rather than numbered so that the state-dict keys do
    not depend on whether dropout is on.
    """

    def __init__(self, params: MLPParams, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        width = math.prod(input_shape)
        for i, hidden in enumerate(params.hidden, start=1):
            layers[f"fc{i}"] = nn.Linear(width, hidden)
            layers[f"act{i}"] = make_activation(params.activation)
            if params.dropout > 0:
                layers[f"drop{i}"] = nn.Dropout(params.dropout)
            width = hidden
        self.hidden = nn.Sequential(layers)
        self.out = nn.Linear(width, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)  # N×D (images: N×(C·H·W))
        out: Tensor = self.out(self.hidden(x))  # N×num_outputs
        return out


@ARCHITECTURES.register(Architecture.MLP)
def build_mlp(params: MLPParams, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return MLP(params, input_shape, num_outputs)
