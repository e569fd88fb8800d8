"""The Relax mutator that turns dequantize -> conv2d / matmul into integer kernels.

``IntegerLowering`` is assembled from three parts of readable size: ``ActivationCodes`` (which
activations are integer codes, and their range), ``LayerLowering`` (one layer's integer
kernel) and ``RequantizationLowering`` (the next layer's codes from the int32 sums). Importing this
module loads TVM; ``relax_pass.lower_to_integer`` imports it when it runs.
"""

from __future__ import annotations

from tvm.relax.expr_functor import PyExprMutator, mutator

from apprentice_hw.lowering import relax_ops as ops
from apprentice_hw.lowering.lowered import Accumulator, LoweredLayer, LoweringOptions
from apprentice_hw.lowering.pass_activations import ActivationCodes
from apprentice_hw.lowering.pass_layers import LayerLowering
from apprentice_hw.lowering.pass_requantize import RequantizationLowering


@mutator
class IntegerLowering(PyExprMutator, ActivationCodes, LayerLowering, RequantizationLowering):
    """Rewrites every quantized layer of a Relax function (see ``relax_pass``).

    ``PyExprMutator`` comes first: TVM's ``mutator`` wraps the class around its first base. The
    parts only add methods of their own (none overrides one of ``PyExprMutator``'s).
    """

    def __init__(self, mod, options: LoweringOptions):
        super().__init__(mod)
        self.options = options
        self.layers: list[LoweredLayer] = []
        # float(acc) var -> what the requantization needs to know of its layer
        self._requantized: dict[object, Accumulator] = {}
        # requantization constant (float32) -> its exact float64 value, for precision.py
        self.exact_constants: dict = {}
        # quantize var -> the (low, high) of the integer Clip that is its only consumer
        self.clipped: dict[object, tuple[int, int]] = {}
        self._binding_var = None

    def visit_var_binding_(self, binding):
        self._binding_var = binding.var
        super().visit_var_binding_(binding)

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if call.op == ops.CONV2D:
            return self._visit_conv2d(call)
        if call.op == ops.MATMUL:
            return self._visit_matmul(call)
        if call.op == ops.BATCH_NORM:
            folded = self._fold_batch_norm(call)
            return call if folded is None else folded
        if call.op == ops.MAX_POOL2D:
            pooled = self._pool_codes(call)
            return call if pooled is None else pooled
        if call.op in ops.LAYOUT_OPS:
            moved = self._layout_codes(call)
            return call if moved is None else moved
        if call.op == ops.QUANTIZE and self.options.proven_requantization:
            codes = self._requantize(call)
            return call if codes is None else codes
        return call
