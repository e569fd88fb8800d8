"""The integer lowering of one conv2d / dense layer: its integer weights, the kernel strategy,
the int32 accumulator and its record in the report."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tvm import relax

from apprentice_hw.lowering import kernels
from apprentice_hw.lowering import relax_ops as ops
from apprentice_hw.lowering.int16_sums import PAIR, SIGNED_CODE_MAX, int16_chunk
from apprentice_hw.lowering.kernels import ConvGeometry
from apprentice_hw.lowering.lowered import (
    Accumulator,
    LoweredLayer,
    along_out,
    const_value,
    weight_digest,
    weight_offsets,
)
from apprentice_hw.lowering.packing import BLOCK_IN, blocks_per_group, signed_bits_needed
from apprentice_hw.lowering.precision import REQUANT_BYTES
from apprentice_hw.lowering.requantize import (
    accumulator_range,
)
from apprentice_hw.lowering.strategies import (
    QuantLayer,
    choose_strategy,
    storage_bits,
)


class LayerLowering:
    """One conv2d / dense layer as an integer kernel, and its record in the report."""

    def _weights(self, expr, out_axis: int, transpose: bool):
        """Integer weights (out-channel first) and per-output scales, or a reason."""
        permuted = False
        call = self._bound(expr)
        if transpose:
            if not (isinstance(call, relax.Call) and call.op == ops.PERMUTE_DIMS):
                return None, "its weights are not a transposed constant"
            axes = [int(a) for a in call.attrs.axes] if call.attrs.axes is not None else [1, 0]
            if axes != [1, 0]:
                return None, "its weights are permuted in an unsupported way"
            expr, permuted = call.args[0], True
        found = self._dequantized(expr)
        if found is None:
            return None, "its weights are not dequantized integer constants"
        codes, scale, zero, axis = found
        values = const_value(codes)
        if values is None:
            return None, "its weights are computed at run time"
        axis = axis % values.ndim
        shape = [1] * values.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        scale_full = np.broadcast_to(scale.reshape(shape), values.shape)
        zero_full = np.broadcast_to(
            zero.reshape(shape if zero.size > 1 else [1] * values.ndim), values.shape
        )
        integers = values.astype(np.int64) - zero_full
        if permuted:
            pass  # stored (O, K): output axis 0 already
        elif out_axis != 0:
            integers, scale_full = (
                np.moveaxis(integers, out_axis, 0),
                np.moveaxis(scale_full, out_axis, 0),
            )
        per_out = scale_full.reshape(scale_full.shape[0], -1)
        if not np.all(per_out == per_out[:, :1]):
            return None, "its weight scales vary along the reduction"
        return (np.ascontiguousarray(integers), per_out[:, 0].copy()), None

    # -- rewriting --------------------------------------------------------------------

    def _name(self, kind: str, integers: np.ndarray) -> str:
        default = f"{kind}_{len(self.layers)}"
        return self.options.layer_names.get(weight_digest(integers), default)

    def _keep_float(self, kind: str, call, reason: str):
        shape = tuple(int(d) for d in call.args[1].ty.shape)
        self.layers.append(
            LoweredLayer(f"{kind}_{len(self.layers)}", kind, shape, "float", reason=reason)
        )
        return call

    def _lower(self, codes, layer: QuantLayer, act_scale: float, weight_scales, rank: int,
               offsets: np.ndarray | None = None):  # fmt: skip
        """Emit ``layer``'s kernel on ``codes`` and its requantization; returns the float.

        With ``offsets`` (per output channel), the layer's true weights are ``layer.weights
        + offsets``: 9-bit weights (asymmetric uint8 minus a zero point) as int8 ones plus
        ``offsets`` times the window sums of the codes (``_window_sums``), in int32.
        """
        strategy = choose_strategy(layer, self.options.preference, self.options.forced)
        accumulated = strategy.emit(self.builder_, codes, layer)
        channel_axis = layer.channel_axis
        shape = [1] * rank
        shape[channel_axis] = layer.out_channels
        true_weights, extra_bytes = layer.weights, 0
        if offsets is not None:
            sums = self._window_sums(codes, layer)
            offset_const = relax.const(offsets.reshape(shape).astype(np.int32), "int32")
            corrected = relax.op.add(accumulated, relax.op.multiply(sums, offset_const))
            accumulated = self.builder_.emit(corrected)
            true_weights = layer.weights + along_out(offsets, layer.weights)
            extra_bytes = int(offsets.size) * 4  # the int32 offsets
        exact = np.float64(act_scale) * weight_scales.astype(np.float64)
        uniform = bool(np.all(exact == exact[0]))
        scale_const = exact[:1].reshape(()) if uniform else exact.reshape(shape)
        record = LoweredLayer(
            name=layer.name, kind=layer.kind, weight_shape=tuple(layer.weights.shape),
            strategy=strategy.name, weight_bits=signed_bits_needed(true_weights),
            storage_bits=storage_bits(layer, strategy), act_bits=layer.act_bits,
            weight_bytes=int(strategy.weight_bytes(layer)) + extra_bytes,
            int16_chunk=layer.int16_chunk if strategy.name in ("int8", "packed") else 0,
            int16_lane_inputs=layer.int16_lane_inputs,
            # scalars are immediates
            scale_bytes=0 if uniform else int(scale_const.size * REQUANT_BYTES),
        )  # fmt: skip
        self.layers.append(record)
        as_float = self.builder_.emit(relax.op.astype(accumulated, "float32"))
        self._requantized[as_float] = Accumulator(
            accumulated, np.broadcast_to(exact, (layer.out_channels,)), rank, channel_axis,
            len(self.layers) - 1,
            *accumulator_range(true_weights, layer.act_range, layer.act_zero_point),
        )  # fmt: skip
        return relax.op.multiply(as_float, self._requant_const(scale_const))

    def _fold_batch_norm(self, call):
        """Fold a BatchNorm that follows a lowered layer into its requantization.

        ``float(acc) * s`` then ``(y - mean) / sqrt(var + eps) * gamma + beta`` becomes
        ``float(acc) * A + B`` with A and B computed in float64 at compile time: two float64
        roundings per value instead of six, and one multiply-add less per element.
        """
        found = self._bound(call.args[0])
        if not (isinstance(found, relax.Call) and found.op == ops.MULTIPLY):
            return None
        requant = self._requantized.get(found.args[0])
        params = [const_value(arg) for arg in call.args[1:5]]
        if requant is None or any(p is None for p in params):
            return None
        scales, rank, channel_axis = requant.scales, requant.rank, requant.channel_axis
        if int(call.attrs.axis) % rank != channel_axis:
            return None
        gamma, beta, mean, var = (p.astype(np.float64) for p in params)
        if not bool(call.attrs.scale):
            gamma = np.ones_like(gamma)
        if not bool(call.attrs.center):
            beta = np.zeros_like(beta)
        inv_std = gamma / np.sqrt(var + float(call.attrs.epsilon))
        shape = [1] * rank
        shape[channel_axis] = len(scales)
        multiplier64 = (scales * inv_std).reshape(shape)
        offset64 = (beta - mean * inv_std).reshape(shape)
        multiplier = self._requant_const(multiplier64)
        offset = self._requant_const(offset64)
        scaled = self.builder_.emit(relax.op.multiply(found.args[0], multiplier))
        folded = self.builder_.emit(relax.op.add(scaled, offset))
        self.layers[requant.layer] = replace(
            self.layers[requant.layer], folded_batch_norm=True,
            scale_bytes=int((multiplier64.size + offset64.size) * REQUANT_BYTES),
        )  # fmt: skip
        return relax.Tuple([folded, call.args[3], call.args[4]])

    def _visit_conv2d(self, call):
        attrs = call.attrs
        layout = str(attrs.data_layout)
        if layout not in ("NCHW", "NHWC") or str(attrs.kernel_layout) != "OIHW":
            return self._keep_float("conv2d", call, "layouts other than NCHW/NHWC, OIHW")
        if str(attrs.out_layout) != layout:
            return self._keep_float("conv2d", call, "output layout differs from the input's")
        activation, reason = self._activation(call.args[0])
        if activation is None:
            return self._keep_float("conv2d", call, reason)
        weights, reason = self._weights(call.args[1], out_axis=0, transpose=False)
        if weights is None:
            return self._keep_float("conv2d", call, reason)
        integers, groups = weights[0], int(attrs.groups)
        geometry = ConvGeometry(
            out_channels=int(integers.shape[0]), in_channels=int(integers.shape[1]) * groups,
            kernel=(int(integers.shape[2]), int(integers.shape[3])),
            strides=tuple(int(s) for s in attrs.strides),
            padding=tuple(int(p) for p in attrs.padding),
            dilation=tuple(int(d) for d in attrs.dilation), layout=layout, groups=groups,
        )  # fmt: skip
        return self._lower_layer("conv2d", call, activation, weights, geometry)

    def _lower_layer(self, kind: str, call, activation, weights, geometry=None):
        """Build the layer record from matched parts and lower it (or keep it float)."""
        codes, act_scale, act_zero, code_range = activation
        integers, weight_scales = weights
        bits = signed_bits_needed(integers)
        offsets = None
        if bits > 8:  # asymmetric uint8 weights minus their zero point: 9 bits
            offsets = weight_offsets(integers)
            grouped = geometry is not None and geometry.groups > 1
            if offsets is None or grouped:
                why = " (grouped convs: at most 8)" if offsets is not None else ""
                return self._keep_float(kind, call, f"weights need {bits} bits{why}")
        act_dtype = str(codes.ty.dtype)
        kernel_weights = integers if offsets is None else integers - along_out(offsets, integers)
        layer = QuantLayer(
            name=self._name(kind, integers), kind=kind, weights=kernel_weights,
            weight_bits=signed_bits_needed(kernel_weights), act_dtype=act_dtype,
            act_zero_point=act_zero, act_range=code_range, geometry=geometry,
        )  # fmt: skip
        chunk, lane_inputs, signed, wide = self._dot_choices(layer)
        layer = replace(
            layer, int16_chunk=chunk, int16_lane_inputs=lane_inputs, signed_codes=signed,
            wide_pairs=wide, dot_order="16x4" if chunk or wide else self.options.dot_order,
        )  # fmt: skip
        rank = 4 if kind == "conv2d" else 2
        return self._lower(codes, layer, act_scale, weight_scales, rank=rank, offsets=offsets)

    def _window_sums(self, codes, layer: QuantLayer):
        """int32 sums of (code - zero point) over each output's inputs, (..., 1) in the
        output's layout (``kernels.window_sums``): what the weight offsets multiply."""
        zero_point = layer.act_zero_point

        def sums(x):
            return kernels.window_sums(x, layer.geometry, zero_point)

        return self.builder_.emit_te(sums, codes, primfunc_name_hint="window_sums")

    def _dot_choices(self, layer: QuantLayer) -> tuple[int, int, bool, bool]:
        """How the conv's products are summed: its int16 chunk (0: int32 products), the
        input channels per int16 lane, whether its codes are signed bytes, and whether
        pairs of products go into int32 lanes (``wide_pairs``).

        SDOT cores take every conv layer in SDOT (codes shifted to signed bytes); NEON
        without it sums in int16 where proven, one product per lane (``smlal``, signed)
        where codes are at most 127, and elsewhere multiplies signed bytes into int16
        products added pairwise into int32 lanes (``smull`` + ``sadalp``: exact for every
        8-bit layer); AVX2 in pairs (``vpmaddubsw``).
        """
        options = self.options
        if layer.kind != "conv2d" or layer.grouped:  # plain int32 products
            return 0, PAIR, False, False
        if options.signed_dot:
            return 0, PAIR, True, False
        if not options.int16_sums:
            return 0, PAIR, False, False
        small = layer.code_max <= SIGNED_CODE_MAX
        lane_inputs = 1 if options.int16_signed_lanes and small else PAIR
        blocks_in = -(-int(layer.kernel_weights.shape[1]) // BLOCK_IN)
        group = blocks_per_group(layer.weight_bits, blocks_in)
        chunk = int16_chunk(layer.kernel_weights, layer.code_max, group, lane_inputs)
        if chunk == 0 and options.int16_signed_lanes:
            return 0, PAIR, True, True
        return chunk, lane_inputs, chunk > 0 and lane_inputs == 1, False

    def _visit_matmul(self, call):
        if len(call.args[0].ty.shape) != 2 or len(call.args[1].ty.shape) != 2:
            return self._keep_float("dense", call, "only 2-D matmul is lowered")
        activation, reason = self._activation(call.args[0])
        if activation is None:
            return self._keep_float("dense", call, reason)
        bound = self._bound(call.args[1])
        transposed = isinstance(bound, relax.Call) and bound.op == ops.PERMUTE_DIMS
        weights, reason = self._weights(call.args[1], out_axis=1, transpose=transposed)
        if weights is None:
            return self._keep_float("dense", call, reason)
        return self._lower_layer("dense", call, activation, weights)
