"""ONNX models: checked as protobuf before anything is built, then converted to a torch module.

Why ONNX is safe to accept (DESIGN §6): an .onnx file is a protobuf message, and reading it runs no
code. What can still hurt is what the message *points to* or *declares*: external data files
(a path such as `../../secrets` read on our side), tensors that declare gigabytes they do not
hold, and operators no converter knows. `inspect_onnx` refuses all of these with a message that
names the tensor or the operators; `convert_onnx` then builds a torch.fx graph with onnx2torch (a
converter per operator, no code from the file), which autograd differentiates, so gradient
attacks run on it exactly as on a native module.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, helper
from torch import nn

from models.sources.errors import ModelSourceError

log = logging.getLogger(__name__)

_DOMAINS = ("", "ai.onnx")
FALLBACK_OPSET = 17
# Elements of each TensorProto data type (variable-size strings have no fixed size: refused).
_ITEM_BYTES: dict[int, int] = {
    TensorProto.FLOAT: 4, TensorProto.DOUBLE: 8, TensorProto.FLOAT16: 2, TensorProto.BFLOAT16: 2,
    TensorProto.INT8: 1, TensorProto.UINT8: 1, TensorProto.INT16: 2, TensorProto.UINT16: 2,
    TensorProto.INT32: 4, TensorProto.UINT32: 4, TensorProto.INT64: 8, TensorProto.UINT64: 8,
    TensorProto.BOOL: 1,
}


def _tensors(graph: onnx.GraphProto) -> Iterator[tuple[str, TensorProto]]:
    """Every tensor the graph stores: initializers, sparse ones, Constant attributes, subgraphs too."""
    for tensor in graph.initializer:
        yield f"initializer {tensor.name!r}", tensor
    for sparse in graph.sparse_initializer:
        yield f"sparse initializer {sparse.values.name!r}", sparse.values
        yield f"sparse initializer {sparse.values.name!r} (indices)", sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            where = f"attribute {attribute.name!r} of node {node.name or node.op_type!r}"
            if attribute.HasField("t"):
                yield where, attribute.t
            for tensor in attribute.tensors:
                yield where, tensor
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def _stored_elements(tensor: TensorProto) -> int | None:
    """How many elements the message really holds (None: a type whose size cannot be checked)."""
    if tensor.data_type not in _ITEM_BYTES:
        return None
    if tensor.raw_data:
        return len(tensor.raw_data) // _ITEM_BYTES[tensor.data_type]
    field = helper.tensor_dtype_to_field(tensor.data_type)
    values = len(getattr(tensor, field))
    # float16/bfloat16/int8/... are packed one per int32; complex types never reach here
    return values


def _check_tensors(model: onnx.ModelProto, name: str, max_bytes: int) -> None:
    declared_total = 0
    for where, tensor in _tensors(model.graph):
        if tensor.data_location == TensorProto.EXTERNAL or len(tensor.external_data) > 0:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise ModelSourceError(
                f"{name}: {where} keeps its data in an external file ({location!r}); external data is "
                "not accepted: export the model with all weights inside the .onnx file "
                "(onnx.save(model, path, save_as_external_data=False))"
            )
        if any(d < 0 for d in tensor.dims):
            raise ModelSourceError(f"{name}: {where} declares a negative dimension {list(tensor.dims)}")
        if tensor.data_type not in _ITEM_BYTES:
            raise ModelSourceError(
                f"{name}: {where} has data type {TensorProto.DataType.Name(tensor.data_type)}, which a "
                "classifier's weights never need: export with float or integer tensors"
            )
        elements = int(np.prod(tensor.dims, dtype=np.float64)) if tensor.dims else 1
        declared = elements * _ITEM_BYTES[tensor.data_type]
        declared_total += declared
        if declared > max_bytes or declared_total > max_bytes:
            raise ModelSourceError(
                f"{name}: {where} declares {declared:,} bytes ({list(tensor.dims)}), and the model's "
                f"tensors {declared_total:,} in all, over the limit of {max_bytes:,} bytes: "
                "upload a smaller model"
            )
        stored = _stored_elements(tensor)
        if stored is not None and stored != elements:
            raise ModelSourceError(
                f"{name}: {where} declares {elements:,} elements ({list(tensor.dims)}) but holds "
                f"{stored:,}: the file is damaged or was edited; export it again"
            )


def _unsupported(model: onnx.ModelProto) -> tuple[int, list[str]]:
    """The default-domain opset and the operators onnx2torch has no converter for at it."""
    from onnx2torch.node_converters.registry import get_converter

    opsets = {o.domain or "": o.version for o in model.opset_import}
    version = opsets.get("", opsets.get("ai.onnx", 0))
    missing = []
    for op_type in sorted({n.op_type for n in model.graph.node}):
        try:
            get_converter(op_type, version, "")
        except NotImplementedError:
            missing.append(op_type)
    return version, missing


def _convertible(model: onnx.ModelProto, name: str) -> onnx.ModelProto:
    """The model, or the same graph at an older opset, with a converter for every operator.

    Exporters default to recent opsets (torch 2.13: 20) whose versions of common operators (e.g.
    Constant-19) onnx2torch does not know; ONNX's own version converter rewrites such a graph to
    opset 17 without changing what it computes, so it is tried before refusing.
    """
    custom = sorted({f"{n.domain}::{n.op_type}" for n in model.graph.node if n.domain not in _DOMAINS})
    if custom:
        raise ModelSourceError(
            f"{name} uses custom-domain operators ({', '.join(custom)}), which cannot be converted: "
            "export with standard ONNX operators only"
        )
    version, missing = _unsupported(model)
    if missing and version > FALLBACK_OPSET:
        try:
            older = onnx.version_converter.convert_version(model, FALLBACK_OPSET)
        except Exception:  # the converter refuses some graphs: report the original problem
            older = None
        if older is not None and not _unsupported(older)[1]:
            log.info("%s: opset %d rewritten to %d for conversion", name, version, FALLBACK_OPSET)
            return older
    if missing:
        raise ModelSourceError(
            f"{name} uses operators that cannot be converted to a differentiable torch module at opset "
            f"{version}: {', '.join(missing)}; re-export without them (or with another opset, e.g. "
            "torch.onnx.export(..., opset_version=17))"
        )
    return model


def inspect_onnx(path: Path, max_bytes: int) -> onnx.ModelProto:
    """Read and check an ONNX file without converting it; ModelSourceError says what is wrong."""
    name = path.name
    size = path.stat().st_size
    if size > max_bytes:
        raise ModelSourceError(f"{name} has {size:,} bytes, over the limit of {max_bytes:,}: upload a smaller model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: nothing ran, the bytes are just bad
        raise ModelSourceError(
            f"{name} is not a readable ONNX file ({type(exc).__name__}): it may be truncated or not ONNX; "
            "export it again with torch.onnx.export / tf2onnx"
        ) from None
    if not model.graph.node:
        raise ModelSourceError(f"{name} holds no ONNX graph (no nodes): is it an ONNX model file?")
    _check_tensors(model, name, max_bytes)
    model = _convertible(model, name)
    inputs = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1 or len(model.graph.output) < 1:
        raise ModelSourceError(
            f"{name} has {len(inputs)} graph inputs ({', '.join(inputs) or 'none'}) and "
            f"{len(model.graph.output)} outputs: robustlab evaluates classifiers with one input (the image "
            "batch) and the logits or probabilities as first output"
        )
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else "invalid graph"
        raise ModelSourceError(f"{name} is not a valid ONNX graph ({first}): export it again") from None
    return model


class _FirstOutput(nn.Module):
    """The converted graph's first output (a graph may also return e.g. features)."""

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, x):  # type: ignore[no-untyped-def]
        out = self.graph(x)
        return out[0] if isinstance(out, tuple | list) else out


def convert_onnx(model: onnx.ModelProto, name: str) -> nn.Module:
    """A differentiable torch module computing what the checked ONNX graph computes."""
    from onnx2torch import convert

    try:
        graph = convert(model)
    except (NotImplementedError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        message = " ".join(str(exc).split())[:300]
        raise ModelSourceError(f"{name} could not be converted to torch ({type(exc).__name__}: {message})") from None
    log.info("converted ONNX model %s (%d nodes)", name, len(model.graph.node))
    return _FirstOutput(graph)


def load_onnx(path: Path, max_bytes: int) -> nn.Module:
    return convert_onnx(inspect_onnx(path, max_bytes), path.name)
