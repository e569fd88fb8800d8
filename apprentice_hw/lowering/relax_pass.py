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

from apprentice_hw.lowering.lowered import LoweringOptions
from apprentice_hw.lowering.precision import promote_to_float64


def lower_to_integer(mod, options: LoweringOptions):
    """Rewrite every quantized layer of ``mod['main']``; returns (new module, layer records)."""
    from tvm import relax

    from apprentice_hw.lowering.integer_pass import IntegerLowering

    lowering = IntegerLowering(mod, options)
    lowering.find_clips(mod["main"])
    function = lowering.visit_expr(mod["main"])
    function = relax.analysis.remove_all_unused(function)
    new_mod = lowering.builder_.get()
    new_mod["main"] = function
    new_mod = promote_to_float64(new_mod, lowering.exact_constants, options.fma_division)
    # A folded BatchNorm leaves Tuple(y, mean, var)[0]: resolve it, or operator fusion stops at
    # the tuple and the ReLU / next quantize after each conv become a separate loop.
    return relax.transform.CanonicalizeBindings()(new_mod), lowering.layers
