"""The integer lowering's view of activations: which tensors are dequantized integer codes,
and over which range (integer Clips, max pools and layout ops seen through)."""

from __future__ import annotations

import numpy as np
from tvm import relax

from apprentice_hw.lowering import relax_ops as ops
from apprentice_hw.lowering.lowered import (
    INTEGER_RANGES,
    const_value,
)


class ActivationCodes:
    """Which activations are dequantized integer codes, and over which range."""

    def find_clips(self, function) -> None:
        """Note, for each quantize whose codes only an integer Clip reads (QCDQ's
        Quantize -> Clip of a 2- or 4-bit activation), the Clip's bounds: the
        requantization then has to be proven on the levels the Clip lets through only,
        not on all 255 of the storage type (ResNet-18 W4A4: 7 -> 19 of 21 layers proven in
        float32, 2026-12-07)."""
        for block in function.body.blocks:
            if not isinstance(block, relax.DataflowBlock):
                continue
            users = relax.analysis.udchain(block)
            values = {binding.var: binding.value for binding in block.bindings}
            for var, value in values.items():
                if not (isinstance(value, relax.Call) and value.op == ops.QUANTIZE):
                    continue
                low, high, current = -(1 << 31), 1 << 31, var
                while len(users.get(current, [])) == 1:
                    user = users[current][0]
                    clip = self._integer_clip(values.get(user))
                    if clip is None or not clip[2].same_as(current):
                        break
                    kind, bound, _ = clip
                    low, high = (max(low, bound), high) if kind == "maximum" else (
                        low, min(high, bound))  # fmt: skip
                    current = user
                if current is not var:
                    self.clipped[var] = (low, high)

    def _bound(self, expr):
        if isinstance(expr, relax.Var):
            value = self.lookup_binding(expr)
            return value if value is not None else expr
        return expr

    def _dequantized(self, expr):
        """(codes expr, scale, zero point, axis) when ``expr`` is dequantize(codes)."""
        call = self._bound(expr)
        if not (isinstance(call, relax.Call) and call.op == ops.DEQUANTIZE):
            return None
        scale, zero = const_value(call.args[1]), const_value(call.args[2])
        if scale is None or zero is None:
            return None
        return (
            call.args[0],
            scale.astype(np.float32),
            zero.astype(np.int64),
            int(call.attrs.axis),
        )

    def _code_range(self, codes) -> tuple[int, int] | None:
        """Smallest and largest value an integer activation tensor can hold."""
        dtype = str(codes.ty.dtype)
        if dtype not in INTEGER_RANGES:
            return None
        low, high = INTEGER_RANGES[dtype]
        call = self._bound(codes)
        while isinstance(call, relax.Call) and call.op in (ops.MAX_POOL2D, *ops.LAYOUT_OPS):
            call = self._bound(call.args[0])  # keeps the range
        while (clip := self._integer_clip(call)) is not None:
            kind, bound, call = clip
            if kind == "maximum":
                low = max(low, bound)
            else:
                high = min(high, bound)
            call = self._bound(call)
        return low, high

    def _integer_clip(self, call):
        """("maximum" | "minimum", bound, input) for one half of an imported integer Clip.

        TVM's ONNX importer turns ``Clip`` into ``call_tir`` of ``topi.maximum`` and
        ``topi.minimum`` kernels (named after them) with a scalar constant bound: the only
        trace of a narrow (2- or 4-bit) activation range after import (``channels_last``
        makes them Relax's maximum / minimum ops).
        """
        if isinstance(call, relax.Call) and call.op in (ops.MAXIMUM, ops.MINIMUM):  # channels_last
            bound = const_value(call.args[1])
            if bound is None or bound.size != 1:
                return None
            kind = "maximum" if call.op == ops.MAXIMUM else "minimum"
            return kind, int(bound.reshape(-1)[0]), call.args[0]
        if not (isinstance(call, relax.Call) and call.op == ops.CALL_TIR):
            return None
        name = call.args[0].name_hint
        kind = next((k for k in ("maximum", "minimum") if name.startswith(k)), None)
        operands = call.args[1]
        if kind is None or not isinstance(operands, relax.Tuple) or len(operands) != 2:
            return None
        bound = const_value(operands[1])
        if bound is None or bound.size != 1:
            return None
        return kind, int(bound.reshape(-1)[0]), operands[0]

    def _pool_codes(self, call):
        """``max_pool(dequantize(codes))`` as ``dequantize(max_pool(codes))``, or None.

        Max pooling commutes with dequantization (a positive scale keeps the order; the
        integer pool pads with the smallest code, which never wins a window that holds a
        real value), so the pool runs once on the integer codes: the conv after it stays
        integer, and a residual branch that dequantizes it reads a quarter of the values.
        This is the ImageNet ResNets' stem (conv, ReLU quantizer, max pool).
        """
        found = self._dequantized(call.args[0])
        if found is None or found[1].size != 1 or float(found[1].reshape(-1)[0]) <= 0:
            return None
        codes = found[0]
        a = call.attrs
        pooled = self.builder_.emit(
            relax.op.nn.max_pool2d(
                codes, pool_size=[int(v) for v in a.pool_size],
                strides=[int(v) for v in a.strides], padding=[int(v) for v in a.padding],
                dilation=[int(v) for v in a.dilation], ceil_mode=bool(a.ceil_mode),
                count_include_pad=bool(a.count_include_pad), layout=str(a.layout),
                out_layout=str(a.out_layout),
            )
        )  # fmt: skip
        source = self._bound(call.args[0])
        return relax.op.dequantize(
            pooled, source.args[1], source.args[2], axis=int(source.attrs.axis),
            out_dtype=str(source.attrs.out_dtype),
        )  # fmt: skip

    def _layout_codes(self, call):
        """``op(dequantize(codes))`` as ``dequantize(op(codes))`` for an op that only moves
        elements (reshape, transpose, squeeze, unsqueeze), or None.

        With one scale and zero point for the whole tensor the two commute, so the integer
        codes reach the next layer through the op: a fully connected layer after
        ``Flatten`` (FINN's CNV: NHWC -> NCHW -> flatten) stays integer. Weights (constant
        codes) keep their dequantize where ``_weights`` looks for it.
        """
        found = self._dequantized(call.args[0])
        if found is None or found[1].size != 1 or found[2].size != 1:
            return None
        codes = found[0]
        if const_value(codes) is not None:
            return None
        moved = self.builder_.emit(relax.Call(call.op, [codes, *call.args[1:]], call.attrs))
        source = self._bound(call.args[0])
        rank = len(call.ty.shape)
        return relax.op.dequantize(
            moved, source.args[1], source.args[2], axis=rank - 1,
            out_dtype=str(source.attrs.out_dtype),
        )  # fmt: skip

    def _activation(self, expr):
        found = self._dequantized(expr)
        if found is None:
            return None, "its input is not a dequantized integer tensor"
        codes, scale, zero, _ = found
        if scale.size != 1 or zero.size != 1:
            return None, "per-channel activation scales are not supported"
        code_range = self._code_range(codes)
        if code_range is None:
            return None, f"activation codes are {codes.ty.dtype}, not uint8/int8"
        return (codes, float(scale.reshape(-1)[0]), int(zero.reshape(-1)[0]), code_range), None
