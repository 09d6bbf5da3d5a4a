"""The architecture registry: every name builds, for any input shape and class count."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from core.enums import Architecture
from core.specs.model import LeNet5Model, MLPModel, Normalization, ResNet18Params
from models.architectures import ARCHITECTURES, NormalizedModel, build_from_spec, build_model

# Tiny settings so that the whole grid runs in seconds on two CPU cores.
SMALL_PARAMS: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": [16, 8], "activation": "tanh", "dropout": 0.1},
    "lenet5": {"activation": "relu", "pooling": "max"},
    "cnn_small": {"channels": [4, 8], "hidden": 16},
    "resnet18": {"width": 2},
    "wide_resnet": {"depth": 10, "widen_factor": 1, "dropout": 0.1},
}
IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]


def test_every_architecture_is_registered() -> None:
    assert ARCHITECTURES.missing() == []
    assert set(SMALL_PARAMS) == {m.value for m in Architecture}


def _forward_backward(model: nn.Module, input_shape: tuple[int, ...], num_outputs: int) -> None:
    x = torch.rand(2, *input_shape, requires_grad=True)
    out = model(x)
    assert out.shape == (2, num_outputs)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("num_outputs", [2, 10])
@pytest.mark.parametrize("input_shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("architecture", list(SMALL_PARAMS))
def test_builds_and_trains_on_images(
    architecture: str, input_shape: tuple[int, ...], num_outputs: int
) -> None:
    torch.manual_seed(0)
    model = build_model(architecture, SMALL_PARAMS[architecture], input_shape, num_outputs, None, None)
    assert isinstance(model, NormalizedModel)
    _forward_backward(model.train(), input_shape, num_outputs)


@pytest.mark.parametrize("activation", ["relu", "tanh", "softplus", "gelu"])
def test_mlp_on_vectors(activation: str) -> None:
    torch.manual_seed(0)
    model = build_model("mlp", {"hidden": [8], "activation": activation}, (2,), 1)
    _forward_backward(model, (2,), 1)


@pytest.mark.parametrize("input_shape", [(1, 1, 1), (2, 5, 7), (3, 3, 12)], ids=str)
@pytest.mark.parametrize("architecture", ["lenet5", "cnn_small", "resnet18", "wide_resnet"])
def test_odd_and_tiny_images_still_build(architecture: str, input_shape: tuple[int, ...]) -> None:
    params = {**SMALL_PARAMS[architecture]}
    if architecture == "cnn_small":
        params["channels"] = [2, 2, 2, 2]  # more halvings than a 1×1 or 5×7 input has
    model = build_model(architecture, params, input_shape, 3).eval()
    assert model(torch.rand(2, *input_shape)).shape == (2, 3)


def test_paper_sizes() -> None:
    """The defaults reproduce the published models (counted on the meta device: no memory)."""
    with torch.device("meta"):
        lenet = build_model("lenet5", {}, (1, 28, 28), 10)
        cnn = build_model("cnn_small", {}, (1, 28, 28), 10)
        resnet = build_model("resnet18", {}, (3, 32, 32), 10)
        wrn = build_model("wide_resnet", {}, (3, 32, 32), 10)

    def count(m: nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert lenet.net.classifier[1].in_features == 16 * 5 * 5  # classic LeNet-5 feature map
    assert cnn.net.classifier[1].in_features == 32 * 7 * 7  # Wong et al. 2020
    assert count(resnet) == 11_172_170  # PreActResNet-18 with final BN (Wong/Rice et al.)
    assert count(wrn) == 36_479_194  # WRN-28-10


def test_normalization_layer_is_inside() -> None:
    torch.manual_seed(0)
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    model = build_model("cnn_small", SMALL_PARAMS["cnn_small"], (3, 8, 8), 10, mean, std).eval()
    x = torch.rand(4, 3, 8, 8)
    expected = model.net((x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1))
    torch.testing.assert_close(model(x), expected)

    identity = build_model("mlp", {"hidden": [4]}, (2,), 1).eval()
    v = torch.rand(3, 2)
    torch.testing.assert_close(identity(v), identity.net(v))


def test_params_accepted_as_dict_or_model_and_validated() -> None:
    assert isinstance(build_model("resnet18", ResNet18Params(width=2), (1, 8, 8), 2), NormalizedModel)
    with pytest.raises(ValueError, match="width"):
        build_model("resnet18", {"width": 0}, (1, 8, 8), 2)
    with pytest.raises(ValueError, match="not 6n\\+4"):
        build_model("wide_resnet", {"depth": 11}, (1, 8, 8), 2)
    with pytest.raises(ValueError, match="extra"):
        build_model("lenet5", {"hidden": [3]}, (1, 8, 8), 2)  # an mlp field


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: build_model("vgg", {}, (1, 8, 8), 2), "unknown architecture 'vgg'"),
        (lambda: build_model("lenet5", {}, (64,), 2), "use the mlp architecture"),
        (lambda: build_model("mlp", {}, (4, 4), 2), "C×H×W"),
        (lambda: build_model("mlp", {}, (4,), 0), "num_outputs"),
        (lambda: build_model("mlp", {}, (1, 8, 8), 2, [0.5], None), "both mean and std"),
        (lambda: build_model("mlp", {}, (3, 8, 8), 2, [0.5], [0.2]), "3 channels"),
        (lambda: build_model("mlp", {}, (1, 8, 8), 2, [0.5], [0.0]), "std must be > 0"),
    ],
)
def test_bad_build_arguments_are_clear(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_build_from_spec_resolves_normalization() -> None:
    stats = ([0.1307], [0.3081])
    spec = LeNet5Model(architecture="lenet5")  # normalization "dataset" by default
    model = build_from_spec(spec, (1, 8, 8), 10, stats)
    assert model.normalize.mean.flatten().tolist() == pytest.approx([0.1307])
    assert model.normalize.std.flatten().tolist() == pytest.approx([0.3081])

    none = build_from_spec(MLPModel(architecture="mlp", normalization="none"), (2,), 1)
    assert none.normalize.mean.flatten().tolist() == [0.0]
    assert none.normalize.std.flatten().tolist() == [1.0]

    explicit = MLPModel(architecture="mlp", normalization=Normalization(mean=[0.5] * 3, std=[0.25] * 3))
    model = build_from_spec(explicit, (3, 8, 8), 10, stats)  # explicit wins over the dataset
    assert model.normalize.std.flatten().tolist() == [0.25] * 3

    with pytest.raises(ValueError, match="1 values but the input has 3 channels"):
        build_from_spec(spec, (3, 8, 8), 10, stats)
    with pytest.raises(ValueError, match="3 values but the input has 1 channels"):
        build_from_spec(explicit, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="dataset_stats"):
        build_from_spec(spec, (1, 8, 8), 10)
