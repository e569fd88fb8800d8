"""Per-layer costs read from a QCDQ ONNX graph: shapes, MACs, bit-operations, bytes.

The shape-only view of the paper's Figure 1: weights are parameters x weight bits / 8, and the
activations a layer produces are its output elements x the bits of the quantizer that stores
them / 8 (per image; times the batch). Shapes come from ONNX shape inference, weight bits from
the integer range of the weight's ``Clip`` (or its storage type), output bits from the first
``QuantizeLinear`` (and ``Clip``) downstream of the layer, so the numbers follow the exported
graph, not the recipe's intentions. The compiled module's own byte counts (``memory.py``) are
checked against these.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import onnx
from onnx import numpy_helper

LAYER_OPS = ("Conv", "Gemm", "MatMul")
PASS_THROUGH = ("BatchNormalization", "Relu", "Add", "Clip", "MaxPool", "Identity", "Flatten",
                "Reshape", "GlobalAveragePool", "AveragePool", "ReduceMean")  # fmt: skip


@dataclass(frozen=True)
class LayerCost:
    """One conv / dense layer at batch 1."""

    name: str
    kind: str  # "conv2d" or "dense"
    input_shape: tuple[int, ...]  # without the batch dimension
    output_shape: tuple[int, ...]
    parameters: int  # weights only (the bias is counted with the scales)
    macs: int
    weight_bits: int  # 32 for a float layer
    act_bits: int  # bits of the layer's input activations
    output_bits: int  # bits its outputs are stored with (32 when nothing quantizes them)

    @property
    def bit_operations(self) -> int:
        """MACs x weight bits x activation bits: the cost measure of bit-serial hardware."""
        return self.macs * self.weight_bits * self.act_bits

    @property
    def weight_bytes(self) -> float:
        return self.parameters * self.weight_bits / 8

    def output_bytes(self, batch: int = 1) -> float:
        return math.prod(self.output_shape) * batch * self.output_bits / 8

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(bit_operations=self.bit_operations, weight_bytes=self.weight_bytes,
                    output_bytes_batch_1=self.output_bytes(1))  # fmt: skip
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in data.items()}


def constant_values(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every initializer and Constant node output of ``model``, by tensor name."""
    values = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    return values


def _range_bits(low: float, high: float) -> int:
    return max(1, math.ceil(math.log2(high - low + 1)))


def _shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape without its (possibly symbolic) batch dimension."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {}
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims:
            shapes[value.name] = tuple(d.dim_value for d in dims[1:])
    return shapes


class _Graph:
    """Producers, consumers and constants of a QCDQ graph, for walking around a layer."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.constants = constant_values(model)
        self.producer = {out: node for node in model.graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in model.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def quantized_bits(self, quantize) -> int:
        """Bits of a QuantizeLinear's codes: its Clip's range, or its zero point's type."""
        for consumer in self.consumers.get(quantize.output[0], []):
            if consumer.op_type == "Clip" and len(consumer.input) == 3:
                low, high = (self.constants.get(name) for name in consumer.input[1:])
                if low is not None and high is not None:
                    return _range_bits(float(low), float(high))
        zero = self.constants.get(quantize.input[2]) if len(quantize.input) > 2 else None
        return 8 * (zero.dtype.itemsize if zero is not None else 1)

    def weight_bits(self, name: str) -> tuple[int, int]:
        """(bits, parameter count) of a layer's weight input, followed back to its codes
        (through the Transpose of a ``MatMul(x, Transpose(W))`` layer)."""
        node = self.producer.get(name)
        if node is not None and node.op_type == "Transpose":
            node = self.producer.get(node.input[0])
        if node is None or node.op_type != "DequantizeLinear":
            values = self.constants.get(name)
            return 32, int(values.size) if values is not None else 0
        source = self.producer.get(node.input[0])
        if source is not None and source.op_type == "Clip":
            low, high = (self.constants.get(n) for n in source.input[1:3])
            codes = self.constants.get(source.input[0])
            return _range_bits(float(low), float(high)), int(codes.size)
        codes = self.constants.get(node.input[0])
        return 8 * codes.dtype.itemsize, int(codes.size)

    def input_bits(self, name: str) -> int:
        node = self.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear":
            return 32
        source = self.producer.get(node.input[0])
        if source is not None and source.op_type == "Clip":
            source = self.producer.get(source.input[0])
        return self.quantized_bits(source) if source is not None else 32

    def output_bits(self, name: str) -> int:
        """Bits of the first quantizer downstream of tensor ``name`` (32 when there is none)."""
        frontier, seen = [name], set()
        while frontier:
            tensor = frontier.pop(0)
            for consumer in self.consumers.get(tensor, []):
                if consumer.op_type == "QuantizeLinear":
                    return self.quantized_bits(consumer)
                if consumer.op_type in PASS_THROUGH and consumer.name not in seen:
                    seen.add(consumer.name)
                    frontier.extend(consumer.output)
        return 32


def layer_costs(model: onnx.ModelProto) -> list[LayerCost]:
    """The conv and dense layers of ``model`` in graph order, with their costs at batch 1."""
    graph, shapes, layers = _Graph(model), _shapes(model), []
    for node in model.graph.node:
        if node.op_type not in LAYER_OPS or len(node.input) < 2:
            continue
        weight_bits, parameters = graph.weight_bits(node.input[1])
        out_shape = shapes.get(node.output[0], ())
        in_shape = shapes.get(node.input[0], ())
        if node.op_type == "Conv":
            # Each output element sums (input channels / groups) x KH x KW products.
            per_output = parameters // int(out_shape[0]) if out_shape else 0
            kind, macs = "conv2d", math.prod(out_shape) * per_output
        else:
            kind, macs = "dense", parameters
        layers.append(LayerCost(
            name=node.name or node.output[0], kind=kind, input_shape=in_shape,
            output_shape=out_shape, parameters=parameters, macs=macs, weight_bits=weight_bits,
            act_bits=graph.input_bits(node.input[0]), output_bits=graph.output_bits(node.output[0]),
        ))  # fmt: skip
    return layers


def activation_bytes(layers: list[LayerCost], batch: int) -> float:
    """The paper's activation footprint: every conv and FC output, stored at its bits."""
    return sum(layer.output_bytes(batch) for layer in layers)


def weight_bytes(layers: list[LayerCost]) -> float:
    return sum(layer.weight_bytes for layer in layers)
