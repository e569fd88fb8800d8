"""Channels-last (NHWC) activations between layers, for the CPU kernels.

The blocked integer conv (``kernels.conv2d_int_blocked``) reads four input channels of one pixel
as one 32-bit word and finishes sixteen output channels of one pixel per vector register. In
NCHW both are strided: every layer re-laid its input out into blocks of four channels, and its
fused epilogue (requantization, residual add, the next quantize) gathered each output vector
from the accumulators with a 64-byte stride. In NHWC both are contiguous, the padding pass is a
copy of whole pixels, and the epilogue reads and writes sixteen channels at a time.

This pass runs on the imported float graph, before the integer lowering: the graph input is
transposed once, every op that has an NHWC form (conv2d, elementwise and broadcast ops,
quantize / dequantize, BatchNorm, pooling, reductions over the spatial axes) gets it, and a
tensor is transposed back only where an op has no such form, and at the function's outputs, so
the module's interface does not change. It changes where values sit in memory, not one
arithmetic operation: the module's outputs are the same bits.
"""

from __future__ import annotations

import numpy as np

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)
NHWC_AXIS = {0: 0, 1: 3, 2: 1, 3: 2}  # an NCHW axis -> the same axis in NHWC
NCHW, NHWC = "NCHW", "NHWC"

# ops whose only tensor operand is the first and whose output has its layout
UNARY_OPS = (
    "relax.nn.relu", "relax.astype", "relax.round", "relax.clip", "relax.floor", "relax.ceil",
    "relax.abs", "relax.negative", "relax.sigmoid", "relax.tanh", "relax.nn.silu",
)  # fmt: skip
BINARY_OPS = (
    "relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum",
    "relax.minimum",
)  # fmt: skip
POOL_OPS = ("relax.nn.max_pool2d", "relax.nn.avg_pool2d")
REDUCE_OPS = ("relax.mean", "relax.sum", "relax.max")


def _rank(expr) -> int | None:
    from tvm import relax

    ty = expr.ty
    if isinstance(ty, relax.TensorType) and ty.shape is not None:
        return len(ty.shape)
    return None


def static_shape(expr) -> tuple[int, ...] | None:
    """A tensor expression's shape when every dimension is a known integer, else None."""
    from tvm import relax

    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    values = getattr(ty.shape, "values", None)
    if values is None or not all(hasattr(v, "value") for v in values):
        return None
    return tuple(int(v.value) for v in values)


