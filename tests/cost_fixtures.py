"""ONNX graphs that cost more than their size says, and one whose weights are Constant nodes.

Built with onnx.helper (a few KB each), for the upload checker's measurement tests (unit) and the
upload limits over HTTP (integration): the CPU bomb of issue 21 (40 MatMuls of 4096² on a matrix
that ConstantOfShape makes out of nothing), a graph whose cost only a timed forward can tell, and
a parameter-free classifier (weights in Constant nodes: model.parameters() is empty).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 17)]
SECTION_VECTOR = {"format": "onnx", "input_shape": [64], "num_classes": 10}


def _save(nodes: list[onnx.NodeProto], path: Path, width: int = 64, classes: int = 10,
          initializers: list[TensorProto] | None = None) -> Path:
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])],
                              initializers or [])
    onnx.save(helper.make_model(graph, opset_imports=OPSET), str(path))
    return path


def _constant(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array.astype(np.float32), name))


def constant_weights(path: Path, seed: int = 0) -> Path:
    """A linear classifier on 64 inputs whose weight and bias are Constant nodes (no initializers)."""
    rng = np.random.default_rng(seed)
    return _save([_constant("w", rng.normal(0, 0.3, (64, 10))), _constant("b", rng.normal(0, 0.1, (10,))),
                  helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])], path)


def matmul_bomb(path: Path, size: int = 4096, layers: int = 40) -> Path:
    """A few KB whose forward multiplies a size x size matrix by itself `layers` times (2·size³ FLOPs each)."""
    nodes = [helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(
                 np.array([size, size], np.int64), "shape")),
             helper.make_node("ConstantOfShape", ["shape"], ["m0"], value=numpy_helper.from_array(
                 np.array([1e-4], np.float32), "v"))]
    for i in range(layers):
        nodes.append(helper.make_node("MatMul", [f"m{i}", f"m{i}"], [f"m{i + 1}"]))
    nodes += [helper.make_node("ReduceSum", [f"m{layers}"], ["s"], keepdims=0),
              _constant("w", np.full((64, 10), 0.01)),
              helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "s"], ["y"])]
    return _save(nodes, path)


def uncountable(path: Path) -> Path:
    """A linear classifier plus a NonZero (an output shape only known at run time): its cost is timed."""
    rng = np.random.default_rng(1)
    return _save([_constant("w", rng.normal(0, 0.3, (64, 10))), helper.make_node("NonZero", ["x"], ["nz"]),
                  helper.make_node("Shape", ["nz"], ["nzs"]),
                  helper.make_node("MatMul", ["x", "w"], ["y"])], path)
