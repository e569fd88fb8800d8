"""Integer lowering: packing, every kernel strategy, foreign QDQ models and QONNX input.

Kernel checks use power-of-two scales and small integers, so the float (fake-quant) graph in
ONNX Runtime is exact too: the integer module must then equal it bit for bit.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

from apprentice_hw.backends import compile_module, prepare_module
from apprentice_hw.hardware import get_target
from apprentice_hw.lowering.packing import (
    bitserial_conv_weights,
    pack_channel_bits,
    pack_rows,
    packed_row_bytes,
    signed_bits_needed,
    unpack_rows,
    weight_planes,
)
from apprentice_hw.verify import run_module_outputs, run_onnxruntime_outputs

BIT_WIDTHS = st.integers(min_value=2, max_value=8)


@st.composite
def signed_rows(draw):
    bits = draw(BIT_WIDTHS)
    shape = (draw(st.integers(1, 4)), draw(st.integers(1, 40)))
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return bits, draw(hnp.arrays(np.int8, shape, elements=st.integers(low, high)))


@settings(max_examples=200, deadline=None)
@given(signed_rows())
def test_packing_round_trips_for_every_bit_width(case):
    bits, values = case
    packed = pack_rows(values, bits)
    assert packed.dtype == np.uint8
    assert packed.shape == (values.shape[0], packed_row_bytes(values.shape[1], bits))
    np.testing.assert_array_equal(unpack_rows(packed, bits, values.shape[1]), values)


@pytest.mark.parametrize(("bits", "per_byte"), [(2, 4), (3, 2), (4, 2), (8, 1)])
def test_packed_sizes_are_the_trained_precision(bits, per_byte):
    values = np.zeros((16, 64), dtype=np.int8)
    assert pack_rows(values, bits).nbytes == 16 * 64 // per_byte


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.int8, (3, 5, 2, 2), elements=st.integers(-8, 7)))
def test_weight_planes_sum_back_to_the_weights(values):
    planes = weight_planes(values)
    total = sum(coefficient * mask.astype(np.int64) for coefficient, mask in planes)
    np.testing.assert_array_equal(total, values)
    assert len(planes) == (2 if np.abs(values).max(initial=0) <= 1 else signed_bits_needed(values))


@settings(max_examples=50, deadline=None)
@given(hnp.arrays(np.uint8, (2, 11, 3, 1), elements=st.integers(0, 1)))
def test_channel_bits_pack_eight_channels_per_byte(masks):
    packed = pack_channel_bits(masks)
    assert packed.shape == (2, 2, 3, 1)
    for channel in range(11):
        bit = (packed[:, channel // 8] >> (channel % 8)) & 1
        np.testing.assert_array_equal(bit, masks[:, channel])


# -- kernels, on hand-written QCDQ graphs -----------------------------------------------------


@pytest.mark.parametrize(("bits", "group", "length"), [(2, 4, 64), (3, 1, 32), (4, 1, 32)])
def test_blocked_packing_round_trips_in_whole_vectors(bits, group, length):
    """Conv weights packed in the kernels' block order come back exactly; a 2-bit group is
    four input blocks in 64 bytes (each block one whole vector), padded with zero weights."""
    from apprentice_hw.lowering.packing import blocked_conv_weights, pack_blocked, unpack_blocked

    high = (1 << (bits - 1)) - 1
    weights = np.random.default_rng(bits).integers(-high - 1, high + 1, size=(20, 13, 3, 3))
    blocked = blocked_conv_weights(weights)  # (2, 4, 3, 3, 64): 13 channels in 4 blocks
    packed = pack_blocked(blocked, bits)
    assert packed.shape == (2, -(-4 // group), 3, 3, length)
    unpacked = unpack_blocked(packed, bits)
    np.testing.assert_array_equal(unpacked[:, :4], blocked)
    assert not unpacked[:, 4:].any()


def _qcdq_layer(kind, weights, act_bits, zero_point=0, conv=None, per_channel=True):
    """x -> QuantizeLinear -> Clip -> DequantizeLinear -> Conv/Gemm(W dequantized) -> y
    (a grouped conv: ``conv["group"]`` groups of ``weights.shape[1]`` input channels)."""
    act_scale, out = np.float32(2.0**-4), weights.shape[0]
    w_scale = (2.0 ** -np.arange(2, 2 + out) if per_channel else np.full(out, 2.0**-3)).astype(
        np.float32
    )
    high = min(255, zero_point + (1 << act_bits) - 1)
    inits = [
        numpy_helper.from_array(np.array(act_scale), "xs"),
        numpy_helper.from_array(np.array(zero_point, np.uint8), "xz"),
        numpy_helper.from_array(np.array(zero_point, np.uint8), "lo"),
        numpy_helper.from_array(np.array(high, np.uint8), "hi"),
        numpy_helper.from_array(weights.astype(np.int8), "w"),
        numpy_helper.from_array(w_scale, "ws"),
        numpy_helper.from_array(np.zeros(out, np.int8), "wz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("Clip", ["xq", "lo", "hi"], ["xc"]),
        helper.make_node("DequantizeLinear", ["xc", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"], axis=0),
    ]
    if kind == "conv":
        nodes.append(helper.make_node("Conv", ["xd", "wd"], ["y"], **conv))
        in_shape = [None, weights.shape[1] * conv.get("group", 1), 9, 9]
    else:
        nodes.append(helper.make_node("Gemm", ["xd", "wd"], ["y"], transB=1))
        in_shape = [None, weights.shape[1]]
    graph = helper.make_graph(
        nodes, "layer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(np.int8, st.tuples(st.integers(1, 20), st.integers(1, 40), st.integers(1, 3),
                                  st.integers(1, 3)), elements=st.integers(-2, 1))
)  # fmt: skip
def test_bitserial_weight_blocks_hold_every_weight_once(weights):
    """The bit-serial kernel's blocks (8 output x 16 input channels, two bytes per plane)
    unpack to the weights, zeros in the padding."""
    coefficients, blocks = bitserial_conv_weights(weights)
    out_ch, in_ch, kh, kw = weights.shape
    assert blocks.shape == (-(-out_ch // 8), -(-in_ch // 16), kh, kw, len(coefficients), 8, 2)
    bits = np.unpackbits(blocks[..., None], axis=-1, bitorder="little")  # (..., P, 8, 2, 8)
    # (OB, CB, KH, KW, P, 8, 16) -> (P, OB x 8, CB x 16, KH, KW)
    masks = bits.reshape(*blocks.shape[:-1], 16).transpose(4, 0, 5, 1, 6, 2, 3)
    masks = masks.reshape(len(coefficients), blocks.shape[0] * 8, blocks.shape[1] * 16, kh, kw)
    total = sum(c * m.astype(np.int64) for c, m in zip(coefficients, masks, strict=True))
    np.testing.assert_array_equal(total[:out_ch, :in_ch], weights)
    assert not total[out_ch:].any() and not total[:, in_ch:].any()


def _run_both(model, kernel, shape):
    inputs = np.random.default_rng(0).random((4, *shape), dtype=np.float32) * 2
    expected = run_onnxruntime_outputs(model, inputs)[0]
    prepared = prepare_module(model, get_target("x86-host"), batch=1, kernel=kernel)
    got = run_module_outputs(compile_module(prepared.mod, get_target("x86-host")), inputs)[0]
    return expected, got, prepared.layers


CONV_CASES = [
    ("int8", 8, 8, {"pads": [1, 1, 1, 1]}),
    ("packed", 4, 4, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ("packed", 2, 8, {"pads": [0, 1, 2, 1], "dilations": [2, 2]}),
    ("packed", 3, 4, {"pads": [1, 1, 1, 1]}),
    ("bitserial", 2, 2, {"pads": [1, 1, 1, 1]}),
    ("bitserial", 2, 1, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
]


@pytest.mark.parametrize(("kernel", "weight_bits", "act_bits", "conv"), CONV_CASES)
def test_conv_kernels_are_exact(kernel, weight_bits, act_bits, conv):
    rng = np.random.default_rng(weight_bits)
    high = (1 << (weight_bits - 1)) - 1
    weights = rng.integers(-high, high + 1, size=(6, 10, 3, 3))
    model = _qcdq_layer("conv", weights, act_bits, conv={"kernel_shape": [3, 3], **conv})
    expected, got, layers = _run_both(model, kernel, (10, 9, 9))
    assert [layer.strategy for layer in layers] == [kernel]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("in_ch", "blocks", "group", "length"), [(3, 1, 1, 16), (6, 2, 2, 32), (10, 3, 1, 16),
                                             (24, 6, 2, 32), (16, 4, 4, 64)],
)  # fmt: skip
def test_2_bit_packing_takes_smaller_groups_instead_of_padding(in_ch, blocks, group, length):
    """2-bit weights share 64 bytes among four input blocks; a layer with fewer (or not a
    multiple of four: a 3-channel first conv) takes groups of two or one block, so its module
    stores its weights at 2 bits each, not padded to four blocks."""
    from apprentice_hw.lowering.packing import blocked_conv_weights, pack_blocked, unpack_blocked

    weights = np.random.default_rng(in_ch).integers(-2, 2, size=(16, in_ch, 3, 3))
    blocked = blocked_conv_weights(weights)
    packed = pack_blocked(blocked, 2)
    assert packed.shape == (1, blocks // group, 3, 3, length)
    assert packed.nbytes == blocks * 9 * 64 // 4
    np.testing.assert_array_equal(unpack_blocked(packed, 2), blocked)


GROUPED_CASES = [  # kernel, weight bits, act bits, (out, in per group), groups, conv attributes
    ("int8", 8, 8, (8, 1), 8, {"pads": [1, 1, 1, 1]}),
    ("packed", 2, 2, (8, 1), 8, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
    ("packed", 4, 4, (16, 1), 8, {"pads": [0, 1, 2, 1]}),  # depthwise, 2 outputs per input
    ("packed", 3, 8, (6, 4), 2, {"pads": [1, 1, 1, 1], "dilations": [2, 2]}),
]


@pytest.mark.parametrize(("kernel", "weight_bits", "act_bits", "shape", "groups", "conv"),
                         GROUPED_CASES)  # fmt: skip
def test_grouped_and_depthwise_convs_are_integer_and_exact(
    kernel, weight_bits, act_bits, shape, groups, conv
):
    """Grouped and depthwise convs (every MobileNet) run as integer kernels with their
    weights at trained precision, equal to ONNX Runtime at every border, with a zero point."""
    high = (1 << (weight_bits - 1)) - 1
    weights = np.random.default_rng(groups).integers(-high - 1, high + 1, size=(*shape, 3, 3))
    attributes = {"kernel_shape": [3, 3], "group": groups, **conv}
    model = _qcdq_layer("conv", weights, act_bits, zero_point=3, conv=attributes)
    expected, got, layers = _run_both(model, kernel, (shape[1] * groups, 9, 9))
    [layer] = layers
    assert layer.strategy == kernel
    bits = 8 if kernel == "int8" else {2: 2, 3: 4, 4: 4}[weight_bits]
    assert layer.weight_bytes == -(-weights.size * bits // 8)  # packed back to back
    np.testing.assert_array_equal(got, expected)


def test_a_zero_pad_before_a_conv_is_folded_into_it():
    """Exporters that pad explicitly put a ``Pad`` node between the dequantize and the conv;
    its zeros are the conv's own padding, so the layer stays integer and exact."""
    from apprentice_hw.lowering.onnx_canonical import _spatial_pads

    weights = np.random.default_rng(5).integers(-8, 8, size=(6, 10, 3, 3))
    model = _qcdq_layer("conv", weights, 4, zero_point=2, conv={"kernel_shape": [3, 3],
                                                              "pads": [0, 1, 1, 0]})  # fmt: skip
    graph = model.graph
    conv = next(node for node in graph.node if node.op_type == "Conv")
    conv.input[0] = "xp"
    pads = [0, 0, 2, 1, 0, 0, 1, 3]
    graph.initializer.append(numpy_helper.from_array(np.array(pads, np.int64), "pads"))
    pad = helper.make_node("Pad", ["xd", "pads"], ["xp"], mode="constant")
    graph.node.insert(list(graph.node).index(conv), pad)
    expected, got, layers = _run_both(model, "packed", (10, 9, 9))
    assert [layer.strategy for layer in layers] == ["packed"]
    assert got.shape == (4, 6, 11, 12)  # H 9 + (0 + 2) + (1 + 1) - 2, W 9 + (1 + 1) + 3 - 2
    np.testing.assert_array_equal(got, expected)
    # Opset 10 and older: the pads as an attribute; only zeros on H and W fold.
    old = helper.make_node("Pad", ["xd"], ["xp"], pads=pads, mode="constant", value=0.0)
    assert _spatial_pads(old, {}) == [2, 1, 1, 3]
    computed = helper.make_node("Pad", ["xd", "pads", "fill"], ["xp"], mode="constant")
    assert _spatial_pads(computed, {"pads": np.array(pads)}) is None  # a run-time fill value
    for other in ({"value": 1.0}, {"mode": "reflect"}, {"pads": [0, 1, 0, 0, 0, 0, 0, 0]}):
        attributes = {"pads": pads, "mode": "constant", "value": 0.0, **other}
        assert _spatial_pads(helper.make_node("Pad", ["xd"], ["xp"], **attributes), {}) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(-255, 0), st.integers(0, 255)), min_size=1, max_size=8))