class _ChannelsLast:
    """Rebuilds ``main`` binding by binding, each value in NHWC where it has an NHWC form."""

    def __init__(self, bb):
        self.bb = bb
        self.values: dict = {}  # old var -> (new expr, NHWC | "BATCH_NORM_NHWC" | None)
        self.converted: dict = {}  # (new expr, target layout) -> transposed var

    # -- values in a wanted layout ----------------------------------------------------------
    def _transposed(self, expr, axes: tuple[int, ...], layout: str):
        from tvm import relax

        key = (expr, layout)
        if key not in self.converted:
            self.converted[key] = self.bb.emit(relax.op.permute_dims(expr, list(axes)))
        return self.converted[key]

    def nchw(self, expr):
        """``expr`` (an old expression) with every variable in its original layout."""
        from tvm import relax

        if isinstance(expr, relax.Var) and expr in self.values:
            new, layout = self.values[expr]
            return self._transposed(new, TO_NCHW, NCHW) if layout == NHWC else new
        if isinstance(expr, relax.Tuple):
            return relax.Tuple([self.nchw(field) for field in expr.fields])
        return expr

    def nhwc(self, expr):
        """``expr`` as an NHWC operand of a broadcast op, or None when it cannot be one."""
        from tvm import relax
        from tvm.ir.expr import Constant

        if isinstance(expr, Constant):
            value = expr.value.numpy()
            if value.size == 1:
                return expr
            if value.ndim > 4:
                return None
            value = value.reshape((1,) * (4 - value.ndim) + value.shape)
            return relax.const(np.ascontiguousarray(value.transpose(TO_NHWC)), str(value.dtype))
        if isinstance(expr, relax.Var) and expr in self.values:
            new, layout = self.values[expr]
            if layout == NHWC:
                return new
            if _rank(new) == 4:
                return self._transposed(new, TO_NHWC, NHWC)
            shape = static_shape(new)
            return new if shape is not None and int(np.prod(shape)) == 1 else None
        return None

    def is_nhwc(self, expr) -> bool:
        from tvm import relax

        return isinstance(expr, relax.Var) and self.values.get(expr, (None, None))[1] == NHWC

    # -- one binding ------------------------------------------------------------------------
    def rewrite(self, value):
        """(new expression, layout) for one bound value."""
        import tvm
        from tvm import relax

        if isinstance(value, relax.TupleGetItem):
            source = self.values.get(value.tuple_value)
            if source is not None and source[1] == "BATCH_NORM_NHWC":
                layout = NHWC if value.index == 0 else None
                return relax.TupleGetItem(source[0], value.index), layout
            return relax.TupleGetItem(self.nchw(value.tuple_value), value.index), None
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
            rewritten = self._rewrite_call(value, value.op.name)
            if rewritten is not None:
                return rewritten
        return self._fallback(value)

    def _fallback(self, value):
        """The value as it was, on NCHW operands."""
        from tvm import relax

        if isinstance(value, relax.Call):
            args = [self.nchw(arg) for arg in value.args]
            new = relax.Call(value.op, args, value.attrs, value.ty_args)
        else:
            new = self.nchw(value)
        return new, None

    def _rewrite_call(self, call, name: str):
        from tvm import relax

        args, attrs = call.args, call.attrs
        if name == "relax.nn.conv2d":
            return self._conv2d(call)
        if name in BINARY_OPS:
            if not any(self.is_nhwc(arg) for arg in args):
                return None
            operands = [self.nhwc(arg) for arg in args]
            if any(operand is None for operand in operands):
                return None
            return relax.Call(call.op, operands, attrs, call.ty_args), NHWC
        if name == "relax.call_tir":
            return self._integer_clip(call)
        if not (args and self.is_nhwc(args[0])):
            return None
        data = self.nhwc(args[0])
        if name in UNARY_OPS:
            return relax.Call(call.op, [data, *args[1:]], attrs, call.ty_args), NHWC
        if name in ("relax.quantize", "relax.dequantize"):
            op = relax.op.quantize if name == "relax.quantize" else relax.op.dequantize
            axis = NHWC_AXIS[int(attrs.axis) % 4]
            return op(data, args[1], args[2], axis=axis, out_dtype=str(attrs.out_dtype)), NHWC
        if name == "relax.nn.batch_norm" and int(attrs.axis) % 4 == 1:
            return relax.op.nn.batch_norm(
                data, *args[1:5], axis=3, epsilon=float(attrs.epsilon), center=bool(attrs.center),
                scale=bool(attrs.scale), momentum=float(attrs.momentum),
                training=bool(attrs.training),
            ), "BATCH_NORM_NHWC"  # fmt: skip
        if name in POOL_OPS and str(attrs.layout) == NCHW and str(attrs.out_layout) == NCHW:
            op = relax.op.nn.max_pool2d if name == POOL_OPS[0] else relax.op.nn.avg_pool2d
            return op(
                data, pool_size=[int(v) for v in attrs.pool_size],
                strides=[int(v) for v in attrs.strides], padding=[int(v) for v in attrs.padding],
                dilation=[int(v) for v in attrs.dilation], ceil_mode=bool(attrs.ceil_mode),
                count_include_pad=bool(attrs.count_include_pad), layout=NHWC, out_layout=NHWC,
            ), NHWC  # fmt: skip
        if name in REDUCE_OPS and attrs.axis is not None:
            return self._reduce(call, data)
        if name == "relax.reshape":
            shape = static_shape(args[0])
            if shape is not None and shape[2] == shape[3] == 1:  # same order in both layouts
                return relax.op.reshape(data, args[1]), None
        return None

    def _conv2d(self, call):
        """conv2d(NCHW data, OIHW kernel) as conv2d(NHWC data, OIHW kernel) -> NHWC."""
        from tvm import relax

        attrs = call.attrs
        layouts = (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout))
        if layouts != (NCHW, "OIHW", NCHW) or _rank(call.args[0]) != 4:
            return None
        data = self.nhwc(call.args[0])
        if data is None:
            return None
        out_dtype = str(attrs.out_dtype)
        out_dtype = None if out_dtype in ("", "void", "None") else out_dtype
        return relax.op.nn.conv2d(
            data, self.nchw(call.args[1]), strides=[int(v) for v in attrs.strides],
            padding=[int(v) for v in attrs.padding], dilation=[int(v) for v in attrs.dilation],
            groups=int(attrs.groups), data_layout=NHWC, kernel_layout="OIHW", out_layout=NHWC,
            out_dtype=out_dtype,
        ), NHWC  # fmt: skip

    def _integer_clip(self, call):
        """TVM's ONNX importer imports Clip as ``call_tir`` of ``topi.maximum`` / ``minimum``
        with a scalar bound: the same op on NHWC data (its TIR function has a fixed shape)."""
        from tvm import relax
        from tvm.ir.expr import Constant

        name = call.args[0].name_hint
        kind = next((k for k in ("maximum", "minimum") if name.startswith(k)), None)
        operands = call.args[1]
        if kind is None or not isinstance(operands, relax.Tuple) or len(operands) != 2:
            return None
        data, bound = operands[0], operands[1]
        if not self.is_nhwc(data):
            return None
        if not isinstance(bound, Constant) or bound.value.numpy().size != 1:
            return None
        op = relax.op.maximum if kind == "maximum" else relax.op.minimum
        return op(self.nhwc(data), bound), NHWC

    def _reduce(self, call, data):
        from tvm import relax

        axes = sorted(int(a) % 4 for a in call.attrs.axis)
        keepdims = bool(call.attrs.keepdims)
        if not keepdims and axes != [2, 3]:
            return None  # only reducing H and W leaves the same (N, C) in both layouts
        op = {"relax.mean": relax.op.mean, "relax.sum": relax.op.sum, "relax.max": relax.op.max}
        reduced = op[call.op.name](data, axis=[NHWC_AXIS[a] for a in axes], keepdims=keepdims)
        return reduced, NHWC if keepdims else None


