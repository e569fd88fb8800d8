"""LiteRT's own full-integer int8 model of a zoo network: the LiteRT peer of ``arm_cost.py``.

Runs in a Python environment of its own (``arm_cost.py`` makes it in its cache, pinned in
``LITERT_CONVERTER``): litert-torch converts without TensorFlow, and its dependencies (jax,
transformers, its own ai-edge-litert) stay out of the project's environment.

1. The fp32 network exactly as ``arm_cost.py`` builds it (``torch.manual_seed(0)``, zoo
   model, untrained), its stem max pooling's padding written as zero padding (below).
2. ``litert_torch.convert`` with NHWC input: BatchNorm folded, ReLU fused.
3. TFLite's post-training full-integer quantizer (the calibrator and ``QuantizeModel`` that
   ``tf.lite.TFLiteConverter`` runs with a representative dataset), shipped in ai-edge-litert:
   per-channel int8 weights, int8 activations, int32 bias, calibrated on the images ONNX
   Runtime's int8 model is calibrated on (``arm_cost.py`` saves them for this script, which
   cannot import ``latency.py``: that needs the project's whole environment). Input and output
   stay float32 (QUANTIZE and DEQUANTIZE inside the model), as ONNX Runtime's QDQ model takes
   floats.

    python litert_int8.py resnet20 CLASSES CALIBRATION.npy OUT.tflite
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import FloatLayers


def fp32_network(name: str, classes: int) -> torch.nn.Module:
    """The network ``arm_cost.py`` exports for ONNX Runtime, seeded alike."""
    torch.manual_seed(0)
    return build_model(ModelSpec(name), FloatLayers(), 3, classes).eval()


def zero_padded_max_pool(model: torch.nn.Module) -> torch.nn.Module:
    """The stem's max pooling (padding 1) as zero padding and an unpadded pool.

    Its input is a ReLU's output (>= 0), so zero padding gives the same maxima as torch's
    -inf padding (``main`` checks it). litert-torch writes the -inf padding as a PADV2 whose
    float constant the int8 quantizer leaves float, and the model then fails to load.
    """
    pool = getattr(model, "maxpool", None)
    if isinstance(pool, torch.nn.MaxPool2d) and pool.padding:
        pad = pool.padding if isinstance(pool.padding, int) else pool.padding[0]
        model.maxpool = torch.nn.Sequential(
            torch.nn.ZeroPad2d(pad),
            torch.nn.MaxPool2d(pool.kernel_size, pool.stride, 0, pool.dilation,
                               ceil_mode=pool.ceil_mode),
        )  # fmt: skip
    return model


def nhwc(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())


def convert_fp32(model: torch.nn.Module, size: int) -> bytes:
    import litert_torch

    channels_last = litert_torch.to_channel_last_io(model, args=[0]).eval()
    converted = litert_torch.convert(channels_last, (torch.rand(1, size, size, 3),))
    return bytes(converted.model_content())


def quantize_int8(fp32_model: bytes, images: torch.Tensor) -> bytes:
    from ai_edge_litert import _pywrap_tensorflow_lite_calibration_wrapper as calibration

    calibrator = calibration.CalibrationWrapper(fp32_model, [], [])
    calibrator.Prepare([[1, images.shape[2], images.shape[3], 3]])
    for image in images:
        calibrator.FeedTensor([nhwc(image[None])])
    f32, i8, i32 = (np.dtype(t).num for t in (np.float32, np.int8, np.int32))
    # input, output, allow_float, activations, bias, disable_per_channel,
    # disable_per_channel_for_dense (as tensorflow/lite/python/optimize/calibrator.py)
    return bytes(calibrator.QuantizeModel(f32, f32, False, i8, i32, False, False))


def agreement(fp32_model: bytes, int8_model: bytes, x: torch.Tensor) -> float:
    """Cosine of the int8 and fp32 logits, each centered on its mean over ``x``."""
    from ai_edge_litert.interpreter import Interpreter

    def run(content: bytes) -> np.ndarray:
        interpreter = Interpreter(model_content=content, num_threads=1)
        interpreter.allocate_tensors()
        inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        rows = []
        for sample in nhwc(x):
            interpreter.set_tensor(inp["index"], sample[None])
            interpreter.invoke()
            rows.append(interpreter.get_tensor(out["index"])[0].copy())
        return np.stack(rows)

    a, b = run(fp32_model), run(int8_model)
    a, b = a - a.mean(0), b - b.mean(0)
    return float(np.sum(a * b) / np.linalg.norm(a) / np.linalg.norm(b))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="zoo model name")
    parser.add_argument("classes", type=int)
    parser.add_argument("calibration", type=Path, help="calibration images, (N, 3, S, S) .npy")
    parser.add_argument("out", type=Path, help="the int8 .tflite to write")
    args = parser.parse_args()
    images = torch.from_numpy(np.load(args.calibration))
    size = images.shape[-1]
    model = zero_padded_max_pool(fp32_network(args.model, args.classes))
    torch.manual_seed(2)
    probe = torch.rand(2, 3, size, size)
    with torch.no_grad():
        original = fp32_network(args.model, args.classes)
        assert torch.equal(model(probe), original(probe)), "max pool differs"
    fp32_model = convert_fp32(model, size)
    int8_model = quantize_int8(fp32_model, images)
    partial = args.out.with_suffix(".partial")
    partial.write_bytes(int8_model)
    partial.replace(args.out)
    torch.manual_seed(1)  # inputs other than the calibration images
    cosine = agreement(fp32_model, int8_model, torch.rand(8, 3, size, size))
    print(f"{args.out}: {len(int8_model)} bytes; int8 vs fp32 centered cosine {cosine:.3f}")


if __name__ == "__main__":
    main()
