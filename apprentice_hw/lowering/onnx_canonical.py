"""Bring any quantized ONNX model into the one form the integer lowering matches.

Accepted inputs: this project's QCDQ export, QONNX (``Quant`` nodes; converted with qonnx), and
QDQ models from other tools (ONNX Runtime's ``quantize_static``, ...). The canonical form has:

- weights as integer initializers feeding ``DequantizeLinear`` directly: constant subgraphs
  that compute them (``Constant -> Clip``, ``QuantizeLinear(float weight)``) are evaluated with
  ONNX's reference evaluator, so the integer values are exactly what ONNX semantics define;
- a free batch dimension on the single graph input;
- a zero ``Pad`` of the spatial axes that feeds only convolutions folded into their ``pads``
  (TVM imports ``Pad`` as an opaque kernel call, behind which a conv's dequantized input is
  no longer seen: exporters that pad explicitly, TensorFlow's "same", would keep it float).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from apprentice_hw.errors import UserError

QONNX_DOMAINS = ("qonnx.custom_op.general", "onnx.brevitas")
FOLDABLE_OPS = frozenset(
    {"Clip", "QuantizeLinear", "Transpose", "Identity", "Cast", "Reshape", "Neg", "Squeeze",
     "Unsqueeze", "Mul", "Div", "Add", "Sub"}
)  # fmt: skip


def is_qonnx(model: onnx.ModelProto) -> bool:
    return any(node.domain in QONNX_DOMAINS for node in model.graph.node)


def qonnx_to_qcdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """Convert QONNX ``Quant`` nodes to QuantizeLinear/Clip/DequantizeLinear with qonnx."""
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.qonnx_to_qcdq import QuantToQCDQ
    from qonnx.util.cleanup import cleanup_model

    wrapper = cleanup_model(ModelWrapper(model))
    wrapper = wrapper.transform(QuantToQCDQ())
    leftover = sorted({n.op_type for n in wrapper.graph.node if n.domain in QONNX_DOMAINS})
    if leftover:
        raise UserError(
            f"QONNX nodes {', '.join(leftover)} have no QCDQ equivalent (e.g. bit widths above 8 "
            "or non-zero zero points); export the model as QCDQ instead"
        )
    return wrapper.model


def graph_input(model: onnx.ModelProto) -> onnx.ValueInfoProto:
    """The model's single data input (graph inputs that are initializers do not count)."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs) or "none"
        raise UserError(f"the model must have exactly one input, it has: {names}")
    return inputs[0]


def _constants_to_initializers(graph: onnx.GraphProto) -> None:
    keep = []
    for node in graph.node:
        if (
            node.op_type == "Constant"
            and len(node.attribute) == 1
            and node.attribute[0].name == "value"
        ):
            tensor = onnx.TensorProto()
            tensor.CopyFrom(node.attribute[0].t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _evaluate(node: onnx.NodeProto, values: dict[str, np.ndarray], model: onnx.ModelProto):
    """Run one node on constant inputs with ONNX's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    inputs = [name for name in node.input if name]
    declared = [
        helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(values[name].dtype), values[name].shape
        )
        for name in inputs
    ]
    outputs = [helper.make_empty_tensor_value_info(name) for name in node.output]
    single = helper.make_model(
        helper.make_graph([node], "fold", declared, outputs), opset_imports=model.opset_import
    )
    return ReferenceEvaluator(single).run(None, {name: values[name] for name in inputs})


def _fold_constant_nodes(model: onnx.ModelProto) -> None:
    """Evaluate nodes whose inputs are all initializers (in graph order, so chains fold)."""
    graph = model.graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    keep = []
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if node.op_type in FOLDABLE_OPS and inputs and all(name in values for name in inputs):
            for name, value in zip(node.output, _evaluate(node, values, model), strict=True):
                values[name] = np.asarray(value)
                graph.initializer.append(numpy_helper.from_array(values[name], name))
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    unused = [init for init in graph.initializer if init.name not in used]
    for init in unused:
        graph.initializer.remove(init)


def _free_batch_dimension(model: onnx.ModelProto) -> None:
    data_input = graph_input(model)
    dims = data_input.type.tensor_type.shape.dim
    if dims:
        dims[0].ClearField("dim_value")
        dims[0].dim_param = "batch"
    for output in model.graph.output:
        out_dims = output.type.tensor_type.shape.dim
        if out_dims:
            out_dims[0].ClearField("dim_value")
            out_dims[0].dim_param = "batch"
    # Shapes recorded for intermediate tensors would pin the old batch size.
    del model.graph.value_info[:]


def _spatial_pads(node: onnx.NodeProto, values: dict[str, np.ndarray]) -> list[int] | None:
    """A 4-D constant ``Pad`` of zeros on H and W only: its [top, left, bottom, right]."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    mode = attributes.get("mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return None
    if len(node.input) > 1:  # opset 11+: pads, constant_value, axes as inputs
        pads = values.get(node.input[1])
        filled = len(node.input) > 2 and node.input[2]
        if filled and node.input[2] not in values:  # a fill value computed at run time
            return None
        value = values.get(node.input[2]) if filled else None
        if pads is None or (len(node.input) > 3 and node.input[3]):
            return None
        pads = [int(p) for p in pads.reshape(-1)]
    else:
        pads, value = list(attributes.get("pads", [])), attributes.get("value", 0.0)
    if value is not None and float(np.asarray(value).reshape(-1)[0]) != 0.0:
        return None
    if len(pads) != 8 or any(pads[i] for i in (0, 1, 4, 5)) or min(pads) < 0:
        return None
    return [pads[2], pads[3], pads[6], pads[7]]


def _fold_pads_into_convs(graph: onnx.GraphProto) -> None:
    """``Pad(zeros on H, W) -> Conv`` as one ``Conv`` with the pads added to its own."""
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    folded = []
    for node in graph.node:
        users = consumers.get(node.output[0], []) if node.op_type == "Pad" else []
        pads = _spatial_pads(node, values) if users else None
        if pads is None or node.output[0] in outputs:
            continue
        if not all(u.op_type == "Conv" and u.input[0] == node.output[0] for u in users):
            continue
        attributes = [{a.name: helper.get_attribute_value(a) for a in u.attribute} for u in users]
        if any(a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") for a in attributes):
            continue
        for user, attrs in zip(users, attributes, strict=True):
            own = list(attrs.get("pads", [0, 0, 0, 0]))
            total = [a + b for a, b in zip(own, pads, strict=True)]
            kept = [a for a in user.attribute if a.name != "pads"]
            del user.attribute[:]
            user.attribute.extend([*kept, helper.make_attribute("pads", total)])
            user.input[0] = node.input[0]
        folded.append(node)
    for node in folded:
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input}
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)  # the folded Pads' pads and values


def canonicalize(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` in the canonical quantized form (see the module docstring)."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if is_qonnx(result):
        result = qonnx_to_qcdq(result)
    graph = result.graph
    _constants_to_initializers(graph)
    _fold_constant_nodes(result)
    _fold_pads_into_convs(graph)
    _free_batch_dimension(result)
    return result
