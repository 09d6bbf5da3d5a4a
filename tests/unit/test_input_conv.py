"""InputConv2d against nn.Conv2d: values, and derivatives of every order the regularizers take, in float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.architectures import build_model
from models.architectures.input_conv import InputConv2d, input_conv

# (out channels, kernel, stride, padding, input size): LeNet-5's and cnn_small's first layers in
# small, a stride that leaves a remainder, and padding wider than the kernel (the fold path)
GEOMETRIES = [(6, 5, 1, 2, 9), (4, 4, 2, 1, 9), (3, 3, 2, 0, 8), (2, 3, 1, 3, 7)]


def _pair(out_channels: int, kernel: int, stride: int, padding: int) -> tuple[nn.Conv2d, InputConv2d]:
    torch.manual_seed(0)
    stock = nn.Conv2d(1, out_channels, kernel, stride=stride, padding=padding).double()
    fast = InputConv2d(1, out_channels, kernel, stride=stride, padding=padding).double()
    fast.load_state_dict(stock.state_dict())
    return stock, fast


def _penalties(conv: nn.Module, x: Tensor) -> list[Tensor]:
    """d/dθ of ℓ, of ‖∇ₓℓ‖² (second order) and of ‖H v‖ (third order), ℓ a smooth function of conv(x)."""
    params = list(conv.parameters())
    x = x.detach().requires_grad_(True)
    loss = (conv(x).tanh() ** 2).sum()
    (g,) = torch.autograd.grad(loss, x, create_graph=True)
    (hv,) = torch.autograd.grad(g, x, grad_outputs=torch.ones_like(x), create_graph=True)
    out = []
    for objective in (loss, g.pow(2).sum(), hv.norm()):
        out += torch.autograd.grad(objective, params, retain_graph=True)
    return [*out, g.detach(), hv.detach()]


@pytest.mark.parametrize(("out_channels", "kernel", "stride", "padding", "size"), GEOMETRIES)
def test_input_conv_derivatives_match_conv2d_to_third_order(out_channels, kernel, stride, padding, size) -> None:
    stock, fast = _pair(out_channels, kernel, stride, padding)
    x = torch.rand(3, 1, size, size, dtype=torch.float64)
    with torch.enable_grad():
        assert torch.allclose(fast(x), stock(x), atol=1e-12)
        for ours, reference in zip(_penalties(fast, x), _penalties(stock, x), strict=True):
            assert torch.allclose(ours, reference, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize(("out_channels", "kernel", "stride", "padding", "size"), GEOMETRIES[:2])
def test_input_conv_passes_gradcheck_and_gradgradcheck(out_channels, kernel, stride, padding, size) -> None:
    _, fast = _pair(out_channels, kernel, stride, padding)
    x = torch.rand(2, 1, size, size, dtype=torch.float64, requires_grad=True)

    def f(x: Tensor, w: Tensor, b: Tensor) -> Tensor:
        return torch.func.functional_call(fast, {"weight": w, "bias": b}, (x,))

    inputs = (x, fast.weight.detach().clone().requires_grad_(True), fast.bias.detach().clone().requires_grad_(True))
    assert torch.autograd.gradcheck(f, inputs)
    assert torch.autograd.gradgradcheck(f, inputs)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace: what ONNX export runs
def test_input_conv_is_plain_conv2d_where_it_does_not_apply() -> None:
    """Several channels, no_grad, autocast and ONNX tracing all take nn.Conv2d's own path."""
    assert type(input_conv(3, 8, kernel_size=3)) is nn.Conv2d
    assert type(input_conv(1, 8, kernel_size=3, dilation=2)) is nn.Conv2d
    conv = input_conv(1, 4, kernel_size=3, padding=1)
    assert isinstance(conv, InputConv2d)
    x = torch.rand(2, 1, 6, 6)
    with torch.no_grad():
        assert conv(x).grad_fn is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert "Convolution" in type(conv(x.requires_grad_(True)).grad_fn).__name__
    assert type(conv(x).grad_fn).__name__ == "_ConvBackward"
    traced = torch.jit.trace(conv, torch.rand(1, 1, 6, 6))
    assert "aten::_convolution" in str(traced.graph)


def test_lenet_and_cnn_small_state_dicts_are_unchanged() -> None:
    """Checkpoints saved before the first layer became InputConv2d load as they are."""
    lenet = build_model("lenet5", {}, (1, 28, 28), 10, None, None)
    assert sum(isinstance(m, InputConv2d) for m in lenet.modules()) == 1
    keys = {k for k in lenet.state_dict() if "features.0" in k}
    assert {k.rsplit(".", 1)[1] for k in keys} == {"weight", "bias"}
    cnn = build_model("cnn_small", {}, (1, 28, 28), 10, None, None)
    assert sum(isinstance(m, InputConv2d) for m in cnn.modules()) == 1
    plain = build_model("lenet5", {}, (3, 32, 32), 10, None, None)
    assert not any(isinstance(m, InputConv2d) for m in plain.modules())


def test_input_gradient_of_lenet_matches_stock_convolution() -> None:
    """The same LeNet-5 with its first layer as nn.Conv2d: the same input gradient, in float32."""
    model = build_model("lenet5", {}, (1, 28, 28), 10, None, None).eval()
    x = torch.rand(8, 1, 28, 28, requires_grad=True)
    y = torch.randint(0, 10, (8,))
    (ours,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, InputConv2d):
                stock = nn.Conv2d(1, child.out_channels, child.kernel_size, padding=child.padding)
                stock.load_state_dict(child.state_dict())
                setattr(module, name, stock)
    (reference,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    assert torch.allclose(ours, reference, rtol=1e-4, atol=1e-6)
