"""Requantization between lowered layers: the next layer's codes from the int32 sums, as
thresholds, two float operations, an integer line or the float64 chain."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from tvm import relax

from apprentice_hw.lowering import relax_ops as ops
from apprentice_hw.lowering.channels_last import static_shape
from apprentice_hw.lowering.lowered import (
    INTEGER_RANGES,
    Accumulator,
    const_value,
)
from apprentice_hw.lowering.requantize import (
    Requantization,
    fit_affine_requantization,
    fit_affine_sum,
    fit_high_half_requantization,
    fit_integer_requantization,
    fit_integer_sum,
    fit_threshold_sum,
    fit_thresholds,
    high_half_requantize,
    integer_accumulator_requantize,
    integer_requantize,
    requantize_accumulator,
    threshold_requantize,
)


class RequantizationLowering:
    """The next layer's codes from a lowered layer's int32 sums, proven where it can be."""

    def _requant_const(self, exact: np.ndarray):
        """A float32 stand-in for ``exact`` (the graph is float32 until precision.py runs),
        remembered so the float64 promotion puts the exact value back."""
        exact = np.asarray(exact, dtype=np.float64)
        const = relax.const(exact.astype(np.float32))
        self.exact_constants[const] = exact
        return const

    # -- matching helpers -------------------------------------------------------------

    def _per_channel(self, const, requant: Accumulator) -> np.ndarray | None:
        """A constant of the requantization as one float64 value per output channel."""
        value = self.exact_constants.get(const)
        if value is None:
            value = const_value(const)
            if value is None:
                return None
            value = value.astype(np.float64)
        channels = len(requant.scales)
        if value.size == 1:
            return np.full(channels, float(value.reshape(-1)[0]))
        axes = [axis for axis, extent in enumerate(value.shape) if extent != 1]
        along = requant.channel_axis - (requant.rank - value.ndim)
        if axes != [along] or value.size != channels:
            return None
        return value.reshape(-1).copy()

    def _requantization_chain(self, expr):
        """(accumulator record, A, B) when ``expr`` is float(acc) * A (+ B)."""
        call = self._bound(expr)
        if isinstance(call, relax.TupleGetItem) and call.index == 0:  # folded BatchNorm
            source = self._bound(call.tuple_value)
            if not isinstance(source, relax.Tuple):
                return None
            call = self._bound(source.fields[0])
        offset = None
        if isinstance(call, relax.Call) and call.op == ops.ADD:
            offset, call = call.args[1], self._bound(call.args[0])
        if not (isinstance(call, relax.Call) and call.op == ops.MULTIPLY):
            return None
        requant = self._requantized.get(call.args[0])
        if requant is None:
            return None
        multiplier = self._per_channel(call.args[1], requant)
        offsets = (
            np.zeros_like(multiplier)
            if offset is None or multiplier is None
            else self._per_channel(offset, requant)
        )  # fmt: skip
        if multiplier is None or offsets is None:
            return None
        return requant, multiplier, offsets

    def _dequantized_sum(self, expr):
        """(code tensors, scale, zero point, code ranges) when ``expr`` is dequantize(a) or
        dequantize(a) + dequantize(b) of same-shaped tensors with one scalar scale and
        zero point (a residual add; a tensor re-quantized to another scale)."""
        call = self._bound(expr)
        is_sum = isinstance(call, relax.Call) and call.op == ops.ADD
        operands = list(call.args) if is_sum else [expr]
        shape = static_shape(expr)
        codes, qparams, ranges = [], set(), []
        for operand in operands:
            found = self._dequantized(operand)
            if found is None or found[1].size != 1 or found[2].size != 1:
                return None
            code_range = self._code_range(found[0])
            if code_range is None or shape is None or static_shape(found[0]) != shape:
                return None
            codes.append(found[0])
            qparams.add((float(found[1].reshape(-1)[0]), int(found[2].reshape(-1)[0])))
            ranges.append(code_range)
        if len(qparams) != 1:
            return None
        ((scale, zero),) = qparams
        return codes, scale, zero, ranges

    def _requantize(self, call):
        """``quantize`` of a requantization as thresholds, two float operations or an
        integer line on integers, where ``requantize.py`` proves the codes the same as the
        float64 chain's:
        ``relu?(float(acc) * A + B)`` straight from a layer's accumulators, and
        ``relu?(dequantize(a) [+ dequantize(b)])`` from the integer sum of the codes."""
        out_dtype = str(call.attrs.out_dtype)
        scale, zero = const_value(call.args[1]), const_value(call.args[2])
        if out_dtype not in INTEGER_RANGES or scale is None or zero is None:
            return None
        if scale.size != 1 or zero.size != 1:
            return None
        out_scale, out_zero = float(np.float32(scale.reshape(-1)[0])), int(zero.reshape(-1)[0])
        low, high = INTEGER_RANGES[out_dtype]
        clip_low, clip_high = self.clipped.get(self._binding_var, (low, high))
        low, high = max(low, clip_low), min(high, clip_high)
        if low > high:
            return None
        data, with_relu = call.args[0], False
        bound = self._bound(data)
        if isinstance(bound, relax.Call) and bound.op == ops.RELU:
            data, with_relu = bound.args[0], True
        found = self._requantization_chain(data)
        if found is not None:
            requant, multiplier, offset = found
            chain = Requantization(multiplier, offset, with_relu, out_scale, out_zero, low, high)
            thresholds = fit_thresholds(chain, requant.acc_low, requant.acc_high)
            if thresholds is not None:
                self._record(requant.layer, "thresholds", thresholds.nbytes)
                return self._emit_thresholds(
                    [requant.accumulator], 0, thresholds, out_dtype, requant.channel_axis
                )
            affine = fit_affine_requantization(chain, requant.acc_low, requant.acc_high)
            if affine is None or affine.dtype == "float64":
                high_half = None
                if self.options.high_half_multiply:
                    high_half = fit_high_half_requantization(
                        chain, requant.acc_low, requant.acc_high
                    )
                if high_half is not None:
                    kind = f"integer sqdmulh {high_half.dtype}"
                    self._record(requant.layer, kind, high_half.nbytes)
                    return self._emit_high_half(
                        requant.accumulator, high_half, out_dtype, requant.channel_axis
                    )
                integer = fit_integer_requantization(chain, requant.acc_low, requant.acc_high)
                if integer is not None:
                    self._record(requant.layer, "integer", integer.nbytes)
                    return self._emit_integer(
                        requant.accumulator, integer, out_dtype, requant.channel_axis
                    )
            if affine is None:
                return None
            nbytes = int(affine.offset.nbytes + affine.multiplier.nbytes)
            self._record(requant.layer, f"affine {affine.dtype}", nbytes)
            return self._emit_requantize(
                [requant.accumulator], 0, affine, out_dtype, requant.channel_axis
            )
        summed = self._dequantized_sum(data)
        if summed is None:
            return None
        terms, in_scale, in_zero, ranges = summed
        thresholds = fit_threshold_sum(
            in_scale, in_zero, ranges, with_relu, out_scale, out_zero, low, high
        )
        if thresholds is not None:
            return self._emit_thresholds(terms, in_zero, thresholds, out_dtype, 0)
        integer = fit_integer_sum(
            in_scale, in_zero, ranges, with_relu, out_scale, out_zero, low, high
        )
        if integer is not None:
            return self.builder_.emit_te(
                lambda *tensors: integer_requantize(list(tensors), integer, out_dtype, in_zero),
                *terms, primfunc_name_hint="requantize",
            )  # fmt: skip
        affine = fit_affine_sum(
            in_scale, in_zero, ranges, with_relu, out_scale, out_zero, low, high
        )
        if affine is None:
            return None
        return self._emit_requantize(terms, in_zero, affine, out_dtype, 0)

    def _record(self, layer: int, requantization: str, scale_bytes: int) -> None:
        """The layer record's requantization kind and the bytes of its constants."""
        self.layers[layer] = replace(
            self.layers[layer], requantization=requantization, scale_bytes=scale_bytes
        )

    def _emit_thresholds(self, terms, zero_point, form, out_dtype, axis):
        rows, masks = form.kernel_constants()
        levels = len(rows)
        # int16 sums (a narrow bit-serial accumulator, codes) compare in int16: eight
        # lanes per vector. Their t and ~t lie in [-32767, 32766], so thresholds clipped
        # to int16 decide every compare as before.
        narrow = all(str(term.ty.dtype) in ("int16", "int8", "uint8") for term in terms)
        dtype = "int16" if narrow else "int32"
        if narrow:
            rows = [np.clip(row, -32768, 32767).astype(np.int16) for row in rows]
            masks = None if masks is None else masks.astype(np.int16)

        count = len(terms)

        def codes(*tensors):  # the rows, the terms, then the masks where there are any
            terms_, rest = tensors[levels : levels + count], tensors[levels + count :]
            return threshold_requantize(
                list(terms_),
                tensors[:levels],
                form.low,
                out_dtype,
                axis,
                zero_point,
                masks=rest[0] if rest else None,
            )

        constants = [relax.const(np.ascontiguousarray(row), dtype) for row in rows]
        extra = [] if masks is None else [relax.const(masks, dtype)]
        return self.builder_.emit_te(
            codes, *constants, *terms, *extra, primfunc_name_hint="requantize"
        )

    def _emit_integer(self, accumulator, form, out_dtype, axis):
        def codes(*tensors):
            return integer_accumulator_requantize(
                tensors[-1], list(tensors[:-1]), form.shift, out_dtype, axis
            )

        constants = [relax.const(a, str(a.dtype)) for a in form.kernel_constants()]
        return self.builder_.emit_te(
            codes, *constants, accumulator, primfunc_name_hint="requantize"
        )

    def _emit_high_half(self, accumulator, form, out_dtype, axis):
        def codes(*tensors):
            return high_half_requantize(
                tensors[-1], list(tensors[:-1]), form.shift, form.low, form.high,
                out_dtype, axis, form.dtype,
            )  # fmt: skip

        constants = [relax.const(a, str(a.dtype)) for a in form.kernel_constants()]
        return self.builder_.emit_te(
            codes, *constants, accumulator, primfunc_name_hint="requantize"
        )

    def _emit_requantize(self, terms, zero_point, affine, out_dtype, axis):
        def codes(offsets, multipliers, *tensors):
            return requantize_accumulator(
                list(tensors), offsets, multipliers, affine.low, affine.high, out_dtype,
                axis, zero_point,
            )  # fmt: skip

        return self.builder_.emit_te(
            codes, relax.const(affine.offset, affine.dtype),
            relax.const(affine.multiplier, affine.dtype), *terms,
            primfunc_name_hint="requantize",
        )  # fmt: skip
