"""The small MNIST CNN of Wong, Rice & Kolter (2020), "Fast is better than free".

For each entry c of `params.channels`: conv c@4×4, stride 2, padding 1 → ReLU; then
flatten → fc hidden → ReLU → fc out. With the default [16, 32] on 1×28×28 this is exactly their
model (28 → 14 → 7, 32×7×7 = 1568 features → 100 → 10).

Each stride-2 convolution halves H and W (n → ⌊n/2⌋). A dimension that has already shrunk to 1
gets padding 2 instead of 1, which keeps it at 1 instead of 0, so any input size and any number
of convolutions build. The fully connected input size is measured by a dummy forward.
"""

from __future__ import annotations

from torch import Tensor, nn

from core.enums import Architecture
from core.specs.model import CNNSmallParams
from models.architectures.common import ARCHITECTURES, flat_features, image_shape
from models.architectures.input_conv import input_conv


class CNNSmall(nn.Module):
    """Stride-2 4×4 convolutions with ReLU, then one hidden fully connected layer."""

    def __init__(self, params: CNNSmallParams, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        in_channels, height, width = image_shape(input_shape, "cnn_small")
        layers: list[nn.Module] = []
        for i, out_channels in enumerate(params.channels):
            padding = (1 if height >= 2 else 2, 1 if width >= 2 else 2)
            conv = input_conv if i == 0 else nn.Conv2d  # the first layer sees the image's channels
            layers += [
                conv(in_channels, out_channels, kernel_size=4, stride=2, padding=padding),
                nn.ReLU(),
            ]
            height = (height + 2 * padding[0] - 4) // 2 + 1  # ⌊H/2⌋, or 1 when H was 1
            width = (width + 2 * padding[1] - 4) // 2 + 1
            in_channels = out_channels
        self.features = nn.Sequential(*layers)  # N×channels[-1]×h×w
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat_features(self.features, input_shape), params.hidden),
            nn.ReLU(),
            nn.Linear(params.hidden, num_outputs),
        )

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.classifier(self.features(x))  # N×num_outputs
        return out


@ARCHITECTURES.register(Architecture.CNN_SMALL)
def build_cnn_small(params: CNNSmallParams, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return CNNSmall(params, input_shape, num_outputs)
