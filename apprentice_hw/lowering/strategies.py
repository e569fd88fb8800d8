"""Kernel strategies: how one quantized layer is stored and computed.

A strategy is a registered entry that says which layers it can serve (``unsupported`` returns
the reason it cannot, or None), how it stores the weights and which TE kernel it emits. The
lowering picks, per layer, the first strategy in the target's preference list that supports it
(``kernels`` in the target file; ``--kernel`` forces one where it applies).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from apprentice_hw.lowering import kernels
from apprentice_hw.lowering.packing import (
    BITSERIAL_IN,
    BLOCK_IN,
    BLOCK_OUT,
    bitserial_conv_weights,
    blocked_conv_weights,
    container_bits,
    pack_blocked,
    pack_flat,
    pack_rows,
)
from apprentice_hw.lowering.requantize import accumulator_range
from apprentice_hw.registry import Registry

DEFAULT_PREFERENCE = ("bitserial", "packed", "int8")


@dataclass(frozen=True)
class QuantLayer:
    """A conv2d or dense layer whose inputs are both dequantized integer tensors."""

    name: str
    kind: str  # "conv2d" or "dense"
    weights: np.ndarray  # signed integers, zero point removed: (O, C, KH, KW) or (O, K)
    weight_bits: int  # fewest signed bits that hold every weight
    act_dtype: str  # storage type of the quantized activation (uint8 / int8)
    act_zero_point: int
    act_range: tuple[int, int]  # smallest and largest code the activation can take
    geometry: kernels.ConvGeometry | None = None  # conv2d only
    dot_order: str = "16x4"  # order of a conv weight block in storage (packing.DOT_ORDERS)
    # input blocks whose products the conv kernel may sum in int16 before widening (proven by
    # ``int16_sums``; 0: int32 products throughout), and the input channels per int16 lane
    int16_chunk: int = 0
    int16_lane_inputs: int = 2
    # the conv kernel multiplies signed bytes (SDOT; smlal where codes are at most 127)
    signed_codes: bool = False
    # pairs of int16 products summed in int32 lanes (NEON's smull + sadalp; signed codes)
    wide_pairs: bool = False

    @property
    def code_shift(self) -> int:
        """What the conv kernel adds to each code: unsigned operands take int8 codes to uint8
        (+128); signed ones take uint8 codes that exceed 127 to int8 (-128)."""
        if self.signed_codes:
            return -128 if self.act_dtype == "uint8" and self.code_max > 127 else 0
        return 128 if self.act_dtype == "int8" else 0

    @property
    def code_max(self) -> int:
        """The largest code the conv kernel multiplies: int8 codes shifted to unsigned, the
        zero point (the padding value) included."""
        shift = 128 if self.act_dtype == "int8" else 0
        return max(self.act_range[1], self.act_zero_point) + shift

    @property
    def grouped(self) -> bool:
        """A grouped or depthwise conv (``kernels.conv2d_int_grouped``)."""
        return self.geometry is not None and self.geometry.groups > 1

    @property
    def out_channels(self) -> int:
        return int(self.weights.shape[0])

    @property
    def channel_axis(self) -> int:
        """The axis of the output tensor that holds its channels (1 in NCHW, 3 in NHWC)."""
        if self.geometry is not None and self.geometry.layout == "NHWC":
            return 3
        return 1

    @property
    def kernel_weights(self) -> np.ndarray:
        """The conv weights as the blocked integer kernel reduces over them: (O, KW * C, KH, 1),
        channel ``kx * C + c``, where its geometry folds kernel columns into channels
        (``ConvGeometry.folds_columns``); otherwise the weights themselves."""
        if self.geometry is None or not self.geometry.folds_columns:
            return self.weights
        out_ch, in_ch, kh, kw = self.weights.shape
        return self.weights.transpose(0, 3, 1, 2).reshape(out_ch, kw * in_ch, kh, 1)

    @property
    def reduction(self) -> int:
        """Weights per output channel (the length of one dot product)."""
        return int(np.prod(self.weights.shape[1:]))

    @property
    def act_bits(self) -> int:
        """Bits of the activation codes measured from the zero point (unsigned if lo >= zp)."""
        low = self.act_range[0] - self.act_zero_point
        high = self.act_range[1] - self.act_zero_point
        if low >= 0:
            return max(1, int(high).bit_length())
        return max(int(high).bit_length(), int(-low - 1).bit_length()) + 1


@dataclass(frozen=True)
class KernelStrategy:
    """One way to store and compute a quantized layer."""

    name: str
    description: str
    unsupported: Callable[[QuantLayer], str | None]
    weight_bytes: Callable[[QuantLayer], int]
    emit: Callable[[Any, Any, QuantLayer], Any]  # (block builder, activation expr, layer) -> int32


KERNEL_STRATEGIES: Registry[KernelStrategy] = Registry("kernel strategy")


def _const(value: np.ndarray):
    from tvm import relax

    return relax.const(np.ascontiguousarray(value))


def stored_weights(layer: QuantLayer, storage: str) -> np.ndarray:
    """The weight constant the module holds for ``layer`` in ``storage`` (int8 or packed).

    Conv weights are laid out in the blocks the dot-product kernels read (16 output x 4 input
    channels, zero-padded to whole blocks); dense weights are (O, K) rows; grouped conv
    weights (K, O) columns, packed back to back (``pack_flat``).
    """
    if layer.grouped:  # (K, O): the output channels of one window position side by side
        columns = np.ascontiguousarray(layer.weights.reshape(layer.out_channels, -1).T)
        return (
            pack_flat(columns, layer.weight_bits)
            if storage == "packed"
            else columns.astype(np.int8)
        )
    if layer.kind == "conv2d":
        blocked = blocked_conv_weights(layer.kernel_weights, layer.dot_order)
        if storage == "packed":
            return pack_blocked(blocked, layer.weight_bits)
        if layer.dot_order == "pairs":
            return blocked.reshape(*blocked.shape[:-1], 2, BLOCK_OUT, 2)
        return blocked.reshape(*blocked.shape[:-1], BLOCK_OUT, BLOCK_IN)
    rows = layer.weights.reshape(layer.out_channels, -1)
    return pack_rows(rows, layer.weight_bits) if storage == "packed" else rows.astype(np.int8)


def _emit_dense_or_conv(bb, data, layer: QuantLayer, storage: str):
    # emit_te passes only tensors and plain numbers through, so the static layer parameters
    # travel in a closure.
    zero_point, bits = layer.act_zero_point, layer.weight_bits
    weights = stored_weights(layer, storage)
    if layer.grouped:

        def grouped(x, w):
            return kernels.conv2d_int_grouped(x, w, layer.geometry, zero_point, storage, bits)

        return bb.emit_te(grouped, data, _const(weights),
                          primfunc_name_hint=f"conv2d_int_grouped_{storage}")  # fmt: skip
    if layer.kind == "conv2d":
        # The blocked kernel pads with the zero point and subtracts zero point x sum(weights)
        # per output channel afterwards (int8 codes are shifted to uint8, zero point with them);
        # with a zero point of 0 the sums are not needed and not stored.
        inputs = [data, _const(weights)]
        if zero_point + layer.code_shift:
            sums = layer.weights.reshape(layer.out_channels, -1).sum(axis=1).astype(np.int32)
            inputs.append(_const(sums))

        def conv(x, w, *sums):
            return kernels.conv2d_int_blocked(
                x, w, layer.geometry, zero_point, storage, bits, *sums, order=layer.dot_order,
                int16_chunk=layer.int16_chunk, lane_inputs=layer.int16_lane_inputs,
                signed_codes=layer.signed_codes, code_shift=layer.code_shift,
                wide_pairs=layer.wide_pairs,
            )  # fmt: skip

        return bb.emit_te(conv, *inputs, primfunc_name_hint=f"conv2d_int_{storage}")

    def dense(x, w):
        return kernels.dense_int(
            x, w, layer.out_channels, layer.reduction, zero_point, storage, bits
        )

    return bb.emit_te(dense, data, _const(weights), primfunc_name_hint=f"dense_int_{storage}")


def _int8_unsupported(layer: QuantLayer) -> str | None:
    if layer.weight_bits > 8:
        return f"weights need {layer.weight_bits} bits"
    return None


def _emit_int8(bb, data, layer: QuantLayer):
    return _emit_dense_or_conv(bb, data, layer, "int8")


def _packed_unsupported(layer: QuantLayer) -> str | None:
    if layer.weight_bits > 4:
        return f"weights need {layer.weight_bits} bits; packing helps only up to 4"
    return None


def _emit_packed(bb, data, layer: QuantLayer):
    return _emit_dense_or_conv(bb, data, layer, "packed")


BITSERIAL_MAX_COUNT = (1 << 16) - 1  # the kernel's per-lane counts are uint16


def _bitserial_unsupported(layer: QuantLayer) -> str | None:
    if layer.kind != "conv2d":
        return "only conv2d has a bit-serial kernel"
    if layer.grouped:
        return "grouped convolutions have no bit-serial kernel"
    if layer.act_range[0] < layer.act_zero_point or layer.act_zero_point != 0:
        return "activations must be unsigned with zero point 0"
    if layer.act_bits > 2:
        return f"activations have {layer.act_bits} bits; bit-serial pays off only up to 2"
    if layer.weight_bits > 2:
        return f"weights have {layer.weight_bits} bits; bit-serial takes ternary or 2-bit"
    _, in_ch, kh, kw = layer.weights.shape
    if -(-in_ch // BITSERIAL_IN) * BITSERIAL_IN * kh * kw > BITSERIAL_MAX_COUNT:
        return f"{in_ch} x {kh} x {kw} inputs per output overflow the kernel's 16-bit counts"
    return None


INT16_SUMS = (-32767, 32766)  # sums int16 holds with room for ~t and a threshold one above


def sums_dtype(layer: QuantLayer) -> str:
    """int16 where every sum the layer can produce (and its complement ~t) fits: the
    threshold requantization then compares eight lanes per vector instead of four."""
    low, high = accumulator_range(layer.weights, layer.act_range, layer.act_zero_point)
    fits = int(low.min(initial=0)) >= INT16_SUMS[0] and int(high.max(initial=0)) <= INT16_SUMS[1]
    return "int16" if fits else "int32"


def _emit_bitserial(bb, data, layer: QuantLayer):
    coefficients, planes = bitserial_conv_weights(layer.weights)
    dtype = sums_dtype(layer)

    def conv(x, w):
        return kernels.conv2d_bitserial(
            x, w, coefficients, layer.geometry, layer.act_bits, out_dtype=dtype
        )

    return bb.emit_te(conv, data, _const(planes), primfunc_name_hint="conv2d_bitserial")


KERNEL_STRATEGIES.add(
    "int8",
    KernelStrategy(
        name="int8",
        description="int8 weights x 8-bit activation codes, int32 accumulation",
        unsupported=_int8_unsupported,
        weight_bytes=lambda layer: stored_weights(layer, "int8").nbytes,
        emit=_emit_int8,
    ),
)
KERNEL_STRATEGIES.add(
    "packed",
    KernelStrategy(
        name="packed",
        description=(
            "2 or 4 weights per byte at trained precision, in the dot-product kernels' block "
            "order; unpacked in registers next to the dot products"
        ),
        unsupported=_packed_unsupported,
        weight_bytes=lambda layer: stored_weights(layer, "packed").nbytes,
        emit=_emit_packed,
    ),
)
KERNEL_STRATEGIES.add(
    "bitserial",
    KernelStrategy(
        name="bitserial",
        description=(
            "popcount over activation and weight bit planes, 16 input channels per pair of "
            "bytes (ternary or 2-bit weights, unsigned activations of at most 2 bits)"
        ),
        unsupported=_bitserial_unsupported,
        weight_bytes=lambda layer: int(bitserial_conv_weights(layer.weights)[1].nbytes),
        emit=_emit_bitserial,
    ),
)


def choose_strategy(
    layer: QuantLayer, preference: tuple[str, ...], forced: str | None = None
) -> KernelStrategy:
    """The forced strategy when it supports ``layer``, else the first preferred one that does."""
    order = ((forced,) if forced else ()) + (tuple(preference) or DEFAULT_PREFERENCE) + ("int8",)
    for name in order:
        strategy = KERNEL_STRATEGIES.get(name)
        if strategy.unsupported(layer) is None:
            return strategy
    raise ValueError(f"no kernel strategy supports layer {layer.name}")


def storage_bits(layer: QuantLayer, strategy: KernelStrategy) -> int:
    """Bits each weight occupies in the module under ``strategy``."""
    if strategy.name == "int8":
        return 8
    if strategy.name == "packed":
        return container_bits(layer.weight_bits)
    return 8 * strategy.weight_bytes(layer) // max(1, layer.weights.size)
