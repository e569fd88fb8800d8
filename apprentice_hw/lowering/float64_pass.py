"""The Relax mutator behind ``precision.promote_to_float64``: dequantize, the ops between
layers and quantize in float64, with the exact constants the lowering recorded. Importing this
module loads TVM; ``precision`` imports it when it runs."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax
from tvm.ir.expr import Constant
from tvm.relax.expr_functor import PyExprMutator, mutator

_op = tvm.ir.Op.get
ASTYPE, DEQUANTIZE, QUANTIZE = _op("relax.astype"), _op("relax.dequantize"), _op("relax.quantize")
CALL_TIR = _op("relax.call_tir")


def dtype_of(expr) -> str | None:
    ty = expr.ty
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


def is_integer(dtype: str | None) -> bool:
    return dtype is not None and dtype.startswith(("int", "uint"))


def f64_const(values):
    """A float64 constant (``relax.const`` narrows float64 arrays to float32 by default)."""
    return relax.const(np.asarray(values, dtype=np.float64), "float64")


def along_axis(values: np.ndarray, axis: int, rank: int) -> np.ndarray:
    """A per-channel parameter shaped to broadcast along ``axis`` of a rank-``rank`` tensor."""
    if values.size == 1:
        return values.reshape(())
    shape = [1] * rank
    shape[axis % rank] = values.size
    return values.reshape(shape)


@mutator
class Float64Promotion(PyExprMutator):
    """Moves the float requantization ops between integer layers to float64 (``precision``)."""

    def __init__(self, mod, exact: dict, fma_division: bool):
        super().__init__(mod)
        self.exact = exact  # float32 constant -> its exact float64 value
        self.fma_division = fma_division

    def _constant(self, expr):
        """A float32 constant as float64 (its exact value when the lowering kept one)."""
        if isinstance(expr, Constant) and dtype_of(expr) == "float32":
            exact = self.exact.get(expr)
            value = exact if exact is not None else expr.value.numpy().astype(np.float64)
            return f64_const(value)
        return expr

    def _to_float64(self, expr):
        if dtype_of(expr) == "float32":
            if isinstance(expr, Constant):
                return self._constant(expr)
            return self.builder_.emit(relax.op.astype(expr, "float64"))
        return expr

    def _qparams(self, call, rank: int):
        scale = call.args[1].value.numpy().astype(np.float64)
        zero = call.args[2].value.numpy().astype(np.float64)
        axis = int(call.attrs.axis)
        return along_axis(scale, axis, rank), along_axis(zero, axis, rank)

    def _dequantize(self, call, codes):
        """(codes - zero point) * scale in float64: exact for 8-bit codes."""
        scale, zero = self._qparams(call, len(codes.ty.shape))
        shifted = relax.op.subtract(
            self.builder_.emit(relax.op.astype(codes, "float64")), f64_const(zero)
        )
        return relax.op.multiply(self.builder_.emit(shifted), f64_const(scale))

    def _quantize(self, call, data):
        """clip(round(x / scale) + zero point) as Relax's quantize computes it, in float64."""
        data = self._to_float64(data)
        scale, zero = self._qparams(call, len(data.ty.shape))
        out_dtype = str(call.attrs.out_dtype)
        info = np.iinfo(out_dtype)
        if self.fma_division:
            quotient = self.builder_.emit_te(
                divide_exactly, data, f64_const(scale), f64_const(1.0 / scale),
                primfunc_name_hint="divide_exactly",
            )  # fmt: skip
        else:
            quotient = self.builder_.emit(relax.op.divide(data, f64_const(scale)))
        rounded = self.builder_.emit(relax.op.round(quotient))
        shifted = self.builder_.emit(relax.op.add(rounded, f64_const(zero)))
        low = self.builder_.emit(relax.op.maximum(shifted, f64_const(float(info.min))))
        clipped = self.builder_.emit(relax.op.minimum(low, f64_const(float(info.max))))
        return relax.op.astype(clipped, out_dtype)

    def _call_tir(self, call, args):
        """A TIR kernel compiled for float32 inputs keeps them: cast what became float64
        back (float64 operands, e.g. ``requantize``'s constants, stay as they are)."""
        if not isinstance(args[1], relax.Tuple):
            return relax.Call(call.op, args, call.attrs, call.ty_args)
        operands = [
            self.builder_.emit(relax.op.astype(a, "float32"))
            if dtype_of(a) == "float64" and dtype_of(original) == "float32"
            else a
            for a, original in zip(args[1].fields, call.args[1].fields, strict=True)
        ]
        return relax.Call(
            call.op, [args[0], relax.Tuple(operands), *args[2:]], call.attrs, call.ty_args
        )

    def visit_call_(self, call):
        args = [self.visit_expr(arg) for arg in call.args]
        first = dtype_of(args[0]) if args else None
        widens = is_integer(first) or first == "float64"
        if call.op == ASTYPE and str(call.attrs.dtype) == "float32" and widens:
            return relax.op.astype(args[0], "float64")
        constant_qparams = len(args) == 3 and all(isinstance(a, Constant) for a in args[1:])
        if call.op == DEQUANTIZE and is_integer(first) and constant_qparams:
            return self._dequantize(call, args[0])
        if call.op == QUANTIZE:
            if constant_qparams:
                return self._quantize(call, args[0])
            # Scales computed at run time: Relax's float32 quantize, fed float32.
            data = args[0]
            if first == "float64":
                data = self.builder_.emit(relax.op.astype(data, "float32"))
            return relax.Call(call.op, [data, *args[1:]], call.attrs, call.ty_args)
        if call.op == CALL_TIR:
            return self._call_tir(call, args)
        if any(dtype_of(a) == "float64" for a in args if not isinstance(a, Constant)):
            args = [self._constant(a) for a in args]
            args = [self._to_float64(a) for a in args]
        return relax.Call(call.op, args, call.attrs, call.ty_args)


