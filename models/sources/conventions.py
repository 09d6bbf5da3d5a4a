"""Input conventions: robustlab's [0, 1] C×H×W inputs mapped to what a user's model expects.

Attacks and ε always live in [0, 1] pixel space (DESIGN §3), so the wrapper is part of the model
the attacks differentiate: scale to the declared input_range, normalize with the declared mean and
std, transpose to the declared layout, and turn declared probabilities into log-probabilities (the
same argmax, and the cross-entropy the attacks' losses expect). Every step is differentiable.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from core.specs.model import OnnxModel, TimmModel, TorchvisionModel
from models.sources.errors import ModelSourceError

UserModel = OnnxModel | TimmModel | TorchvisionModel
TINY = 1e-12  # log of a probability the model rounded to zero: finite, and below every real one


class InputConventions(nn.Module):
    """net(conventions(x)) for x of shape N×C×H×W (or N×D) in [0, 1]; outputs are logits."""

    def __init__(self, net: nn.Module, spec: UserModel) -> None:
        super().__init__()
        self.net = net
        low, high = spec.input_range
        self.flatten = len(spec.input_shape) == 1
        self.channels_last = spec.layout == "nhwc"
        self.probabilities = spec.outputs == "probabilities"
        self.low: Tensor
        self.span: Tensor
        self.mean: Tensor
        self.std: Tensor
        self.register_buffer("low", torch.tensor(float(low)))
        self.register_buffer("span", torch.tensor(float(high - low)))
        self.normalized = spec.mean is not None and spec.std is not None
        # Shaped to broadcast over the channel axis of the layout the model takes.
        shape = (-1,) if self.flatten or self.channels_last else (-1, 1, 1)
        mean = torch.tensor(spec.mean or [0.0], dtype=torch.float32).reshape(shape)
        std = torch.tensor(spec.std or [1.0], dtype=torch.float32).reshape(shape)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def model_input(self, x: Tensor) -> Tensor:
        """What the wrapped model receives for robustlab inputs x."""
        if self.flatten:
            x = x.flatten(1)  # N×C×H×W images for a model that takes vectors
        elif self.channels_last:
            x = x.permute(0, 2, 3, 1)  # N×C×H×W -> N×H×W×C
        x = x * self.span + self.low  # [0, 1] -> input_range
        return (x - self.mean) / self.std if self.normalized else x

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(self.model_input(x))
        if self.probabilities:
            out = torch.log(out.clamp_min(TINY))
        return out


def check_fits_data(spec: UserModel, sample_shape: tuple[int, ...], num_labels: int) -> None:
    """The dataset's samples and labels fit what the model section declares; else say what differs."""
    expected = tuple(spec.image_shape)
    if len(spec.input_shape) == 1:
        size = 1
        for v in sample_shape:
            size *= v
        if size != spec.input_shape[0]:
            raise ModelSourceError(
                f"the model takes vectors of {spec.input_shape[0]} values but the dataset's samples have shape "
                f"{list(sample_shape)} ({size} values): fix model.input_shape"
            )
    elif sample_shape != expected:
        layout = f" (layout {spec.layout}: as C×H×W that is {list(expected)})" if spec.layout == "nhwc" else ""
        raise ModelSourceError(
            f"the model takes input_shape {spec.input_shape}{layout} but the dataset's images are "
            f"{list(sample_shape)} (C×H×W): fix model.input_shape / model.layout, or use matching data"
        )
    if num_labels > spec.num_classes:
        raise ModelSourceError(
            f"the dataset has labels up to {num_labels - 1} but the model declares num_classes "
            f"{spec.num_classes}: fix model.num_classes or the labels"
        )


@torch.no_grad()
def check_outputs(model: InputConventions, spec: UserModel, device: str | torch.device) -> None:
    """One forward pass of two samples: the output shape, finiteness and (declared) probabilities."""
    x = torch.full((2, *spec.image_shape), 0.5, device=device)
    try:
        raw = model.net(model.model_input(x))
    except Exception as exc:  # any operator error: the declared shape or layout is wrong
        message = " ".join(str(exc).split())[:240]
        raise ModelSourceError(
            f"a forward pass on input_shape {spec.input_shape} (layout {spec.layout}) failed "
            f"({type(exc).__name__}: {message}): check model.input_shape and model.layout"
        ) from None
    if not isinstance(raw, Tensor) or tuple(raw.shape) != (2, spec.num_classes):
        got = list(raw.shape) if isinstance(raw, Tensor) else type(raw).__name__
        raise ModelSourceError(
            f"the model returned {got} for a batch of 2, but model.num_classes is {spec.num_classes} "
            f"(expected [2, {spec.num_classes}]): fix model.num_classes or model.input_shape"
        )
    if not bool(torch.isfinite(raw).all()):
        raise ModelSourceError("the model returned NaN or infinite values on a plain grey input: "
                               "check model.input_range, mean and std")
    if spec.outputs == "probabilities":
        sums = raw.sum(dim=1)
        if bool((raw < -1e-4).any()) or not bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-3)):
            raise ModelSourceError(
                f"model.outputs is 'probabilities' but the outputs are not (row sums {sums.tolist()}, "
                f"minimum {float(raw.min()):.3g}): declare outputs: logits"
            )

