"""Wide residual networks, WRN-depth-k (Zagoruyko & Komodakis 2016), pre-activation.

Three groups of n = (depth − 4) / 6 blocks, widths 16k, 32k, 64k after a 16-channel 3×3 stem,
strides 1, 2, 2; each block is BN → ReLU → conv3×3 → BN → ReLU → dropout → conv3×3 (dropout
between the convolutions, as in the paper); then BN → ReLU → global average pool → linear.
WRN-28-10 is the usual CIFAR-10 robustness backbone; WRN-10-1 is a tiny one for tests.

The adaptive pool (instead of the paper's fixed 8×8 average pool) makes every input size work.
Initialization follows the reference implementation: He-normal convolutions, BN weight 1 bias 0,
linear bias 0.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from core.enums import Architecture
from core.specs.model import WideResNetParams
from models.architectures.common import ARCHITECTURES, image_shape
from models.architectures.resnet import PreActBlock


class WideResNet(nn.Module):
    """WRN-depth-widen_factor for C×H×W inputs of any size."""

    def __init__(self, params: WideResNetParams, input_shape: tuple[int, ...], num_outputs: int) -> None:
        super().__init__()
        channels, _, _ = image_shape(input_shape, "wide_resnet")
        blocks_per_group = (params.depth - 4) // 6
        k = params.widen_factor
        self.conv1 = nn.Conv2d(channels, 16, kernel_size=3, stride=1, padding=1, bias=False)
        in_planes = 16
        groups: list[nn.Module] = []
        for planes, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
            blocks = [
                PreActBlock(in_planes if i == 0 else planes, planes, stride if i == 0 else 1, params.dropout)
                for i in range(blocks_per_group)
            ]
            groups.append(nn.Sequential(*blocks))
            in_planes = planes
        self.block1, self.block2, self.block3 = groups
        self.bn = nn.BatchNorm2d(in_planes)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_outputs)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv1(x)  # N×16×H×W
        out = self.block1(out)  # N×16k×H×W
        out = self.block2(out)  # N×32k×H/2×W/2
        out = self.block3(out)  # N×64k×H/4×W/4
        out = self.pool(F.relu(self.bn(out))).flatten(1)  # N×64k
        logits: Tensor = self.fc(out)  # N×num_outputs
        return logits


@ARCHITECTURES.register(Architecture.WIDE_RESNET)
def build_wide_resnet(params: WideResNetParams, input_shape: tuple[int, ...], num_outputs: int) -> nn.Module:
    return WideResNet(params, input_shape, num_outputs)