def test_weight_offsets_take_9_bit_rows_into_int8(bounds):
    from apprentice_hw.lowering.lowered import weight_offsets

    rows = np.array([[low, high, (low + high) // 2] for low, high in bounds], dtype=np.int64)
    offsets = weight_offsets(rows)
    spans = rows.max(axis=1) - rows.min(axis=1)
    if np.any(spans > 255):
        assert offsets is None
    else:
        shifted = rows - offsets[:, None]
        assert shifted.min() >= -128 and shifted.max() <= 127


@pytest.mark.parametrize("kind", ["conv", "dense"])
def test_asymmetric_uint8_weights_run_as_int8_plus_window_sums(kind):
    """uint8 weight codes with a zero point (ONNX Runtime's QUInt8 weights) are 9-bit integers:
    they run as int8 weights plus a per-channel offset times the sum of each output's input
    codes, exact at the padded borders and with an activation zero point."""
    rng = np.random.default_rng(9)
    shape = (6, 10, 3, 3) if kind == "conv" else (6, 10)
    conv = {"kernel_shape": [3, 3], "pads": [1, 2, 0, 1], "strides": [2, 1]}
    model = _qcdq_layer(kind, np.zeros(shape, np.int64), 8, zero_point=5,
                        conv=conv if kind == "conv" else None)  # fmt: skip
    codes = rng.integers(0, 256, size=shape).astype(np.uint8)
    codes[0].flat[0], codes[0].flat[1] = 0, 255  # a full 9-bit span in channel 0
    zeros = rng.integers(0, 256, size=shape[0]).astype(np.uint8)
    for init in model.graph.initializer:
        if init.name in ("w", "wz"):
            init.CopyFrom(numpy_helper.from_array(codes if init.name == "w" else zeros, init.name))
    expected, got, layers = _run_both(model, "int8", (10, 9, 9) if kind == "conv" else (10,))
    [layer] = layers
    assert layer.strategy == "int8" and layer.weight_bits == 9 and layer.storage_bits == 8
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("in_ch", "size", "blocks"),
    # RGB 7x7 (ResNet-18's stem): 21 codes per kernel row in 6 blocks, not 7 x 1;
    # grey 3x3 (an MNIST stem): 1 block per kernel row, not 3
    [(3, 7, 6 * 7), (1, 3, 1 * 3)],
)
def test_few_channel_convs_fold_kernel_columns_into_channels(in_ch, size, blocks):
    """A conv with fewer input channels than a block reduces over (kernel column, channel):
    the module stores a quarter fewer padded weight blocks for an RGB stem, and stays exact
    at every border (stride 2, padding 3)."""
    weights = np.random.default_rng(size).integers(-127, 128, size=(20, in_ch, size, size))
    pad = size // 2
    conv = {"kernel_shape": [size, size], "pads": [pad] * 4, "strides": [2, 2]}
    model = _qcdq_layer("conv", weights, 8, zero_point=3, conv=conv)
    expected, got, layers = _run_both(model, "int8", (in_ch, 9, 9))
    [layer] = layers
    assert layer.weight_bytes == 2 * blocks * 64  # 2 blocks of 16 outputs x 64 weights each
    np.testing.assert_array_equal(got, expected)


BITSERIAL_CASES = {
    # ternary weights, input channels short of one 16-channel block, 12 = 8 + 4 outputs
    "ternary-3x3": (10, 3, {"pads": [1, 1, 1, 1]}, 2, (-1, 2)),
    # two's complement planes (-2 .. 1); 1x1 stride 2: no loop over kernel positions
    "2bit-1x1-stride2": (40, 1, {"strides": [2, 2]}, 2, (-2, 2)),
    # one-bit activations: no loop over activation bits either
    "a1-dilated": (16, 3, {"pads": [2, 2, 2, 2], "dilations": [2, 2]}, 1, (-1, 2)),
}


@pytest.mark.parametrize("case", list(BITSERIAL_CASES))
def test_bitserial_convs_are_scheduled_and_exact(case):
    """Every bit-serial layer gets its schedule (NEON: the and + cnt + uadalp intrinsic,
    checked in the TIR), and the x86 module equals the float graph bit for bit."""
    in_ch, size, conv, act_bits, (low, high) = BITSERIAL_CASES[case]
    weights = np.random.default_rng(in_ch).integers(low, high, size=(12, in_ch, size, size))
    model = _qcdq_layer("conv", weights, act_bits, conv={"kernel_shape": [size, size], **conv})
    for target_name in ("x86-host", "arm-a72"):
        target = get_target(target_name)
        functions = _scheduled_functions(prepare_module(model, target, kernel="bitserial"), target)
        [conv_function] = [f for name, f in functions.items() if "bitserial" in name]
        assert "tirx.is_scheduled" in conv_function.attrs, target_name
        assert ("uaddlp" in conv_function.script()) == (target_name == "arm-a72")
    expected, got, layers = _run_both(model, "bitserial", (in_ch, 9, 9))
    assert [layer.strategy for layer in layers] == ["bitserial"]
    np.testing.assert_array_equal(got, expected)


def test_bitserial_refuses_counts_beyond_16_bits():
    from apprentice_hw.lowering.strategies import KERNEL_STRATEGIES, QuantLayer

    def layer(in_ch: int) -> QuantLayer:
        return QuantLayer("c", "conv2d", np.ones((8, in_ch, 3, 3), np.int8), 2, "uint8", 0,
                          (0, 3))  # fmt: skip

    refuse = KERNEL_STRATEGIES.get("bitserial").unsupported
    assert refuse(layer(7280)) is None  # 7280 x 9 = 65520 products per output
    assert "16-bit counts" in refuse(layer(7281))


def test_activation_zero_point_pads_with_zero():
    weights = np.random.default_rng(1).integers(-7, 8, size=(4, 3, 3, 3))
    model = _qcdq_layer(
        "conv", weights, 4, zero_point=5, conv={"kernel_shape": [3, 3], "pads": [2, 2, 2, 2]}
    )
    expected, got, layers = _run_both(model, None, (3, 9, 9))
    assert layers[0].strategy == "packed"  # bit-serial needs a zero point of 0
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("kernel", "weight_bits"), [("int8", 8), ("packed", 2), ("packed", 4)])
def test_dense_kernels_are_exact(kernel, weight_bits):
    high = (1 << (weight_bits - 1)) - 1
    weights = np.random.default_rng(2).integers(-high, high + 1, size=(10, 37))
    model = _qcdq_layer("gemm", weights, 8, per_channel=False)
    expected, got, layers = _run_both(model, kernel, (37,))
    assert [(layer.kind, layer.strategy) for layer in layers] == [("dense", kernel)]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("preference", "expected"),
    [
        (("bitserial", "packed", "int8"), ("bitserial", "packed", "packed")),
        (("packed", "int8", "bitserial"), ("packed", "packed", "packed")),  # the targets' order
        (("int8",), ("int8", "int8", "int8")),
    ],
)
def test_default_choice_follows_the_target_preference(preference, expected):
    from dataclasses import replace

    target = replace(get_target("x86-host"), kernels=preference)
    ternary = np.random.default_rng(3).integers(-1, 2, size=(8, 8, 3, 3))
    conv = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    choices = []
    for act_bits in (2, 4, 8):
        model = _qcdq_layer("conv", ternary, act_bits, conv=conv)
        layer = prepare_module(model, target).layers[0]
        assert (layer.act_bits, layer.weight_bits) == (act_bits, 2)
        choices.append(layer.strategy)
    assert tuple(choices) == expected


