"""A trained network as an ONNX graph, for standard runtimes (onnxruntime and others).

The graph takes RAW rows, as ``/predict`` does: the standardization fitted on the
training split comes first, then every layer (MatMul, Add, the activation), then the
softmax of a classifier or, for a regression, the map back to the targets' units. The
class names travel as metadata (``class_names``, JSON). The arithmetic is the same as
:meth:`common.nn.Network.predict`, in the network's dtype.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from common.nn import Network

OPSET = 17
ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softmax": "Softmax"}


def to_onnx(net: Network, graph_name: str) -> bytes:
    """The serialized ONNX model of ``net`` (with its preprocessing)."""
    import onnx
    from onnx import helper

    builder = _Graph(net.dtype)
    value = "input"
    pre = net.preprocessing
    if pre.x_mean is not None and pre.x_inv_scale is not None:
        value = builder.op("Sub", value, builder.constant("x_mean", pre.x_mean))
        value = builder.op("Mul", value, builder.constant("x_inv_scale", pre.x_inv_scale))
    for number, (layer, spec) in enumerate(zip(net.layers, net.spec.layers, strict=True), 1):
        value = builder.op("MatMul", value, builder.constant(f"W{number}", layer.W))
        value = builder.op("Add", value, builder.constant(f"b{number}", layer.b))
        if spec.activation in ACTIVATIONS:
            extra = {"axis": -1} if spec.activation == "softmax" else {}
            value = builder.op(ACTIVATIONS[spec.activation], value, **extra)
    if not net.classifies and pre.y_mean is not None and pre.y_inv_scale is not None:
        value = builder.op("Div", value, builder.constant("y_inv_scale", pre.y_inv_scale))
        value = builder.op("Add", value, builder.constant("y_mean", pre.y_mean))
    builder.nodes.append(helper.make_node("Identity", [value], ["output"]))
    element = builder.element
    graph = helper.make_graph(
        builder.nodes, graph_name,
        [helper.make_tensor_value_info("input", element, ["rows", net.input_dim])],
        [helper.make_tensor_value_info("output", element, ["rows", net.output_dim])],
        initializer=builder.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="syncsgd")
    model.ir_version = 8  # readable by onnxruntime releases of the last few years
    helper.set_model_props(model, {"class_names": json.dumps(pre.class_names),
                                   "task": "classification" if net.classifies else "regression"})
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


class _Graph:
    """Nodes and initializers, with fresh value names."""

    def __init__(self, dtype: np.dtype[Any]):
        from onnx import TensorProto

        self.dtype = dtype
        self.element = TensorProto.FLOAT if dtype == np.float32 else TensorProto.DOUBLE
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def constant(self, name: str, values: Any) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(
            np.ascontiguousarray(values, dtype=self.dtype), name))
        return name

    def op(self, kind: str, *inputs: str, **attributes: Any) -> str:
        from onnx import helper

        output = f"v{len(self.nodes)}_{kind.lower()}"
        self.nodes.append(helper.make_node(kind, list(inputs), [output], **attributes))
        return output
