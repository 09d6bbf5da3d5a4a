"""BPDA (Athalye et al. 2018): a straight-through backward for non-differentiable input transforms.

`straight_through(model)` traces the model with torch.fx (an onnx2torch conversion already is a
GraphModule) and replaces rounding (round, floor, ceil, trunc), sign, casts to integer types and
fake quantization with the same forward and an identity backward. The twin computes exactly the
model's outputs (its verdicts are the model's), while its input gradient is the one of the model
with the transforms taken as the identity: the gradient an attack needs against input quantization,
bit-depth reduction or JPEG-like rounding. None when the model cannot be traced or holds none of
those operations.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, fx, nn

log = logging.getLogger(__name__)

_INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


class _Identity(torch.autograd.Function):
    """forward: the transform's value; backward: the incoming gradient unchanged."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, value: Tensor) -> Tensor:
        return value

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _through(fn: Callable[..., Tensor], x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        return fn(x, *args, **kwargs)
    with torch.no_grad():
        value = fn(x.detach(), *args, **kwargs)
    if not value.is_floating_point():  # a cast to an integer type: keep the values, in x's dtype
        value = value.to(x.dtype)
    return _Identity.apply(x, value)  # type: ignore[no-any-return,no-untyped-call]


def st_round(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return _through(torch.round, x, *args, **kwargs)


def st_floor(x: Tensor) -> Tensor:
    return _through(torch.floor, x)


def st_ceil(x: Tensor) -> Tensor:
    return _through(torch.ceil, x)


def st_trunc(x: Tensor) -> Tensor:
    return _through(torch.trunc, x)


def st_sign(x: Tensor) -> Tensor:
    return _through(torch.sign, x)


def st_cast(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    """x.to(integer dtype) / x.int() / x.long() ...: truncation toward zero, kept in x's dtype."""
    return _through(torch.trunc, x) if isinstance(x, Tensor) and x.is_floating_point() else x.to(*args, **kwargs)


def st_fake_quantize(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    return _through(torch.fake_quantize_per_tensor_affine, x, *args, **kwargs)


_FUNCTIONS: dict[Any, Callable[..., Tensor]] = {
    torch.round: st_round, torch.floor: st_floor, torch.ceil: st_ceil, torch.trunc: st_trunc,
    torch.sign: st_sign, torch.fake_quantize_per_tensor_affine: st_fake_quantize,
}
_METHODS: dict[str, Callable[..., Tensor]] = {
    "round": st_round, "floor": st_floor, "ceil": st_ceil, "trunc": st_trunc, "sign": st_sign,
    "int": st_cast, "long": st_cast, "short": st_cast, "byte": st_cast, "char": st_cast,
}


class _StraightThroughModule(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return _through(self.fn, x)


def _module_replacement(module: nn.Module) -> nn.Module | None:
    """onnx2torch's modules for Round / Floor / Ceil, Sign and Cast to an integer type."""
    name = type(module).__name__
    if name == "OnnxRound":
        return _StraightThroughModule(module.round_function)  # type: ignore[arg-type]
    if name == "OnnxFunction" and getattr(module, "function", None) is torch.sign:
        return _StraightThroughModule(torch.sign)
    if name == "OnnxCast" and getattr(module, "torch_dtype", None) in _INTEGER:
        return _StraightThroughModule(torch.trunc)
    return None


def _is_integer_cast(node: fx.Node) -> bool:
    if node.op != "call_method" or node.target not in ("to", "type"):
        return False
    values = list(node.args[1:]) + list(node.kwargs.values())
    return any(v in _INTEGER for v in values)


def _rewrite(graph_module: fx.GraphModule) -> list[str]:
    """Replace the transforms of one graph in place; the operations replaced."""
    replaced: list[str] = []
    for node in list(graph_module.graph.nodes):
        if node.op == "call_function" and node.target in _FUNCTIONS:
            replaced.append(getattr(node.target, "__name__", str(node.target)))
            node.target = _FUNCTIONS[node.target]
        elif node.op == "call_method" and node.target in _METHODS:
            replaced.append(str(node.target))
            node.op, node.target = "call_function", _METHODS[str(node.target)]
        elif _is_integer_cast(node):
            replaced.append(f"{node.target}(integer)")
            node.op, node.target = "call_function", st_cast
        elif node.op == "call_module":
            module = graph_module.get_submodule(str(node.target))
            replacement = _module_replacement(module)
            if replacement is not None:
                replaced.append(f"{type(module).__name__}:{node.target}")
                graph_module.add_submodule(str(node.target), replacement)
    if replaced:
        graph_module.graph.lint()
        graph_module.recompile()
    return replaced


def _traced(module: nn.Module, opaque: set[int] | None = None) -> nn.Module:
    """`module` as an fx graph where torch.fx can trace it; where it cannot (data-dependent control
    flow, e.g. our input convolution's fast path), its children are made graphs the same way and the
    module is traced again with every part found untraceable kept whole (a leaf: `opaque`, shared by
    the whole recursion), so the transforms in every traceable forward around them are found.
    Returns the module as it was when even that fails."""
    kept: set[int] = set() if opaque is None else opaque
    if isinstance(module, fx.GraphModule):
        return module

    class _Lenient(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
            return id(m) in kept or super().is_leaf_module(m, qualified_name)

    try:
        return fx.GraphModule(module, _Lenient().trace(module))
    except Exception as error:
        log.debug("BPDA: torch.fx cannot trace %s as a whole (%s)", type(module).__name__, error)
    children = list(module.named_children())
    for name, child in children:
        traced = _traced(child, kept)
        if isinstance(traced, fx.GraphModule):
            setattr(module, name, traced)
        else:
            kept.add(id(child))
    try:
        if children:
            return fx.GraphModule(module, _Lenient().trace(module))
    except Exception as error:
        log.info("BPDA: torch.fx cannot trace %s even with its untraceable parts kept whole (%s)",
                 type(module).__name__, error)
    return module


def straight_through(model: nn.Module, probe: Tensor | None = None) -> tuple[nn.Module, list[str]] | None:
    """(the twin, the operations replaced), or None: not traceable, nothing to replace, or the twin's
    outputs differ from the model's on `probe` (inputs in [0, 1]). Parts torch.fx cannot trace are
    kept whole (`_traced`); graphs the model holds already (an onnx2torch conversion) are rewritten
    as they are."""
    twin = _traced(copy.deepcopy(model))
    graphs = [m for m in twin.modules() if isinstance(m, fx.GraphModule)]
    replaced = [name for graph in graphs for name in _rewrite(graph)]
    if not replaced:
        return None
    twin.eval()
    if probe is not None:
        with torch.no_grad():
            try:
                same = torch.equal(twin(probe), model(probe))
            except Exception as error:
                log.info("BPDA: the straight-through twin does not run (%s)", error)
                return None
        if not same:
            return None
    return twin, replaced