def test_weight_constants_are_stored_at_trained_precision():
    from apprentice_hw.compiler import memory_plan

    target = get_target("x86-host")
    weights = np.random.default_rng(4).integers(-1, 2, size=(32, 32, 3, 3))
    model = _qcdq_layer("conv", weights, 8, conv={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    prepared = prepare_module(model, target)
    plan = memory_plan(prepared.mod, target, 1)
    trained = weights.size * 2 // 8
    assert prepared.layers[0].weight_bytes == trained
    # Everything in the module: the packed weights plus one per-channel float64 scale vector.
    assert prepared.layers[0].scale_bytes == 32 * 8
    assert plan.weight_bytes == trained + 32 * 8


# -- whole models from other tools and formats ------------------------------------------------


def _fp32_cnn_onnx(path):
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip
    torch.onnx.export(
        net, torch.rand(1, 1, 8, 8), str(path), input_names=["x"], output_names=["y"],
        dynamo=False, dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )  # fmt: skip


@pytest.mark.parametrize("activation_type", ["QUInt8", "QInt8"])
def test_onnxruntime_quantize_static_model_matches_onnxruntime(activation_type, tmp_path):
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from apprentice_hw.verify import run_verify

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.batches = iter([{"x": rng.random((1, 1, 8, 8), dtype=np.float32)}] * 16)

        def get_next(self):
            return next(self.batches, None)

    _fp32_cnn_onnx(tmp_path / "fp32.onnx")
    quantize_static(
        str(tmp_path / "fp32.onnx"), str(tmp_path / "qdq.onnx"), Reader(),
        quant_format=QuantFormat.QDQ, activation_type=getattr(QuantType, activation_type),
        weight_type=QuantType.QInt8,
    )  # fmt: skip
    result = run_verify(tmp_path / "qdq.onnx", samples=100)
    assert [layer["strategy"] for layer in result.layers] == ["int8"] * 3
    check = result.comparisons["compiled_vs_onnxruntime"]
    assert check.max_diff_steps <= 1.0 and check.prediction_agreement >= 0.99, check


def test_qonnx_and_qcdq_exports_compile_to_the_same_module(tmp_path):
    import torch

    from apprentice_hw.data import load_dataset
    from apprentice_hw.export import export_qcdq, export_qonnx_model
    from apprentice_hw.models import ModelSpec, build_model
    from apprentice_hw.quant import QuantLayers
    from apprentice_hw.quant.calibration import calibrate_untrained

    images = load_dataset("digits").test_x[:128]
    layers = QuantLayers.from_bits(2, 2, 8, "per-channel")
    model = calibrate_untrained(
        build_model(ModelSpec("resnet-small", {"width": 8}), layers, 1, 10), images
    )
    qcdq = export_qcdq(model, images[:1], tmp_path / "m.onnx")
    qonnx = export_qonnx_model(model, images[:1], tmp_path / "q.onnx")
    target = get_target("x86-host")
    outputs = []
    for exported in (qcdq, qonnx):
        prepared = prepare_module(exported, target, kernel="bitserial")  # W2A2: every kernel kind
        assert {layer.strategy for layer in prepared.layers} == {"bitserial", "int8"}
        outputs.append(
            run_module_outputs(compile_module(prepared.mod, target), images[:32].numpy())[0]
        )
    np.testing.assert_array_equal(outputs[0], outputs[1])
    with torch.no_grad():
        reference = model(images[:32]).numpy()
    from apprentice_hw.export.onnx_export import output_quant_step
    from apprentice_hw.output_steps import compare_outputs

    check = compare_outputs(reference, outputs[0], output_quant_step(qcdq))
    assert check.max_diff_steps <= 1.0 and check.prediction_agreement >= 0.99, check


# -- default schedules --------------------------------------------------------------------------


def _scheduled_functions(prepared, target):
    """The module's TIR functions after fusion and the default schedule pass."""
    import tvm
    from tvm import tirx
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    from apprentice_hw.compiler.schedules import schedule_pass

    tvm_target = target.tvm_target()
    with tvm_target:
        mod = tvm.transform.Sequential(cpu.legalize_passes(tvm_target))(prepared.mod)
        mod = schedule_pass(tvm_target)(mod)
    return {
        gvar.name_hint: func
        for gvar, func in mod.functions_items()
        if isinstance(func, tirx.PrimFunc)
    }


def _x86_target(mcpu: str | None):
    """This machine's target, or the same for an older x86 CPU (its code runs here too)."""
    from dataclasses import replace

    host = get_target("x86-host")
    return host if mcpu is None else replace(host, tvm={**host.tvm, "mcpu": mcpu})


# Each x86 dot-product path: VNNI (this machine), AVX2 vpmaddwd, plain unrolled int32 code.
X86_PATHS = {"vnni": None, "avx2": "haswell", "unrolled": "x86-64"}
INTRINSIC_CALL = {"vnni": "vpdpbusd", "avx2": "pmadd.wd", "unrolled": None}


@pytest.mark.parametrize("path", list(X86_PATHS))
def test_every_x86_dot_product_path_is_exact(path):
    from apprentice_hw.compiler.schedules import _dot_product

    target = _x86_target(X86_PATHS[path])
    if path == "vnni" and _dot_product(target.tvm_target()) != "vnni":
        pytest.skip("this CPU has no VNNI")
    assert _dot_product(target.tvm_target()) == path
    weights = np.random.default_rng(7).integers(-127, 128, size=(24, 5, 3, 3))  # 8-bit extremes
    model = _qcdq_layer(
        "conv", weights, 8, zero_point=3, conv={"kernel_shape": [3, 3], "pads": [1, 2, 1, 0]}
    )
    inputs = np.random.default_rng(0).random((4, 5, 9, 9), dtype=np.float32) * 20
    expected = run_onnxruntime_outputs(model, inputs)[0]
    prepared = prepare_module(model, target, batch=1)
    got = run_module_outputs(compile_module(prepared.mod, target), inputs)[0]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("target_name", ["x86-host", "arm-a76"])
def test_the_input_transpose_is_vectorized_along_its_contiguous_reads(target_name):
    """The input quantize (NCHW floats -> NHWC codes) loops with the input's rows innermost:
    fused in the output's order its innermost loop ran over three channels, scalar code with
    a division and a modulo per element on AArch64."""
    weights = np.random.default_rng(2).integers(-8, 8, size=(16, 3, 3, 3))
    model = _qcdq_layer("conv", weights, 8, conv={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    target = get_target(target_name)
    functions = _scheduled_functions(prepare_module(model, target), target)
    [transpose] = [f for name, f in functions.items() if "transpose" in name and "divide" in name]
    assert "tirx.is_scheduled" in transpose.attrs
    script = transpose.script()
    # the vectorized loop runs over the 9 columns of a row: the last axis of x's read
    loop = re.search(r"for (\w+) in T\.vectorized\(T\.int64\(9\)\)", script)
    assert loop, script
    column = re.search(rf"(v_\w+) = T\.axis\.spatial\(T\.int64\(9\), [^\n]*\b{loop[1]}\b", script)
    assert column and re.search(rf"x\[v_\w+, v_\w+, v_\w+, {column[1]}\]", script), script


@pytest.mark.parametrize(
    ("target_name", "path"),
    [("x86-host", None), ("haswell", "avx2"), ("x86-64", "unrolled")]
    + [
        (name, "unrolled")
        for name in ("arm-a53", "arm-a55", "arm-a72", "arm-a76", "jetson-orin-cpu")
    ],
)
def test_every_function_gets_a_default_schedule(target_name, path):
    """A rule that stops applying (TVM API drift) must fail here, not fall back silently."""
    from apprentice_hw.compiler.schedules import _dot_product

    weights = np.random.default_rng(5).integers(-1, 2, size=(32, 16, 3, 3))
    model = _qcdq_layer("conv", weights, 8, conv={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    if target_name in ("haswell", "x86-64"):
        target = _x86_target(target_name)
    else:
        target = get_target(target_name)
    path = path or _dot_product(target.tvm_target())
    functions = _scheduled_functions(prepare_module(model, target), target)
    assert functions
    for name, func in functions.items():
        assert "tirx.is_scheduled" in func.attrs, name
    convs = [f for name, f in functions.items() if "conv2d_int" in name]
    assert len(convs) == 1
    script = convs[0].script()
    assert "T.parallel" in script
    for kind, call in INTRINSIC_CALL.items():
        if call is not None:
            assert (call in script) == (kind == path), (kind, path)


def test_profile_names_the_kernels_where_the_time_goes():
    import tvm
    from tvm import relax

    from apprentice_hw.compiler.runtime import profile_functions

    weights = np.random.default_rng(6).integers(-7, 8, size=(16, 8, 3, 3))
    model = _qcdq_layer("conv", weights, 8, conv={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    target = get_target("x86-host")
    executable = compile_module(prepare_module(model, target).mod, target)
    vm = relax.VirtualMachine(executable, tvm.cpu())
    sample = tvm.runtime.tensor(np.random.default_rng(0).random((1, 8, 9, 9), np.float32))
    ranked = profile_functions(vm, sample, runs=5)
    assert ranked and all(f.ms_per_inference >= 0 for f in ranked)
    assert [f.ms_per_inference for f in ranked] == sorted(
        (f.ms_per_inference for f in ranked), reverse=True
    )
    conv = [f for f in ranked if "conv2d_int" in f.name]
    assert len(conv) == 1 and conv[0].calls_per_inference == 1
    expected = run_module_outputs(executable, sample.numpy())[0]
    np.testing.assert_array_equal(vm["main"](sample).numpy(), expected)  # hook removed cleanly


def test_fma_division_rounds_exactly_as_a_division():
    """``divide_exactly`` (multiply + two FMAs) gives the division's float64 bits, vectorized."""
    import tvm
    from tvm import te

    from apprentice_hw.lowering.float64_pass import divide_exactly

    rng = np.random.default_rng(0)
    count = 1 << 16
    x = np.concatenate([
        rng.normal(0, 1e3, count // 2),
        rng.integers(-(2**31), 2**31, count // 2).astype(np.float64),  # int32 accumulators
        [0.0, -0.0, np.inf, -np.inf, 1e300, 5e-324],
    ])  # fmt: skip
    data = te.placeholder((x.size,), "float64", name="x")
    divisor = te.placeholder((1,), "float64", name="d")
    reciprocal = te.placeholder((1,), "float64", name="r")
    out = divide_exactly(data, divisor, reciprocal)
    func = te.create_prim_func([data, divisor, reciprocal, out])
    built = tvm.compile(tvm.IRModule({"main": func}), target="llvm")
    for scale in [*np.exp(rng.uniform(-18, 4, 40)), 1 / 3, 0.1, 2.0**-7]:
        result = tvm.runtime.empty((x.size,), "float64")
        built(tvm.runtime.tensor(x), tvm.runtime.tensor(np.array([scale])),
              tvm.runtime.tensor(np.array([1.0 / scale])), result)  # fmt: skip
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(result.numpy(), x / scale)


# -- channels-last activations --------------------------------------------------------------


def _compiled(model, target, channels_last: bool):
    """``model`` lowered and compiled for ``target`` with or without the NHWC pass."""
    from apprentice_hw.compiler.cpu import dot_order, fma_division
    from apprentice_hw.compiler.tvm_build import import_onnx
    from apprentice_hw.lowering import LoweringOptions, canonicalize, lower_to_integer
    from apprentice_hw.lowering.channels_last import to_channels_last

    mod = import_onnx(canonicalize(model), 1)
    if channels_last:
        mod = to_channels_last(mod)
    options = LoweringOptions(
        preference=target.kernels, dot_order=dot_order(target), fma_division=fma_division(target)
    )
    lowered, layers = lower_to_integer(mod, options)
    return mod, layers, compile_module(lowered, target)


def _permutes(mod) -> list[tuple[int, ...]]:
    """The shapes of the tensors ``main`` transposes."""
    from tvm import relax

    shapes = []
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and value.op.name == "relax.permute_dims":
                shapes.append(tuple(int(d) for d in value.args[0].ty.shape))
    return shapes


def test_channels_last_transposes_a_resnet_once_and_changes_no_bit(tmp_path):
    """The zoo ResNet keeps NHWC from its input to its head: one transpose (the input) on a 4-D
    tensor, every conv NHWC and lowered, and the module's outputs are the NCHW module's bits."""
    import torch

    from apprentice_hw.export import export_qcdq
    from apprentice_hw.models import ModelSpec, build_model
    from apprentice_hw.quant import QuantLayers
    from apprentice_hw.quant.calibration import calibrate_untrained

    torch.manual_seed(0)
    images = torch.rand(16, 3, 32, 32)
    layers = QuantLayers.from_bits(4, 4, 8, "per-channel")
    student = build_model(ModelSpec("resnet18", {"width": 8}), layers, 3, 10)
    calibrate_untrained(student, images, batch_size=8)
    model = export_qcdq(student, images[:1], tmp_path / "student.onnx")
    target = get_target("x86-host")
    nhwc_mod, nhwc_layers, nhwc = _compiled(model, target, channels_last=True)
    _, _, nchw = _compiled(model, target, channels_last=False)
    assert [shape for shape in _permutes(nhwc_mod) if len(shape) == 4] == [(1, 3, 32, 32)]
    assert all(layer.strategy != "float" for layer in nhwc_layers)
    # every layer's codes come from its accumulators in two float operations or, for 8-bit
    # codes float32 cannot place, an integer line (requantize.py)
    kinds = {layer.requantization for layer in nhwc_layers}
    assert kinds <= {"affine float32", "affine float64", "integer"}, kinds  # x86: no sqdmulh
    inputs = images.numpy()
    np.testing.assert_array_equal(
        run_module_outputs(nhwc, inputs)[0], run_module_outputs(nchw, inputs)[0]
    )


def test_channels_last_returns_to_nchw_where_an_op_has_no_nhwc_form():
    """Softmax over channels has no NHWC rule: its input goes back to NCHW, and a 4-D output
    leaves the module in NCHW as the model declares it."""
    weights = np.random.default_rng(3).integers(-7, 8, size=(6, 5, 3, 3))
    model = _qcdq_layer("conv", weights, 4, conv={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    model.graph.node.append(helper.make_node("Softmax", ["y"], ["p"], axis=1))
    model.graph.output[0].name = "p"
    target = get_target("x86-host")
    nhwc_mod, _, nhwc = _compiled(model, target, channels_last=True)
    _, _, nchw = _compiled(model, target, channels_last=False)
    assert [shape for shape in _permutes(nhwc_mod) if len(shape) == 4] == [
        (1, 5, 9, 9),  # the input
        (1, 9, 9, 6),  # the conv's output, back to NCHW for the softmax
    ]
    inputs = np.random.default_rng(0).random((3, 5, 9, 9), dtype=np.float32) * 2
    got = run_module_outputs(nhwc, inputs)[0]
    assert got.shape == (3, 6, 9, 9)
    np.testing.assert_array_equal(got, run_module_outputs(nchw, inputs)[0])
    np.testing.assert_allclose(got, run_onnxruntime_outputs(model, inputs)[0], rtol=1e-5)


# -- requantization proven at compile time ----------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(
    multiplier=hnp.arrays(
        np.float64, 3, elements=st.floats(-2.0, 2.0).filter(lambda v: abs(v) > 1e-3)
    ),
    offset=hnp.arrays(np.float64, 3, elements=st.floats(-50.0, 50.0)),
    scale=st.floats(1e-3, 4.0),
    zero_point=st.integers(0, 20),
    relu=st.booleans(),
    signed=st.booleans(),
    half_width=st.integers(1, 3000),
)
def test_affine_requantization_equals_the_chain_wherever_it_is_used(
    multiplier, offset, scale, zero_point, relu, signed, half_width
):
    """Soundness of the proof: where ``fit_affine_requantization`` returns a formula, it gives
    the float64 chain's code for every accumulator of the range (checked one by one here)."""
    from apprentice_hw.lowering.requantize import (
        AffineRequantization,
        Requantization,
        fit_affine_requantization,
    )

    low, high = (-128, 127) if signed else (0, 255)
    chain = Requantization(multiplier, offset, relu, scale, zero_point, low, high)
    acc_low = np.array([-half_width, -3, 0])
    acc_high = np.array([half_width, 7 * half_width, 2 * half_width])
    affine = fit_affine_requantization(chain, acc_low, acc_high)
    assume(affine is not None)  # a refusal is tested below; here the proof's soundness
    for channel in range(3):
        acc = np.arange(acc_low[channel], acc_high[channel] + 1)[:, None]
        one = Requantization(
            multiplier[channel : channel + 1], offset[channel : channel + 1], relu, scale,
            zero_point, low, high,
        )  # fmt: skip
        mine = AffineRequantization(
            affine.offset[channel : channel + 1], affine.multiplier[channel : channel + 1],
            affine.low, affine.high, affine.dtype,
        )  # fmt: skip
        np.testing.assert_array_equal(mine.codes(acc), one.codes(acc))


def test_affine_requantization_is_refused_where_the_roundings_differ():
    """(acc * 0.65 + 0.05) / 0.2 lands on ties that (acc + c) * m rounds the other way: the
    proof finds the accumulator where they differ and the layer keeps the float64 chain."""
    from apprentice_hw.lowering.requantize import (
        AffineRequantization,
        Requantization,
        fit_affine_requantization,
    )

    chain = Requantization(np.array([0.65]), np.array([0.05]), False, 0.2, 0, -128, 127)
    low, high = np.array([-300]), np.array([300])
    assert fit_affine_requantization(chain, low, high) is None
    naive = AffineRequantization(np.array([0.05 / 0.65]), np.array([0.65 / 0.2]), -128, 127)
    acc = np.arange(-300, 301)[:, None]
    assert np.any(naive.codes(acc) != chain.codes(acc))


def _clip_output_to_two_bits(model, scale) -> None:
    """Append Quantize -> Clip(0, 3) -> Dequantize to the layer's output (a 2-bit activation
    as QCDQ writes it), as the model's new output ``out``."""
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array(scale), "ys"),
        numpy_helper.from_array(np.array(0, np.uint8), "yz"),
        numpy_helper.from_array(np.array(3, np.uint8), "yhi"),
    ])  # fmt: skip
    model.graph.node.extend([
        helper.make_node("QuantizeLinear", ["y", "ys", "yz"], ["yq"]),
        helper.make_node("Clip", ["yq", "yz", "yhi"], ["yc"]),
        helper.make_node("DequantizeLinear", ["yc", "ys", "yz"], ["out"]),
    ])  # fmt: skip
    model.graph.output[0].name = "out"


def test_requantization_is_proven_on_the_levels_its_clip_lets_through():
    """Quantize -> Clip(0, 3) -> Dequantize after a conv (a 2-bit activation in QCDQ): the
    requantization covers the Clip's 4 levels, not the 256 of uint8, so it is three integer
    thresholds per channel; the module still equals ONNX Runtime."""
    weights = np.random.default_rng(4).integers(-7, 8, size=(8, 5, 3, 3))
    model = _qcdq_layer("conv", weights, 4, conv={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    _clip_output_to_two_bits(model, np.float32(2.0**-2))
    target = get_target("x86-host")
    prepared = prepare_module(model, target)
    [layer] = prepared.layers
    assert layer.requantization == "thresholds"
    assert layer.scale_bytes == 3 * 8 * 4  # three int32 thresholds per output channel
    [conv] = [f for name, f in _scheduled_functions(prepared, target).items() if "conv" in name]
    # the requantization is three integer compares per code, fused into the conv
    assert len(re.findall(r"param_\d+\[v_ax3\] <= conv_blocked", conv.script())) == 3
    inputs = np.random.default_rng(1).random((2, 5, 9, 9), dtype=np.float32) * 8
    got = run_module_outputs(compile_module(prepared.mod, target), inputs)[0]
    np.testing.assert_array_equal(got, run_onnxruntime_outputs(model, inputs)[0])
    assert set(np.unique(got)) <= {0.0, 0.25, 0.5, 0.75}


def test_bitserial_sums_and_their_thresholds_run_in_int16():
    """A ternary conv of 2-bit codes whose sums fit int16 (6 x 9 x 3 at most) combines its
    bit counts and compares them with the thresholds in int16 (eight lanes per vector): the
    module equals ONNX Runtime; a layer whose sums do not fit keeps int32."""
    from apprentice_hw.lowering.strategies import QuantLayer, sums_dtype

    weights = np.random.default_rng(5).integers(-1, 2, size=(8, 6, 3, 3))
    model = _qcdq_layer("conv", weights, 2, conv={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    _clip_output_to_two_bits(model, np.float32(2.0**-4))
    target = get_target("arm-a72")
    prepared = prepare_module(model, target, kernel="bitserial")
    [layer] = prepared.layers
    assert (layer.strategy, layer.requantization) == ("bitserial", "thresholds")
    [conv] = [f for n, f in _scheduled_functions(prepared, target).items() if "bitserial" in n]
    # thresholds compared with the int16 sum of the counts (their uint16 wrap-around sum)
    assert re.search(r'param_\d+\[v_ax3\] <= T\.Cast\("int16", conv_bits', conv.script())
    host = get_target("x86-host")
    inputs = np.random.default_rng(2).random((2, 6, 9, 9), dtype=np.float32) * 0.3
    host_module = prepare_module(model, host, kernel="bitserial")
    got = run_module_outputs(compile_module(host_module.mod, host), inputs)[0]
    np.testing.assert_array_equal(got, run_onnxruntime_outputs(model, inputs)[0])
    assert len(set(np.unique(got))) > 2  # the test reaches several levels

    def layer_of(in_ch: int) -> QuantLayer:
        return QuantLayer("c", "conv2d", np.ones((8, in_ch, 3, 3), np.int8), 2, "uint8", 0,
                          (0, 3))  # fmt: skip

    assert sums_dtype(layer_of(1213)) == "int16"  # 1213 x 9 x 3 = 32751
    assert sums_dtype(layer_of(1214)) == "int32"


@settings(max_examples=40, deadline=None)
@given(
    st.floats(0.05, 50), st.floats(-30, 30), st.booleans(), st.sampled_from([-1.0, 1.0]),
    st.sampled_from([(0, 3), (0, 1), (-2, 1), (0, 255)]), st.integers(0, 2),
)  # fmt: skip
def test_thresholds_equal_the_chain_on_every_accumulator(a, b, relu, sign, bounds, zero):
    """Codes of at most two bits as integer thresholds: equal to the float64 chain at every
    accumulator value of the range (both signs of the scale, with and without ReLU); more
    levels than that are refused (the affine form takes them)."""
    from apprentice_hw.lowering.requantize import (
        MAX_THRESHOLD_LEVELS,
        Requantization,
        fit_thresholds,
    )

    low, high = bounds
    chain = Requantization(
        np.array([sign * a, a]), np.array([b, -b]), relu, 1.0, low + zero, low, high
    )
    acc_low, acc_high = np.array([-400, -90]), np.array([300, 500])
    form = fit_thresholds(chain, acc_low, acc_high)
    if not 0 < high - max(low, low + zero if relu else low) <= MAX_THRESHOLD_LEVELS:
        assert form is None
        return
    assert form is not None
    acc = np.stack([np.arange(-400, 301), np.arange(-90, 611)], axis=1)
    acc = np.minimum(acc, acc_high)
    np.testing.assert_array_equal(form.codes(acc), chain.codes(acc))
    rows, masks = form.kernel_constants()  # the kernel's form: ~t and s - 1 where sign is -1
    u = acc if masks is None else acc ^ masks
    np.testing.assert_array_equal(form.low + sum(u >= row for row in rows), chain.codes(acc))


@pytest.mark.parametrize("relu", [False, True])
def test_residual_sum_thresholds_equal_the_chain(relu):
    """A residual add of two 2-bit code tensors re-quantized to 2 bits, as thresholds on the
    integer sum: equal to the float64 chain on every pair of codes."""
    from apprentice_hw.lowering.requantize import fit_threshold_sum

    scale, zero, out_scale = 0.37, 1, 0.55
    form = fit_threshold_sum(scale, zero, [(0, 3), (0, 3)], relu, out_scale, 0, 0, 3)
    assert form is not None
    a, b = np.meshgrid(np.arange(4), np.arange(4))
    x = (a - zero) * scale + (b - zero) * scale
    x = np.maximum(x, 0.0) if relu else x
    expected = np.clip(np.rint(x / out_scale), 0, 3)
    t = ((a - zero) + (b - zero)).reshape(-1, 1)
    np.testing.assert_array_equal(form.codes(t).reshape(a.shape), expected)


def test_float32_constants_are_nudged_off_near_ties():
    """Five channels of a ResNet-18 W4A4 layer (4-bit codes, accumulators up to +-127,000):
    rounded to float32, the constants of the first put a level start one accumulator off (the
    exact value sits within an ulp of a tie); constants an ulp or two away are proven, and
    they give the float64 chain's code for every accumulator of the range."""
    from pathlib import Path

    from apprentice_hw.lowering.requantize import (
        AffineRequantization,
        Requantization,
        fit_affine_requantization,
    )

    data = np.load(Path(__file__).parent / "data" / "requantization_near_ties.npz")
    chain = Requantization(
        data["multiplier"], data["offset"], bool(data["relu"]), float(data["scale"]),
        int(data["zero_point"]), int(data["low"]), int(data["high"]),
    )  # fmt: skip
    acc = np.arange(data["acc_low"].min(), data["acc_high"].max() + 1)[:, None]
    naive = AffineRequantization(
        data["offset"] / data["multiplier"], data["multiplier"] / chain.scale, chain.low,
        chain.high,
    ).in_dtype("float32")  # fmt: skip
    assert np.any(naive.codes(acc)[:, 0] != chain.codes(acc)[:, 0])
    affine = fit_affine_requantization(chain, data["acc_low"], data["acc_high"])
    assert affine is not None and affine.dtype == "float32"
    assert affine.multiplier[0] != naive.multiplier[0] or affine.offset[0] != naive.offset[0]
    inside = (acc >= data["acc_low"]) & (acc <= data["acc_high"])  # each channel's range
    np.testing.assert_array_equal(affine.codes(acc)[inside], chain.codes(acc)[inside])


@pytest.mark.parametrize("relu", [False, True])
def test_residual_sum_requantization_matches_the_float64_chain(relu):
    """quantize(relu?(dequantize(a) + dequantize(b))) from the integer a + b: every pair of
    4-bit codes gives the float64 chain's code, or the fit refuses."""
    from apprentice_hw.lowering.requantize import fit_affine_sum

    rng = np.random.default_rng(3)
    proven = 0
    for _ in range(20):
        scale, out_scale = (float(np.float32(v)) for v in rng.uniform(0.01, 1.0, 2))
        affine = fit_affine_sum(scale, 0, [(-8, 7), (-8, 7)], relu, out_scale, 0, 0, 255)
        if affine is None:
            continue
        a, b = np.meshgrid(np.arange(-8, 8), np.arange(-8, 8))
        x = a.astype(np.float64) * scale + b.astype(np.float64) * scale
        x = np.maximum(x, 0.0) if relu else x
        expected = np.clip(np.rint(x / out_scale), 0, 255)
        np.testing.assert_array_equal(affine.codes(a + b), expected)
        proven += 1
    assert proven >= 15  # float32 scales rarely land on ties: the fit is the rule


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("relu", [False, True])
def test_residual_sum_integer_requantization_matches_the_float64_chain(bits, relu):
    """The residual add's codes as ``(t * M + B) >> S`` on the integer sum: every pair of
    codes (and every single code re-quantized to another scale) gives the float64 chain's
    code; 4-bit sums run in int16 lanes."""
    from apprentice_hw.lowering.requantize import fit_integer_sum

    rng = np.random.default_rng(bits)
    top = (1 << bits) - 1
    proven = 0
    for _ in range(30):
        scale, out_scale = (float(np.float32(v)) for v in rng.uniform(0.01, 1.0, 2))
        zero = int(rng.integers(0, top + 1))
        for ranges in ([(0, top)], [(0, top), (0, top)]):
            form = fit_integer_sum(scale, zero, ranges, relu, out_scale, 3, 0, top)
            if form is None:
                continue
            grids = np.meshgrid(*[np.arange(lo, hi + 1) for lo, hi in ranges])
            x = sum((grid.astype(np.float64) - zero) * scale for grid in grids)
            x = np.maximum(x, 0.0) if relu else x
            expected = np.clip(np.rint(x / out_scale) + 3, 0, top)
            t = sum(grid - zero for grid in grids)
            np.testing.assert_array_equal(form.codes(t), expected)
            assert form.dtype == "int16" or bits == 8
            proven += 1
    assert proven >= 50  # of 60: the rule, not the exception


@settings(max_examples=30, deadline=None)
@given(
    st.floats(1e-5, 0.05), st.floats(-3, 3), st.booleans(), st.sampled_from([-1.0, 1.0]),
    st.integers(0, 20), st.integers(1_000, 400_000),
)  # fmt: skip
def test_integer_accumulator_requantization_equals_the_chain(a, b, relu, sign, zero, reach):
    """8-bit codes of 32-bit accumulators as one 64-bit multiply-add and a shift: where the
    fit gives one, equal to the float64 chain at every accumulator value of the range, both
    signs of the scale, with and without ReLU. (Where the chain's float64 roundings land on
    ties, which go to the even code and so follow no line, the fit refuses.)"""
    from apprentice_hw.lowering.requantize import Requantization, fit_integer_requantization

    chain = Requantization(
        np.array([sign * a, a, 0.7 * a]), np.array([b, -b, 0.0]), relu, 1.0, zero, 0, 255
    )
    acc_low, acc_high = np.array([-reach, -reach // 2, -7]), np.array([reach, reach, reach])
    form = fit_integer_requantization(chain, acc_low, acc_high)
    assume(form is not None)
    for c in range(3):
        acc = np.zeros((acc_high[c] - acc_low[c] + 1, 3), dtype=np.int64)
        acc[:, c] = np.arange(acc_low[c], acc_high[c] + 1)
        np.testing.assert_array_equal(form.codes(acc)[:, c], chain.codes(acc)[:, c])


def test_integer_accumulator_requantization_takes_8_bit_layers_float32_cannot():
    """Layers like ResNet-20 W8A8's (float32 scales, accumulators up to +-1.5 million, 255
    levels): float32 misplaces level starts in most of them, the integer forms (64-bit, and
    AArch64's 32-bit high half) fit every channel of nearly all."""
    from apprentice_hw.lowering.requantize import (
        Requantization,
        fit_affine_requantization,
        fit_high_half_requantization,
        fit_integer_requantization,
    )

    rng = np.random.default_rng(8)
    integer = float32 = high_half = 0
    for _ in range(8):
        channels = 16
        a = rng.uniform(2e-5, 4e-5, channels).astype(np.float32).astype(np.float64)
        b = rng.uniform(-1, 1, channels).astype(np.float32).astype(np.float64)
        chain = Requantization(a, b, True, float(np.float32(0.0164)), 0, 0, 255)
        acc_low, acc_high = np.full(channels, -300_000), np.full(channels, 400_000)
        form = fit_integer_requantization(chain, acc_low, acc_high)
        affine = fit_affine_requantization(chain, acc_low, acc_high)
        float32 += affine is not None and affine.dtype == "float32"
        acc = np.arange(-300_000, 400_001)[:, None]  # every accumulator, every channel
        if form is not None:
            integer += 1
            np.testing.assert_array_equal(form.codes(acc), chain.codes(acc))
        high = fit_high_half_requantization(chain, acc_low, acc_high)  # AArch64's sqdmulh
        if high is not None:
            high_half += 1
            np.testing.assert_array_equal(high.codes(acc), chain.codes(acc))
    assert integer >= 7 and high_half >= 7 and float32 <= 4


@settings(max_examples=30, deadline=None)
@given(
    st.floats(1e-5, 0.05), st.floats(-3, 3), st.booleans(), st.integers(0, 20),
    st.integers(1_000, 400_000),
)  # fmt: skip
def test_high_half_requantization_equals_the_chain(a, b, relu, zero, reach):
    """The same line as AArch64's ``sqdmulh`` (the high half of a 32 x 32-bit product, a
    shift, a per-channel zero, the clip on codes): where the fit gives one, equal to the
    float64 chain at every accumulator value of the range, its constants in int32 and
    ``acc + offset`` never leaving int32."""
    from apprentice_hw.lowering.requantize import Requantization, fit_high_half_requantization

    chain = Requantization(
        np.array([a, 0.7 * a, 1.3 * a]), np.array([b, -b, 0.0]), relu, 1.0, zero, 0, 255
    )
    acc_low, acc_high = np.array([-reach, -reach // 2, -7]), np.array([reach, reach, reach])
    form = fit_high_half_requantization(chain, acc_low, acc_high)
    assume(form is not None)
    offset, multiplier, zero = form.kernel_constants()
    assert (str(offset.dtype), str(multiplier.dtype)) == ("int32", "int32")
    assert form.dtype == str(zero.dtype) in ("int16", "int32")
    assert np.all(np.abs(acc_high.astype(np.int64) + form.offset) < 2**31)
    assert np.all(np.abs(acc_low.astype(np.int64) + form.offset) < 2**31)
    for c in range(3):
        acc = np.zeros((acc_high[c] - acc_low[c] + 1, 3), dtype=np.int64)
        acc[:, c] = np.arange(acc_low[c], acc_high[c] + 1)
        np.testing.assert_array_equal(form.codes(acc)[:, c], chain.codes(acc)[:, c])


# -- AVX2 without VNNI: products summed in int16 where proven ---------------------------------
@settings(max_examples=150, deadline=None)
@given(
    weights=hnp.arrays(
        np.int8,
        st.tuples(st.integers(1, 20), st.integers(1, 40), *[st.sampled_from([1, 3])] * 2),
        elements=st.integers(-128, 127),
    ),
    act_max=st.integers(1, 255),
    group=st.sampled_from([1, 4]),
    lane_inputs=st.sampled_from([1, 2]),
)
def test_int16_chunks_keep_every_lane_in_int16(weights, act_max, group, lane_inputs):
    """Soundness of ``int16_chunk``: with every code at 0 or ``act_max`` chosen to push a lane
    as far as it goes (the extremes of any running sum), no lane of any chunk leaves int16;
    and chunks are whole packed groups that divide the layer's input blocks. Lanes of one
    product (NEON's smlal) and of pairs (vpmaddubsw, NEON's mla) alike."""
    from apprentice_hw.lowering.int16_sums import int16_chunk
    from apprentice_hw.lowering.packing import blocked_conv_weights

    chunk = int16_chunk(weights, act_max, group, lane_inputs)
    assume(chunk > 0)
    blocked = blocked_conv_weights(weights).astype(np.int64)  # (OB, CB, KH, KW, 64)
    blocks_out, blocks_in = blocked.shape[:2]
    assert blocks_in % chunk == 0 and chunk % group == 0
    lanes_per_channel = 4 // lane_inputs
    lanes = blocked.reshape(
        blocks_out, blocks_in, *blocked.shape[2:4], 16, lanes_per_channel, lane_inputs
    )
    for sign in (1, -1):  # codes at act_max exactly where the weight has this sign
        extreme = (np.where(sign * lanes > 0, lanes, 0) * act_max).sum(axis=(2, 3, 6))
        per_chunk = extreme.reshape(
            blocks_out, blocks_in // chunk, chunk, 16, lanes_per_channel
        ).sum(axis=2)
        assert per_chunk.min() >= -32768 and per_chunk.max() <= 32767


@pytest.mark.parametrize(
    ("fill", "act_max", "in_channels", "expected"),
    [
        (1, 255, 16, 4),  # 9 x 2 x 255 = 4590 per block: all four blocks in one chunk
        (1, 255, 32, 4),  # eight blocks would reach 36720: two chunks of four
        (7, 255, 16, 1),  # 9 x 14 x 255 = 32130: one block per chunk
        (8, 255, 16, 0),  # 36720 from one block: int32 products
        (-8, 15, 64, 8),  # 9 x 16 x 15 = 2160 per block: 15 would fit, 8 divides 16
    ],
)
def test_int16_chunk_is_the_longest_that_fits(fill, act_max, in_channels, expected):
    from apprentice_hw.lowering.int16_sums import int16_chunk

    weights = np.full((16, in_channels, 3, 3), fill)
    assert int16_chunk(weights, act_max) == expected


INT16_CASES = [  # weight bits, activation bits, zero point, conv attributes
    (4, 4, 0, {"pads": [1, 1, 1, 1]}),
    (2, 8, 0, {"pads": [1, 1, 1, 1], "strides": [2, 2]}),  # packed across four input blocks
    (2, 2, 0, {"pads": [0, 1, 2, 1], "dilations": [2, 2]}),
    (3, 8, 5, {"pads": [1, 1, 1, 1]}),  # chunks of 2 of 8 blocks (8 overflow), zero point pads
]


@pytest.mark.parametrize(("weight_bits", "act_bits", "zero_point", "conv"), INT16_CASES)
def test_avx2_int16_sums_are_exact(weight_bits, act_bits, zero_point, conv):
    """On AVX2 without VNNI, low-bit layers take vpmaddubsw with int16 sums; codes pushed to
    the clip limits, the module still equals ONNX Runtime's float graph bit for bit."""
    target = _x86_target("haswell")
    rng = np.random.default_rng(weight_bits * 10 + act_bits)
    high = (1 << (weight_bits - 1)) - 1
    weights = rng.integers(-high - 1, high + 1, size=(24, 32, 3, 3))
    model = _qcdq_layer(
        "conv", weights, act_bits, zero_point=zero_point, conv={"kernel_shape": [3, 3], **conv}
    )
    # codes up to 30 x 16 = 480: most 2- and 4-bit codes and about half the 8-bit ones clip
    inputs = rng.random((4, 32, 9, 9), dtype=np.float32) * 30
    expected = run_onnxruntime_outputs(model, inputs)[0]
    prepared = prepare_module(model, target, batch=1)
    assert [layer.int16_chunk > 0 for layer in prepared.layers] == [True]
    [conv_function] = [
        f for name, f in _scheduled_functions(prepared, target).items() if "conv2d_int" in name
    ]
    assert "pmadd.ub.sw" in conv_function.script()
    got = run_module_outputs(compile_module(prepared.mod, target), inputs)[0]
    np.testing.assert_array_equal(got, expected)


def test_avx2_keeps_int32_products_where_int16_is_not_proven():
    """8-bit weights and 8-bit codes: one pair of products can leave int16 (vpmaddubsw would
    saturate), so the layer keeps vpmaddwd on int16 pairs."""
    target = _x86_target("haswell")
    weights = np.random.default_rng(7).integers(-127, 128, size=(16, 8, 3, 3))
    model = _qcdq_layer("conv", weights, 8, conv={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]})
    prepared = prepare_module(model, target, batch=1)
    assert [layer.int16_chunk for layer in prepared.layers] == [0]
    [conv_function] = [
        f for name, f in _scheduled_functions(prepared, target).items() if "conv2d_int" in name
    ]
    assert "pmadd.ub.sw" not in conv_function.script()
