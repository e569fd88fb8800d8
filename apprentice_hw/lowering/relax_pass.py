"""The Relax pass that turns dequantize -> conv2d / matmul into integer kernels.

TVM's ONNX importer keeps a QCDQ graph's structure: every quantized layer arrives as
``conv2d(dequantize(x_q), dequantize(W_q))`` (``matmul(..., permute_dims(dequantize(W_q)))`` for
Gemm). This pass replaces each such layer with

    acc   = <strategy kernel>(x_q, W stored at trained precision)    # exact int32
    y     = float(acc) * (s_x * s_w)                                  # one fused multiply

and leaves everything after it (bias, BatchNorm, residual adds, ReLU, the next quantize) as
elementwise ops that TVM fuses into that multiply; ``precision.py`` then moves them to float64.
It must run before constant folding, which would otherwise fold ``dequantize(W_q)`` into an fp32
weight tensor and erase the integers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np

from apprentice_hw.lowering import kernels
from apprentice_hw.lowering.channels_last import static_shape
from apprentice_hw.lowering.int16_sums import PAIR, SIGNED_CODE_MAX, int16_chunk
from apprentice_hw.lowering.kernels import ConvGeometry
from apprentice_hw.lowering.packing import BLOCK_IN, blocks_per_group, signed_bits_needed
from apprentice_hw.lowering.precision import REQUANT_BYTES, promote_to_float64
from apprentice_hw.lowering.requantize import (
    Requantization,
    accumulator_range,
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
from apprentice_hw.lowering.strategies import (
    QuantLayer,
    choose_strategy,
    storage_bits,
)

INTEGER_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


@dataclass(frozen=True)
class LoweredLayer:
    """What the lowering did with one conv2d / dense layer (one row of the report)."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    strategy: str  # kernel strategy name, or "float" when the layer was not lowered
    weight_bits: int | None = None  # signed bits the integer weights need
    storage_bits: int | None = None  # bits each weight takes in the module
    act_bits: int | None = None
    weight_bytes: int = 0  # bytes of the weight constant in the module
    scale_bytes: int = 0  # bytes of the per-layer requantization scale constant
    reason: str | None = None  # why a layer stayed float
    folded_batch_norm: bool = False  # the following BatchNorm is part of the requantization
    # how the next layer's codes are computed from the int32 sums: "float64" (the chain of
    # ``precision.py``), "affine float32" / "affine float64" (two operations, requantize.py),
    # "thresholds" (integer compares, codes of at most two bits), "integer" (a 64-bit
    # fixed-point line, where float32 is not proven) or "integer sqdmulh int16" / "... int32"
    # (the same line as AArch64's 32-bit high-half product, clipped in that type)
    requantization: str = "float64"
    # conv on AVX2 without VNNI or NEON: input blocks whose products are summed in int16 before
    # the int32 sum (``int16_sums.py``); 0 where products are int32 (vpmaddwd, VNNI, SDOT)
    int16_chunk: int = 0
    # input channels whose products share an int16 lane: 2 (vpmaddubsw, NEON's mla), 1 (smlal)
    int16_lane_inputs: int = 2

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class LoweringOptions:
    """Strategy choice: the target's preference order, and an optional forced strategy."""

    preference: tuple[str, ...]
    forced: str | None = None
    layer_names: dict[str, str] = field(default_factory=dict)  # weight digest -> ONNX node name
    dot_order: str = "16x4"  # conv weight block order the target's kernels read
    # conv kernels may add small products in int16 where ``int16_sums`` proves it exact
    # (x86 with AVX2 but no VNNI: ``vpmaddubsw``; NEON); such layers store their blocks as 16x4
    int16_sums: bool = False
    # int16 lanes hold one product each where codes fit a signed byte (NEON's ``smlal``)
    int16_signed_lanes: bool = False
    # a signed-byte dot product (SDOT): every conv layer uses it, codes shifted to signed bytes
    signed_dot: bool = False
    # requantization divides by a multiply and two FMAs (exact, cheaper on CPUs); GPUs divide
    fma_division: bool = True
    # integer-to-integer requantizations as two operations proven at compile time
    # (``requantize.py``); the proof models LLVM's CPU code (round half to even)
    proven_requantization: bool = True
    # integer lines as AArch64's ``sqdmulh`` (``HighHalfRequantization``) where they fit
    high_half_multiply: bool = False


