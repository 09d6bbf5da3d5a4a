"""What a user's model costs once loaded: the tensors it holds, and the FLOPs of one sample's forward.

Why (DESIGN §6): what a tenant's model may cost is bounded like any job, and the file's size says
nothing about it. A 3.8 KB ONNX graph of 40 MatMuls of 4096² kept a checker busy for minutes and a
worker for as long as its job ran; a 95 KB `.pt` of stride-0 (expanded) tensors became a
303 M-parameter network once `load_state_dict` copied it into real storage. So the upload check
measures before it runs anything heavy, and the job's cost estimate (core.cost) reads the record:

- parameters: elements of every tensor the loaded model holds. An ONNX graph's initializers and
  Constant nodes (its weights may be either), a torch module's parameters and buffers, counted on
  the meta device before anything is allocated (a stride-0 tensor counts as what it is copied into).
- forward FLOPs of one sample, as 2 × multiply-adds of matrix products and convolutions:
  `graph` counts them from the ONNX graph at the declared input shape with ONNX's shape inference
  (plus one per output element of every other operator); `counted` runs torch's FlopCounterMode on
  the meta device (nothing is computed) or on one real sample; where neither can count (a Loop, a
  shape only known at run time), `timed` times one forward at the declared shape under the
  checker's CPU-time limit and converts the time at REFERENCE_FLOPS_PER_SECOND.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import onnx
import torch
from torch import nn

log = logging.getLogger(__name__)

# One core of a current server CPU on float32 matrix products (torch, one thread); a timed forward
# is converted at this rate. On a slower machine a timed model looks costlier than it is, never cheaper.
REFERENCE_FLOPS_PER_SECOND = 5e10
PRODUCTS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "MatMulInteger", "ConvInteger", "QLinearMatMul",
            "QLinearConv", "Einsum"}
UNCOUNTABLE = {"Loop", "Scan", "If", "Einsum"}  # work that depends on data or an equation we do not parse


@dataclass(frozen=True)
class Cost:
    parameters: int
    forward_flops: int | None  # None: not countable from the structure (time it)
    how: str  # graph | counted | timed


def _elements(dims: Sequence[int]) -> int:
    return math.prod(int(d) for d in dims) if dims else 1


def onnx_parameters(model: onnx.ModelProto) -> int:
    """Elements of every tensor the graph stores (initializers, sparse ones, Constant attributes, subgraphs)."""
    from models.sources.onnx_model import _tensors

    return sum(_elements(tensor.dims) for _, tensor in _tensors(model.graph))


def _with_input_shape(model: onnx.ModelProto, shape: Sequence[int]) -> onnx.ModelProto | None:
    """A copy of the model whose one graph input has the concrete shape [1, *shape] (None: ranks differ)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    stored = {t.name for t in copy.graph.initializer}
    inputs = [i for i in copy.graph.input if i.name not in stored]
    if len(inputs) != 1:
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) and len(dims) != len(shape) + 1:
        return None
    del dims[:]
    for value in (1, *shape):
        dims.add().dim_value = int(value)
    return copy


def _shapes(model: onnx.ModelProto) -> dict[str, list[int] | None]:
    """Every value's shape after ONNX shape inference (None where a dimension stays unknown)."""
    inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    shapes: dict[str, list[int] | None] = {}
    graph = inferred.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        kind = info.type.WhichOneof("value")
        if kind != "tensor_type" or not info.type.tensor_type.HasField("shape"):
            shapes.setdefault(info.name, None)
            continue
        dims = info.type.tensor_type.shape.dim
        known = all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims)
        shapes[info.name] = [int(d.dim_value) for d in dims] if known else None
    for tensor in graph.initializer:
        shapes[tensor.name] = [int(d) for d in tensor.dims]
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    shapes[node.output[0]] = [int(d) for d in attribute.t.dims]
    return shapes


def _node_flops(node: onnx.NodeProto, shapes: dict[str, list[int] | None]) -> int | None:
    outs = [shapes.get(name) for name in node.output if name]
    if any(shape is None for shape in outs):
        return None
    out = outs[0] or []
    ins = [shapes.get(name) if name else [] for name in node.input]
    if node.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        a = ins[0]
        return None if not a else 2 * _elements(out) * a[-1]
    if node.op_type == "Gemm":
        a = ins[0]
        trans_a = any(attr.name == "transA" and attr.i for attr in node.attribute)
        return None if not a or len(a) != 2 else 2 * _elements(out) * a[0 if trans_a else 1]
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        weight = ins[3 if node.op_type == "QLinearConv" else 1]
        return None if not weight else 2 * _elements(out) * _elements(weight[1:])
    if node.op_type == "ConvTranspose":
        x, weight = ins[0], ins[1]
        return None if not x or not weight else 2 * _elements(x) * _elements(weight[1:])
    return sum(_elements(shape or []) for shape in outs)


