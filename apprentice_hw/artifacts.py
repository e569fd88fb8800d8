"""File names inside a build directory, shared by the steps that write them and the commands
that read them back (``verify``, ``tune``, ``deploy``, ``report``)."""

MODULE_FILE = "model.so"  # the compiled TVM module (CPU and GPU targets)
QCDQ_FILE = "model.qcdq.onnx"  # the model in the canonical quantized form
QONNX_FILE = "model.qonnx.onnx"  # a trained student's QONNX export (hls4ml reads it)
INPUTS_FILE = "inputs.npy"  # ``compile``: the inputs the module was checked on
BUNDLE_DIR = "bundle"  # the deploy bundle: module, run.py, manifest, verification inputs
REPORT_BATCHES = (1, 8)  # batch sizes of the memory report (the paper's Figure 1)
