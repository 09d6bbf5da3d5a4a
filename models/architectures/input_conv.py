"""A convolution on single-channel inputs whose input gradients stay cheap on the CPU, at every order.

Every input-gradient regularizer and every gradient attack back-propagates to the input through
the network's first convolution. On one input channel (MNIST and other grey-scale images) oneDNN's
backward-data kernel for it is pathologically slow: for LeNet-5's first layer (1→6 channels, 5×5,
batch 128, one thread) it took 14-19 ms against 1-2 ms for the forward pass, more than a whole ERM
step, so double backprop, the finite-difference penalties and the input Hessian spent most of
their extra time there (benchmarks/regularizer_cost.py; docs/performance.md).

The three maps of a convolution are the partial derivatives of one trilinear form
T(x, w, u) = ⟨conv(x, w), u⟩:

    conv(x, w)   = ∂T/∂u        (the forward pass)
    conv_t(u, w) = ∂T/∂x        (the input gradient: a transposed convolution)
    weight(x, u) = ∂T/∂w        (the weight gradient)

so the derivative of each is made of the other two, and three autograd Functions that call each
other in their backward passes give exact derivatives of any order (double backprop's second, the
input-Hessian penalty's third). Only the transposed convolution is computed differently from
PyTorch: stride 1 as a convolution with the flipped kernel, larger strides as one matrix product
and `fold`; both are several times faster than the backward-data kernel on one channel. The
forward pass and the weight gradient are PyTorch's own. Tested against `nn.Conv2d` in float64 up
to third derivatives (tests/unit/test_input_conv.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.graph import get_gradient_edge
from torch.nn import grad as conv_grad


@dataclass(frozen=True)
class Geometry:
    """What the three maps share: strides, zero padding, and the input's spatial size."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    size: tuple[int, int]  # H×W of the input x


def conv_t(u: Tensor, w: Tensor, geo: Geometry) -> Tensor:
    """∂T/∂x: the input gradient of conv(·, w) for the output gradient u (B×1×H×W)."""
    (kh, kw), (sh, sw), (ph, pw) = geo.kernel, geo.stride, geo.padding
    if (sh, sw) == (1, 1) and ph <= kh - 1 and pw <= kw - 1:
        return F.conv2d(u, w.flip(2, 3).transpose(0, 1), padding=(kh - 1 - ph, kw - 1 - pw))
    batch, channels = u.shape[:2]
    columns = torch.matmul(w.reshape(channels, kh * kw).t(), u.reshape(batch, channels, -1))  # B×k²×L
    return F.fold(columns, geo.size, (kh, kw), padding=geo.padding, stride=geo.stride)


def _remember_edges(ctx: Any, *inputs: Tensor | None) -> None:
    """Where each input's gradient goes, so the backward can ask whether it is wanted at all."""
    ctx.edges = [get_gradient_edge(t).node if t is not None and t.requires_grad else None for t in inputs]


def _wanted(ctx: Any) -> list[bool]:
    """Per input: does this backward pass use its gradient?

    `needs_input_grad` only says an input requires grad. A gradient to the input that nobody asked
    for (ERM's backward into the weights, a double-backprop step's backward to the input only)
    would cost a full transposed convolution or weight gradient here, where PyTorch's own
    convolution skips it; the engine knows which nodes it will run. Leaves cannot be asked about
    under `autograd.grad` (InputConv2d feeds views for that reason), so they count as wanted.
    """
    wanted = []
    for needed, node in zip(ctx.needs_input_grad, ctx.edges, strict=False):
        try:
            wanted.append(bool(needed) and node is not None and torch._C._will_engine_execute_node(node))
        except RuntimeError:  # a leaf under autograd.grad: cannot tell
            wanted.append(bool(needed))
    return wanted + [False] * (len(ctx.needs_input_grad) - len(wanted))


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, bias: Tensor | None, geo: Geometry) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.geo = geo
        _remember_edges(ctx, x, w, bias)
        return F.conv2d(x, w, bias, stride=geo.stride, padding=geo.padding)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, w = ctx.saved_tensors
        need_x, need_w, need_bias, _ = _wanted(ctx)
        return (_conv_t_fn(grad, w, ctx.geo) if need_x else None,
                _weight_fn(x, grad, ctx.geo) if need_w else None,
                grad.sum(dim=(0, 2, 3)) if need_bias else None,
                None)


