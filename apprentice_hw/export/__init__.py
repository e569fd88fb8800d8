"""Export of the trained student to QCDQ ONNX and QONNX, with an ONNX Runtime check."""

from apprentice_hw.export.onnx_export import (
    INPUT_NAME,
    OUTPUT_NAME,
    check_with_onnxruntime,
    export_qcdq,
    export_qonnx_model,
    output_quant_step,
)

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "check_with_onnxruntime",
    "export_qcdq",
    "export_qonnx_model",
    "output_quant_step",
]