@dataclass(frozen=True)
class _Accumulator:
    """A lowered layer's int32 sums, as its requantization needs them."""

    accumulator: object  # the Relax var holding the int32 sums
    scales: np.ndarray  # exact float64 scale per output channel
    rank: int
    channel_axis: int
    layer: int  # index into the lowering's layer records
    acc_low: np.ndarray  # per output channel, the smallest and largest reachable sum
    acc_high: np.ndarray


def weight_offsets(integers: np.ndarray) -> np.ndarray | None:
    """Per output channel, an offset that takes its integer weights into int8, or None where
    a channel spans more than 256 values (9-bit weights: uint8 codes minus a zero point)."""
    rows = integers.reshape(integers.shape[0], -1)
    low, high = rows.min(axis=1), rows.max(axis=1)
    if np.any(high - low > 255):
        return None
    return np.where(high > 127, high - 127, np.where(low < -128, low + 128, 0)).astype(np.int64)


def _along_out(offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``offsets`` (one per output channel) broadcast against (O, ...) ``weights``."""
    return offsets.reshape(-1, *([1] * (weights.ndim - 1)))


def weight_digest(values: np.ndarray) -> str:
    """A key that identifies a weight tensor by content (names do not survive the import)."""
    array = np.ascontiguousarray(values)
    return hashlib.sha1(str(array.shape).encode() + array.astype(np.int64).tobytes()).hexdigest()


def _const_value(expr) -> np.ndarray | None:
    import tvm

    if isinstance(expr, tvm.ir.expr.Constant):
        return expr.value.numpy()
    return None


def _make_pass():
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    op = tvm.ir.Op.get
    conv2d, matmul = op("relax.nn.conv2d"), op("relax.matmul")
    dequantize = op("relax.dequantize")
    permute_dims, call_tir = op("relax.permute_dims"), op("relax.call_tir")
    max_pool2d, batch_norm = op("relax.nn.max_pool2d"), op("relax.nn.batch_norm")
    multiply, maximum, minimum = op("relax.multiply"), op("relax.maximum"), op("relax.minimum")
    add, relu, quantize = op("relax.add"), op("relax.nn.relu"), op("relax.quantize")
    # ops that only move or select elements: they commute with a per-tensor dequantize
    layout_ops = tuple(
        op(f"relax.{name}") for name in ("reshape", "permute_dims", "squeeze", "expand_dims")
    )

    @mutator
    class IntegerLowering(PyExprMutator):
        def __init__(self, mod, options: LoweringOptions):
            super().__init__(mod)
            self.options = options
            self.layers: list[LoweredLayer] = []
            # float(acc) var -> what the requantization needs to know of its layer
            self._requantized: dict[object, _Accumulator] = {}
            # requantization constant (float32) -> its exact float64 value, for precision.py
            self.exact_constants: dict = {}
            # quantize var -> the (low, high) of the integer Clip that is its only consumer
            self.clipped: dict[object, tuple[int, int]] = {}
            self._binding_var = None

        def visit_var_binding_(self, binding):
            self._binding_var = binding.var
            super().visit_var_binding_(binding)

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
                    if not (isinstance(value, relax.Call) and value.op == quantize):
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

        def _requant_const(self, exact: np.ndarray):
            """A float32 stand-in for ``exact`` (the graph is float32 until precision.py runs),
            remembered so the float64 promotion puts the exact value back."""
            exact = np.asarray(exact, dtype=np.float64)
            const = relax.const(exact.astype(np.float32))
            self.exact_constants[const] = exact
            return const

        # -- matching helpers -------------------------------------------------------------
        def _bound(self, expr):
            if isinstance(expr, relax.Var):
                value = self.lookup_binding(expr)
                return value if value is not None else expr
            return expr

        def _dequantized(self, expr):
            """(codes expr, scale, zero point, axis) when ``expr`` is dequantize(codes)."""
            call = self._bound(expr)
            if not (isinstance(call, relax.Call) and call.op == dequantize):
                return None
            scale, zero = _const_value(call.args[1]), _const_value(call.args[2])
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
            while isinstance(call, relax.Call) and call.op in (max_pool2d, *layout_ops):
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
            if isinstance(call, relax.Call) and call.op in (maximum, minimum):  # channels_last
                bound = _const_value(call.args[1])
                if bound is None or bound.size != 1:
                    return None
                kind = "maximum" if call.op == maximum else "minimum"
                return kind, int(bound.reshape(-1)[0]), call.args[0]
            if not (isinstance(call, relax.Call) and call.op == call_tir):
                return None
            name = call.args[0].name_hint
            kind = next((k for k in ("maximum", "minimum") if name.startswith(k)), None)
            operands = call.args[1]
            if kind is None or not isinstance(operands, relax.Tuple) or len(operands) != 2:
                return None
            bound = _const_value(operands[1])
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
            if _const_value(codes) is not None:
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

        def _weights(self, expr, out_axis: int, transpose: bool):
            """Integer weights (out-channel first) and per-output scales, or a reason."""
            permuted = False
            call = self._bound(expr)
            if transpose:
                if not (isinstance(call, relax.Call) and call.op == permute_dims):
                    return None, "its weights are not a transposed constant"
                axes = [int(a) for a in call.attrs.axes] if call.attrs.axes is not None else [1, 0]
                if axes != [1, 0]:
                    return None, "its weights are permuted in an unsupported way"
                expr, permuted = call.args[0], True
            found = self._dequantized(expr)
            if found is None:
                return None, "its weights are not dequantized integer constants"
            codes, scale, zero, axis = found
            values = _const_value(codes)
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
                true_weights = layer.weights + _along_out(offsets, layer.weights)
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
            self._requantized[as_float] = _Accumulator(
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
            if not (isinstance(found, relax.Call) and found.op == multiply):
                return None
            requant = self._requantized.get(found.args[0])
            params = [_const_value(arg) for arg in call.args[1:5]]
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

        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op == conv2d:
                return self._visit_conv2d(call)
            if call.op == matmul:
                return self._visit_matmul(call)
            if call.op == batch_norm:
                folded = self._fold_batch_norm(call)
                return call if folded is None else folded
            if call.op == max_pool2d:
                pooled = self._pool_codes(call)
                return call if pooled is None else pooled
            if call.op in layout_ops:
                moved = self._layout_codes(call)
                return call if moved is None else moved
            if call.op == quantize and self.options.proven_requantization:
                codes = self._requantize(call)
                return call if codes is None else codes
            return call

        # -- requantization straight from the accumulators -----------------------------------
        def _per_channel(self, const, requant: _Accumulator) -> np.ndarray | None:
            """A constant of the requantization as one float64 value per output channel."""
            value = self.exact_constants.get(const)
            if value is None:
                value = _const_value(const)
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
            if isinstance(call, relax.Call) and call.op == add:
                offset, call = call.args[1], self._bound(call.args[0])
            if not (isinstance(call, relax.Call) and call.op == multiply):
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
            is_sum = isinstance(call, relax.Call) and call.op == add
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
            scale, zero = _const_value(call.args[1]), _const_value(call.args[2])
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
            if isinstance(bound, relax.Call) and bound.op == relu:
                data, with_relu = bound.args[0], True
            found = self._requantization_chain(data)
            if found is not None:
                requant, multiplier, offset = found
                chain = Requantization(
                    multiplier, offset, with_relu, out_scale, out_zero, low, high
                )
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
            kernel_weights = (
                integers if offsets is None else integers - _along_out(offsets, integers)
            )
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
            transposed = isinstance(bound, relax.Call) and bound.op == permute_dims
            weights, reason = self._weights(call.args[1], out_axis=1, transpose=transposed)
            if weights is None:
                return self._keep_float("dense", call, reason)
            return self._lower_layer("dense", call, activation, weights)

    return IntegerLowering


def lower_to_integer(mod, options: LoweringOptions):
    """Rewrite every quantized layer of ``mod['main']``; returns (new module, layer records)."""
    from tvm import relax

    lowering = _make_pass()(mod, options)
    lowering.find_clips(mod["main"])
    function = lowering.visit_expr(mod["main"])
    function = relax.analysis.remove_all_unused(function)
    new_mod = lowering.builder_.get()
    new_mod["main"] = function
    new_mod = promote_to_float64(new_mod, lowering.exact_constants, options.fma_division)
    # A folded BatchNorm leaves Tuple(y, mean, var)[0]: resolve it, or operator fusion stops at
    # the tuple and the ReLU / next quantize after each conv become a separate loop.
    return relax.transform.CanonicalizeBindings()(new_mod), lowering.layers