def onnx_forward_flops(model: onnx.ModelProto, input_shape: Sequence[int]) -> int | None:
    """FLOPs of one sample's forward counted from the graph, or None when the graph does not say."""
    if any(node.op_type in UNCOUNTABLE for node in model.graph.node):
        return None
    shaped = _with_input_shape(model, input_shape)
    if shaped is None:
        return None
    try:
        shapes = _shapes(shaped)
    except Exception as exc:  # shape inference refuses some graphs: time the forward instead
        log.info("ONNX shape inference failed (%s): the forward will be timed", type(exc).__name__)
        return None
    total = 0
    for node in shaped.graph.node:
        flops = _node_flops(node, shapes)
        if flops is None:
            return None
        total += flops
    return total


def onnx_cost(model: onnx.ModelProto, input_shape: Sequence[int]) -> Cost:
    flops = onnx_forward_flops(model, input_shape)
    return Cost(onnx_parameters(model), flops, "graph" if flops is not None else "timed")


def module_parameters(net: nn.Module) -> int:
    """Elements of the module's parameters and floating-point buffers (its weights as stored)."""
    held = sum(p.numel() for p in net.parameters())
    return held + sum(b.numel() for b in net.buffers() if b.is_floating_point())


def module_flops(net: nn.Module, sample_shape: Sequence[int], device: str | torch.device = "meta") -> int | None:
    """FlopCounterMode's count of one sample's forward (on the meta device: nothing computed); None if it fails."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        x = torch.zeros((1, *sample_shape), device=device)
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net(x)
        return int(counter.get_total_flops())
    except Exception as exc:  # an operator without a meta kernel, data-dependent shapes
        log.info("counting FLOPs on %s failed (%s): the forward will be timed", device, type(exc).__name__)
        return None


def module_cost(net: nn.Module, sample_shape: Sequence[int]) -> Cost:
    """A module built on the meta device: its parameters and, where the meta device runs it, its FLOPs."""
    flops = module_flops(net, sample_shape)
    return Cost(module_parameters(net), flops, "counted" if flops is not None else "timed")


@torch.no_grad()
def timed_flops(model: nn.Module, sample_shape: Sequence[int]) -> tuple[int, float]:
    """(FLOP equivalent, seconds) of one forward of one sample at the declared shape."""
    x = torch.rand((1, *sample_shape))
    start = time.process_time()
    model(x)
    seconds = time.process_time() - start
    return int(seconds * REFERENCE_FLOPS_PER_SECOND), seconds


def run_like_a_job(model: nn.Module, sample_shape: Sequence[int], num_classes: int, samples: int = 4) -> None:
    """A forward and an input gradient on a few inputs of the declared shape (zeros, ones, uniform noise),
    as an evaluate job runs the model; ValueError says what failed."""
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.zeros((1, *sample_shape)), torch.ones((1, *sample_shape)),
                   torch.rand((max(samples - 2, 1), *sample_shape), generator=generator)])
    x.requires_grad_(True)
    try:
        out = model(x)
    except Exception as exc:
        raise ValueError(f"a forward pass on {len(x)} inputs of shape {list(sample_shape)} failed "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())[:200]})") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (len(x), num_classes):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"the model returned {got} for {len(x)} inputs; expected [{len(x)}, {num_classes}]")
    if not bool(torch.isfinite(out).all()):
        raise ValueError("the model returned NaN or infinite values on inputs in [0, 1] (all zeros, all ones or "
                         "uniform noise): an evaluation would be meaningless")
    try:
        loss = torch.nn.functional.cross_entropy(out, torch.zeros(len(x), dtype=torch.long))
        (gradient,) = torch.autograd.grad(loss, x, allow_unused=True)
    except Exception as exc:
        raise ValueError(f"the input gradient the attacks need could not be computed ({type(exc).__name__}: "
                         f"{' '.join(str(exc).split())[:200]})") from None
    if gradient is None:
        log.info("the model's output does not depend on its input (no input gradient)")


__all__ = ["REFERENCE_FLOPS_PER_SECOND", "Cost", "module_cost", "module_flops", "module_parameters",
           "onnx_cost", "onnx_forward_flops", "onnx_parameters", "run_like_a_job", "timed_flops"]
