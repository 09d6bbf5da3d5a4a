"""CIFAR-style pre-activation ResNet-18 (He et al. 2016, "Identity mappings in deep residual networks").

The layout follows the PreActResNet18 used in the adversarial-training literature (Rice et al.
2020, Wong et al. 2020): a 3×3 stem convolution at full resolution (no 7×7 stem, no max-pool),
four stages of two pre-activation basic blocks, widths width×[1, 2, 4, 8], strides [1, 2, 2, 2],
then BN → ReLU → global average pool → linear.

Any input size works: a stride-2 3×3 convolution with padding 1 maps a 1×1 map to 1×1, and the
adaptive pool removes the last dependence on H×W (8×8 inputs end the last stage at 1×1).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from core.enums import Architecture
from core.specs.model import ResNet18Params
from models.architectures.common import ARCHITECTURES, image_shape


class PreActBlock(nn.Module):
    """BN → ReLU → conv3×3 → BN → ReLU → conv3×3, plus the (projected) input.

    When the block changes width or resolution, the shortcut is a 1×1 convolution of the
    pre-activated input, as in He et al.'s pre-activation design.
    """

    def __init__(self, in_planes: int, planes: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout)  # between the convolutions (wide ResNets); identity at 0
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut: Tensor = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)  # N×planes×H/stride×W/stride
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        result: Tensor = out + shortcut
        return result


class PreActResNet18(nn.Module):
    """Pre-activation ResNet-18 with a configurable base width (64 in the paper)."""

    def __init__(self, params: ResNet18Params, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        channels, _, _ = image_shape(input_shape, "resnet18")
        widths = [params.width * m for m in (1, 2, 4, 8)]
        self.conv1 = nn.Conv2d(channels, widths[0], kernel_size=3, stride=1, padding=1, bias=False)
        in_planes = widths[0]
        stages: list[nn.Module] = []
        for planes, stride in zip(widths, (1, 2, 2, 2), strict=True):
            blocks = [PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)]
            stages.append(nn.Sequential(*blocks))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(in_planes, num_outputs)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv1(x)  # N×w×H×W
        out = self.layer1(out)  # N×w×H×W
        out = self.layer2(out)  # N×2w×H/2×W/2
        out = self.layer3(out)  # N×4w×H/4×W/4
        out = self.layer4(out)  # N×8w×H/8×W/8
        out = self.pool(F.relu(self.bn(out))).flatten(1)  # N×8w
        logits: Tensor = self.linear(out)  # N×num_outputs
        return logits


@ARCHITECTURES.register(Architecture.RESNET18)
def build_resnet18(params: ResNet18Params, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return PreActResNet18(params, input_shape, num_outputs)
