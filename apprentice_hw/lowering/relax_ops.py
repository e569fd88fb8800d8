"""The Relax operators the integer lowering matches, by handle (importing this loads TVM)."""

from __future__ import annotations

import tvm

_op = tvm.ir.Op.get
CONV2D = _op("relax.nn.conv2d")
MATMUL = _op("relax.matmul")
DEQUANTIZE = _op("relax.dequantize")
QUANTIZE = _op("relax.quantize")
PERMUTE_DIMS = _op("relax.permute_dims")
CALL_TIR = _op("relax.call_tir")
MAX_POOL2D = _op("relax.nn.max_pool2d")
BATCH_NORM = _op("relax.nn.batch_norm")
MULTIPLY = _op("relax.multiply")
MAXIMUM = _op("relax.maximum")
MINIMUM = _op("relax.minimum")
ADD = _op("relax.add")
RELU = _op("relax.nn.relu")
# Ops that only move or select elements: they commute with a per-tensor dequantize.
LAYOUT_OPS = tuple(
    _op(f"relax.{name}") for name in ("reshape", "permute_dims", "squeeze", "expand_dims")
)