def to_channels_last(mod):
    """``mod`` with ``main``'s 4-D activations in NHWC between its ops (see the module doc).

    A ``main`` of other shape than the ONNX importer's (one dataflow block of plain bindings)
    is returned unchanged.
    """
    import tvm
    from tvm import relax

    function = mod["main"]
    body = function.body
    if not isinstance(body, relax.SeqExpr) or len(body.blocks) != 1:
        return mod
    block = body.blocks[0]
    if not isinstance(block, relax.DataflowBlock) or not all(
        isinstance(binding, relax.VarBinding) for binding in block.bindings
    ):
        return mod
    if not any(
        isinstance(b.value, relax.Call) and getattr(b.value.op, "name", "") == "relax.nn.conv2d"
        for b in block.bindings
    ):
        return mod
    bb = relax.BlockBuilder(mod)
    rewriter = _ChannelsLast(bb)
    attrs = function.attrs
    attrs = {key: attrs[key] for key in attrs.keys()} if attrs is not None else None  # noqa: SIM118 (DictAttrs iterates values)
    with bb.function("channels_last", list(function.params), attrs=attrs):
        with bb.dataflow():
            for param in function.params:
                if _rank(param) == 4:
                    nhwc = bb.emit(relax.op.permute_dims(param, list(TO_NHWC)))
                    rewriter.values[param] = (nhwc, NHWC)
                else:
                    rewriter.values[param] = (param, None)
            for binding in block.bindings:
                new, layout = rewriter.rewrite(binding.value)
                rewriter.values[binding.var] = (bb.emit(new), layout)
            result = bb.emit_output(rewriter.nchw(body.body))
        bb.emit_func_output(result)
    built = bb.get()
    new_mod = tvm.IRModule({gvar: func for gvar, func in built.functions_items()
                            if gvar.name_hint != "channels_last"}, attrs=mod.attrs)  # fmt: skip
    main = relax.analysis.remove_all_unused(built["channels_last"]).without_attr("global_symbol")
    symbol = function.attrs.get("global_symbol") if function.attrs is not None else None
    new_mod["main"] = main if symbol is None else main.with_attr("global_symbol", symbol)
    return new_mod