class _ConvT(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, u: Tensor, w: Tensor, geo: Geometry) -> Tensor:
        ctx.save_for_backward(u, w)
        ctx.geo = geo
        _remember_edges(ctx, u, w)
        return conv_t(u, w, geo)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        u, w = ctx.saved_tensors
        need_u, need_w, _ = _wanted(ctx)
        return (_conv_fn(grad, w, None, ctx.geo) if need_u else None,
                _weight_fn(grad, u, ctx.geo) if need_w else None,
                None)


class _Weight(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, u: Tensor, geo: Geometry) -> Tensor:
        ctx.save_for_backward(x, u)
        ctx.geo = geo
        _remember_edges(ctx, x, u)
        shape = (u.shape[1], x.shape[1], *geo.kernel)
        return cast(Tensor, conv_grad.conv2d_weight(  # type: ignore[no-untyped-call]
            x, shape, u, stride=geo.stride, padding=geo.padding))

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, u = ctx.saved_tensors
        need_x, need_u, _ = _wanted(ctx)
        return (_conv_t_fn(u, grad, ctx.geo) if need_x else None,
                _conv_fn(x, grad, None, ctx.geo) if need_u else None,
                None)


# Function.apply is untyped: these say what each returns.
def _conv_fn(x: Tensor, w: Tensor, bias: Tensor | None, geo: Geometry) -> Tensor:
    return cast(Tensor, _Conv.apply(x, w, bias, geo))  # type: ignore[no-untyped-call]


def _conv_t_fn(u: Tensor, w: Tensor, geo: Geometry) -> Tensor:
    return cast(Tensor, _ConvT.apply(u, w, geo))  # type: ignore[no-untyped-call]


def _weight_fn(x: Tensor, u: Tensor, geo: Geometry) -> Tensor:
    return cast(Tensor, _Weight.apply(x, u, geo))  # type: ignore[no-untyped-call]


class InputConv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters, same state_dict) for a network's first layer on one channel.

    On the CPU, with gradients enabled, its input gradient goes through `conv_t`; everywhere else
    (CUDA's cuDNN has no such pathology; no_grad, autocast, ONNX export, tracing) it is `nn.Conv2d`.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self._fast_path(x):
            return super().forward(x)
        geo = Geometry(self.kernel_size, self.stride, self.padding,  # type: ignore[arg-type]
                       (x.shape[-2], x.shape[-1]))
        # views, not the leaves themselves: the backward can then ask the engine whether their
        # gradients are wanted (`_wanted`)
        bias = None if self.bias is None else self.bias.view_as(self.bias)
        return _conv_fn(x.view_as(x), self.weight.view_as(self.weight), bias, geo)

    def _fast_path(self, x: Tensor) -> bool:
        return (x.device.type == "cpu" and torch.is_grad_enabled() and x.dim() == 4 and self.in_channels == 1
                and self.groups == 1 and self.dilation == (1, 1) and self.padding_mode == "zeros"
                and not isinstance(self.padding, str) and x.dtype in (torch.float32, torch.float64)
                and not torch.is_autocast_enabled("cpu")
                and not torch._C._are_functorch_transforms_active()  # torch.func: no vmap/jvp rules here
                and not torch.jit.is_tracing()  # type: ignore[attr-defined,no-untyped-call]
                and not torch.jit.is_scripting()  # type: ignore[attr-defined]
                and not torch.compiler.is_compiling())


def input_conv(in_channels: int, out_channels: int, **kwargs: Any) -> nn.Conv2d:
    """The first convolution of a network: `InputConv2d` on one channel, else `nn.Conv2d`."""
    if in_channels == 1 and kwargs.get("groups", 1) == 1 and kwargs.get("dilation", 1) in (1, (1, 1)):
        return InputConv2d(in_channels, out_channels, **kwargs)
    return nn.Conv2d(in_channels, out_channels, **kwargs)