def divide_exactly(data, divisor, reciprocal):
    """``data / divisor`` rounded exactly as a division rounds it, with three FMA-class ops.

    A float64 division costs about ten cycles per vector where a multiply costs one, and every
    requantization divides (``round(x / scale)``, two or three per output of a residual block).
    ``reciprocal`` is ``1 / divisor`` correctly rounded; then ``q = x * reciprocal`` is within an
    ulp of the quotient, ``r = x - divisor * q`` is exact in one fused multiply-add, and
    ``q + r * reciprocal`` (fused) is the correctly rounded quotient (Markstein's theorem; see
    Muller et al., Handbook of Floating-Point Arithmetic): bit for bit what the division gives,
    so the integer codes after ``round`` cannot move. The FMAs are LLVM's ``llvm.fma``, fused
    by definition (TVM's ``tirx.fma`` becomes ``llvm.fmuladd``, which LLVM may split into a
    multiply and an add where the CPU lacks FMA: measured off by an ulp). Where the CPU lacks
    FMA, ``llvm.fma`` is a libm call, so ``fma_division`` is for CPUs that have it.
    """
    from tvm import te, tirx

    def fma(a, b, c):
        return tirx.call_llvm_pure_intrin("float64", "llvm.fma", a, b, c)

    def at(tensor, index):
        """``tensor`` (broadcast NumPy-style against the output) at the output ``index``."""
        rank = len(tensor.shape)
        if rank == 0:
            return tensor()
        trailing = index[len(index) - rank :]
        return tensor[tuple(0 if int(tensor.shape[k]) == 1 else i for k, i in enumerate(trailing))]

    def quotient(*index):
        x, b, y = data(*index), at(divisor, index), at(reciprocal, index)
        guess = x * y
        remainder = fma(-b, guess, x)
        exact = fma(remainder, y, guess)
        # an infinite input makes the remainder NaN; the division would give the infinity
        return tirx.Select(tirx.isnan(remainder), guess, exact)

    return te.compute(data.shape, quotient, name="divide_exactly")
