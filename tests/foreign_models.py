"""Quantized networks that are not in the zoo, built the way their users build them.

``apprentice-hw compile`` is for models the project has never seen: these are written with
plain Brevitas layers (its default quantizers with a bit width, not this project's presets) and
with plain torch layers quantized by ONNX Runtime's ``quantize_static``. Each architecture has
what a foreign model brings: a FINN-CNV-style net (convs, max pools, ``Flatten``, fully
connected layers), a MobileNet-style net (depthwise + pointwise convs), and an MLP. Small
shapes, so that every variant exports, compiles and runs in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from apprentice_hw.brevitas_compat import brevitas_export, brevitas_nn

INPUT_SHAPES = {"cnv": (3, 16, 16), "mobilenet": (3, 16, 16), "mlp": (1, 8, 8)}
CLASSES = 10


def _conv_block(qnn, bits: int, act_bits: int, cin: int, cout: int, **conv) -> list[nn.Module]:
    return [
        qnn.QuantConv2d(cin, cout, bias=False, weight_bit_width=bits, **conv),
        nn.BatchNorm2d(cout),
        qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=True),
    ]


def brevitas_net(arch: str, bits: int, act_bits: int) -> nn.Module:
    """A Brevitas ``arch`` with ``bits``-bit weights and ``act_bits``-bit activations; the
    input and the output are 8-bit (a quantized output gives the comparison its step)."""
    qnn = brevitas_nn()
    head = [qnn.QuantIdentity(bit_width=8, return_quant_tensor=True)]
    tail = [qnn.QuantIdentity(bit_width=8)]
    if arch == "cnv":
        body = [
            *_conv_block(qnn, bits, act_bits, 3, 16, kernel_size=3, padding=1),
            *_conv_block(qnn, bits, act_bits, 16, 16, kernel_size=3, padding=1),
            nn.MaxPool2d(2),
            *_conv_block(qnn, bits, act_bits, 16, 32, kernel_size=3),
            nn.MaxPool2d(2),
            nn.Flatten(),
            qnn.QuantLinear(32 * 3 * 3, 64, bias=False, weight_bit_width=bits),
            nn.BatchNorm1d(64),
            qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=True),
            qnn.QuantLinear(64, CLASSES, bias=True, weight_bit_width=bits),
        ]
    elif arch == "mobilenet":
        body = [
            *_conv_block(qnn, bits, act_bits, 3, 16, kernel_size=3, stride=2, padding=1),
            *_conv_block(qnn, bits, act_bits, 16, 16, kernel_size=3, padding=1, groups=16),
            *_conv_block(qnn, bits, act_bits, 16, 64, kernel_size=1),
            *_conv_block(
                qnn, bits, act_bits, 64, 64, kernel_size=3, stride=2, padding=1, groups=64
            ),
            *_conv_block(qnn, bits, act_bits, 64, 128, kernel_size=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            qnn.QuantIdentity(bit_width=8, return_quant_tensor=True),
            qnn.QuantLinear(128, CLASSES, bias=True, weight_bit_width=bits),
        ]
    elif arch == "mlp":
        head = [nn.Flatten(), *head]
        body = [
            qnn.QuantLinear(64, 48, bias=False, weight_bit_width=bits),
            nn.BatchNorm1d(48),
            qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=True),
            qnn.QuantLinear(48, 32, bias=True, weight_bit_width=bits),
            qnn.QuantReLU(bit_width=act_bits, return_quant_tensor=True),
            qnn.QuantLinear(32, CLASSES, bias=True, weight_bit_width=bits),
        ]
    else:
        raise ValueError(arch)
    return nn.Sequential(*head, *body, *tail)


def float_net(arch: str) -> nn.Module:
    """The fp32 twin of ``arch`` (same layers, torch only), for ONNX Runtime to quantize."""
    if arch == "cnv":
        layers = [
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(32 * 3 * 3, 64), nn.ReLU(), nn.Linear(64, CLASSES),
        ]  # fmt: skip
    elif arch == "mobilenet":
        layers = [
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 64, 1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=2, padding=1, groups=64), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 128, 1), nn.BatchNorm2d(128), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, CLASSES),
        ]  # fmt: skip
    elif arch == "mlp":
        layers = [
            nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 32), nn.ReLU(),
            nn.Linear(32, CLASSES),
        ]  # fmt: skip
    else:
        raise ValueError(arch)
    return nn.Sequential(*layers)


def images(arch: str, count: int, seed: int = 0) -> np.ndarray:
    """Seeded uniform [0, 1) inputs of ``arch``'s shape."""
    return np.random.default_rng(seed).random((count, *INPUT_SHAPES[arch]), dtype=np.float32)


