"""Distil your own CNN with scheme C, compile it for x86 and a Raspberry Pi 4, print its report.

Runs offline on the digits data that ships with scikit-learn (8x8 grey images, 10 classes):

    python examples/distill_custom_cnn.py                 # about a minute on 2 cores
    python examples/distill_custom_cnn.py --epochs 1 --out /tmp/example   # what the tests run

The network below is not in apprentice-hw's zoo. It is written once against a layer factory,
so the same class builds the fp32 teacher (``FloatLayers``) and the 2-bit student
(``QuantLayers``) with the same parameter names: scheme C starts the student from the trained
fp32 weights, then fine-tunes it in low precision with the Apprentice loss.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import apprentice_hw as ahw
from apprentice_hw.data import load_dataset


class DigitsCNN(nn.Module):
    """Two 3x3 conv blocks, global average pooling and a classifier."""

    def __init__(self, layers, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.input_quant = layers.input_quant()
        self.conv1 = layers.conv(1, width, 3, 1, edge=True)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = layers.relu()
        self.conv2 = layers.conv(width, 2 * width, 3, 2)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = layers.relu()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_quant = layers.head_quant()
        self.fc = layers.linear(2 * width, classes)
        self.output_quant = layers.output_quant()  # compile compares outputs in its steps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.bn1(self.conv1(self.input_quant(x))))
        x = self.relu2(self.bn2(self.conv2(x)))
        x = self.head_quant(torch.flatten(self.pool(x), 1))
        return self.output_quant(self.fc(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("build/example"))
    args = parser.parse_args()
    torch.manual_seed(0)

    data = load_dataset("digits")  # the embedded default: no download
    train = DataLoader(TensorDataset(data.train_x, data.train_y), batch_size=64, shuffle=True)
    test = DataLoader(TensorDataset(data.test_x, data.test_y), batch_size=256)

    # 1. The fp32 network, trained on its own: scheme C's teacher and starting point.
    teacher = DigitsCNN(ahw.FloatLayers())
    fp32 = ahw.distill(teacher, teacher, train, test, scheme="none", epochs=args.epochs)
    print(f"fp32 teacher top-1 {fp32.student_top1:.2%}")

    # 2. Scheme C: the ternary (2-bit) student starts from those weights and learns from the
    #    labels and the frozen teacher's soft targets.
    student = DigitsCNN(ahw.QuantLayers.from_bits(weight_bits=2, act_bits=4, edge_bits=8,
                                                  family="per-channel"))  # fmt: skip
    result = ahw.distill(teacher, student, train, test, scheme="C", teacher_trained=True,
                         student_init=teacher, epochs=args.epochs, lr=0.01)  # fmt: skip
    print(f"W2A4 student top-1 {result.student_top1:.2%} (scheme C)")

    # 3. Export once, compile for this machine and for a Raspberry Pi 4 (cross-compiled);
    #    each module is checked against ONNX Runtime on the test images.
    model = ahw.export(student, data.test_x[:1], args.out / "digits_cnn_w2a4.onnx")
    images = args.out / "test_images.npy"
    numpy.save(images, data.test_x[:100].numpy())
    for target in ("x86-host", "arm-a72"):
        compiled = ahw.compile(model, target, out=args.out / target, inputs=images, force=True)
        print(f"{target}: {compiled.module_path}, max {compiled.max_diff_steps:g} output steps "
              "from ONNX Runtime")  # fmt: skip
    print(ahw.report(args.out / "x86-host").markdown())


if __name__ == "__main__":
    main()
