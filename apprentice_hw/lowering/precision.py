"""Float64 requantization: the float ops between integer kernels, computed exactly enough.

After the integer lowering, what is left in float is the requantization between kernels:
``float(acc) * A + B`` (scales and a folded BatchNorm), residual adds, ReLU, global average
pooling, and ``quantize`` back to integer codes. Computed in float32, each of these rounds at
2^-24 relative, and every rounding that lands a value on the other side of a ``round()``
boundary changes an integer code; through 20-100 layers those flips grow into several output
steps (measured: up to 6 steps on ResNet-56 W2A8, with 10-40% of inputs off by one step).
Brevitas itself disagrees with its own float64 evaluation in the same way.

In float64 the same ops round at 2^-53, so the module computes what the Brevitas model computes
in exact arithmetic (see ``apprentice_hw.verify.brevitas_outputs``) on every input: the integer
accumulations are exact, and the float ops around them agree with the exact values to ~1e-16.
The cost is small: the requantization is a few ops per output element against K*K*C
multiply-adds per output element in the kernel before it.

``promote_to_float64`` runs after ``lower_to_integer``. It rewrites the float region of
``main``: casts of accumulators become float64, ``dequantize``/``quantize`` (whose Relax
versions compute in float32 only) become explicit float64 ops, float32 constants become the
exact float64 values the lowering recorded (or their float64 widening), and the outputs are
cast back to float32 so the module's interface does not change.
"""

from __future__ import annotations

REQUANT_BYTES = 8  # bytes of one requantization constant in the module (float64)


def _cast_outputs(function, dtype: str):
    """``function`` with its float64 outputs cast to ``dtype`` (the module's interface)."""
    from tvm import relax

    body = function.body
    output = body.body
    bb = relax.BlockBuilder()

    def cast(expr):
        ty = expr.ty
        if isinstance(ty, relax.TensorType) and str(ty.dtype) == "float64":
            return bb.emit(relax.op.astype(expr, dtype))
        if isinstance(ty, relax.TupleType):
            return relax.Tuple(
                [cast(bb.emit(relax.TupleGetItem(expr, i))) for i in range(len(ty.fields))]
            )
        return expr

    attrs = function.attrs
    attrs = {key: attrs[key] for key in attrs.keys()} if attrs is not None else None  # noqa: SIM118 (DictAttrs iterates values)
    with bb.function("main", list(function.params), attrs=attrs):
        with bb.dataflow():
            for block in body.blocks:
                for binding in block.bindings:
                    bb.emit_normalized(binding)
            result = bb.emit_output(cast(output))
        bb.emit_func_output(result)
    return bb.get()["main"]


def promote_to_float64(mod, exact: dict, fma_division: bool = True):
    """``mod`` with its float requantization ops in float64 (see the module docstring).

    ``fma_division``: quantize divides with ``divide_exactly`` (CPUs) instead of a division
    (GPUs: their float64 division is a library sequence already, and TVM's CUDA kernels keep
    the fused epilogue in registers only with the plain division).
    """
    from tvm import relax

    from apprentice_hw.lowering.float64_pass import Float64Promotion

    promotion = Float64Promotion(mod, exact, fma_division)
    function = promotion.visit_expr(mod["main"])
    new_mod = promotion.builder_.get()
    new_mod["main"] = relax.analysis.remove_all_unused(_cast_outputs(function, "float32"))
    return new_mod