def _settle(model: nn.Module, arch: str) -> nn.Module:
    """Give BatchNorm non-trivial statistics and calibrate activation scales (train mode over
    a few batches), then freeze: an untrained but realistically scaled network."""
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for seed in range(4):
            model(torch.from_numpy(images(arch, 32, seed=100 + seed)))
    return model.eval()


def settled_brevitas_net(arch: str, bits: int, act_bits: int) -> nn.Module:
    """``brevitas_net`` with calibrated activation scales and BatchNorm statistics."""
    torch.manual_seed(0)
    return _settle(brevitas_net(arch, bits, act_bits), arch)


def export_brevitas(model: nn.Module, arch: str, path: Path, fmt: str = "qcdq") -> Path:
    """Export a Brevitas ``model`` of ``arch`` as QCDQ or QONNX to ``path``, as its users do."""
    sample = torch.from_numpy(images(arch, 1))
    export = brevitas_export()
    if fmt == "qcdq":
        export.export_onnx_qcdq(model, sample, export_path=str(path), dynamo=False,
                                input_names=["x"], output_names=["y"])  # fmt: skip
    else:
        export.export_qonnx(model, sample, export_path=str(path), dynamo=False)
    return path


def brevitas_onnx(arch: str, bits: int, act_bits: int, path: Path, fmt: str = "qcdq") -> Path:
    """A settled Brevitas ``arch`` exported as QCDQ or QONNX to ``path``."""
    return export_brevitas(settled_brevitas_net(arch, bits, act_bits), arch, path, fmt)


def onnxruntime_quantized(arch: str, path: Path, per_channel: bool = True,
                          weight_type: str = "QInt8") -> Path:  # fmt: skip
    """The fp32 twin exported and quantized by ONNX Runtime's ``quantize_static`` (QDQ);
    ``weight_type`` QUInt8 gives asymmetric uint8 weights with zero points (9-bit integers)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    torch.manual_seed(0)
    model = _settle(float_net(arch), arch)
    fp32 = path.with_name(path.stem + "_fp32.onnx")
    torch.onnx.export(model, torch.from_numpy(images(arch, 1)), str(fp32), input_names=["x"],
                      output_names=["y"], dynamo=False,
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})  # fmt: skip

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"x": image[None]} for image in images(arch, 32)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(fp32), str(path), Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=per_channel, activation_type=QuantType.QUInt8,
                    weight_type=getattr(QuantType, weight_type))  # fmt: skip
    return path


FOREIGN_MODELS: dict[str, Callable[[Path], Path]] = {
    **{
        f"brevitas-{arch}-w{bits}a{act}": (
            lambda path, arch=arch, bits=bits, act=act: brevitas_onnx(arch, bits, act, path)
        )
        for arch in INPUT_SHAPES
        for bits, act in ((2, 2), (4, 4), (8, 8))
    },
    **{
        f"ort-{arch}": lambda path, arch=arch: onnxruntime_quantized(arch, path)
        for arch in INPUT_SHAPES
    },
    # per-tensor uint8 weights with a zero point: 9-bit integers after subtracting it
    "ort-cnv-u8w": lambda path: onnxruntime_quantized("cnv", path, False, "QUInt8"),
}


def conv_and_fc_nodes(path: Path) -> int:
    """Conv, Gemm and MatMul nodes of an ONNX file: the layers that must all be lowered."""
    return sum(n.op_type in ("Conv", "Gemm", "MatMul") for n in onnx.load(str(path)).graph.node)
