"""LeNet-5 as used by Varga et al. (2017) for gradient regularization on MNIST.

conv 6@5×5 → act → pool 2 → conv 16@5×5 → act → pool 2 → fc 120 → act → fc 84 → act → fc out.

Input sizes: the first convolution has padding 2, so a 28×28 MNIST digit goes through the same
sizes as the original 32×32 input (28 → 28 → 14 → 10 → 5, 16×5×5 = 400 features). For small
inputs two things keep the spatial size from reaching 0:
- both pools use ceil_mode=True (a 1×1 or odd-sized map pools to ⌈n/2⌉, never 0);
- the second convolution gets padding 2 ("same") along any dimension that is smaller than its
  5×5 kernel when it reaches it (e.g. 8×8 inputs: 8 → 8 → 4 → 4 → 2). Larger inputs keep the
  classic unpadded second convolution.
The fully connected input size is measured by a dummy forward, so any H×W works.
"""

from __future__ import annotations

from torch import Tensor, nn

from core.enums import Architecture
from core.specs.model import LeNet5Params
from models.architectures.common import ARCHITECTURES, flat_features, image_shape, make_activation
from models.architectures.input_conv import input_conv


class LeNet5(nn.Module):
    """LeNet-5 for C×H×W inputs of any size (see the module docstring for small inputs)."""

    def __init__(self, params: LeNet5Params, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        channels, height, width = image_shape(input_shape, "lenet5")
        pool: type[nn.MaxPool2d] | type[nn.AvgPool2d] = (
            nn.MaxPool2d if params.pooling == "max" else nn.AvgPool2d
        )
        # Size of the map entering conv2: conv1 keeps H×W (padding 2), pool1 halves it, rounding up.
        after_pool1 = (-(-height // 2), -(-width // 2))
        conv2_padding = (0 if after_pool1[0] >= 5 else 2, 0 if after_pool1[1] >= 5 else 2)

        self.features = nn.Sequential(
            input_conv(channels, 6, kernel_size=5, padding=2),  # N×6×H×W
            make_activation(params.activation),
            pool(2, ceil_mode=True),  # N×6×⌈H/2⌉×⌈W/2⌉
            nn.Conv2d(6, 16, kernel_size=5, padding=conv2_padding),  # N×16×h×w
            make_activation(params.activation),
            pool(2, ceil_mode=True),  # N×16×⌈h/2⌉×⌈w/2⌉ (5×5 for 28×28 inputs)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat_features(self.features, input_shape), 120),
            make_activation(params.activation),
            nn.Linear(120, 84),
            make_activation(params.activation),
            nn.Linear(84, num_outputs),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(self.features(x))  # N×num_outputs
        return out


@ARCHITECTURES.register(Architecture.LENET5)
def build_lenet5(params: LeNet5Params, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return LeNet5(params, input_shape, num_outputs)
