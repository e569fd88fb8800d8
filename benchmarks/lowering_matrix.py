"""Integer lowering across the whole zoo: bit-exactness against Brevitas and weight bytes.

For every zoo student at W2 (ternary), W4 and W8 with 4- and 8-bit activations (plus W2A2, the
bit-serial path), first and last layers at 8 bits as in the recipes: build the Brevitas
student, calibrate its activation scales and train it briefly (``TRAIN_STEPS`` SGD steps on
real digits images), export QCDQ, lower and compile it for this machine, and run 100 held-out
digits test images through Brevitas and the integer module. Images are resized (nearest) and
repeated over channels to each model's input: 8x8x1 for resnet-small and 32x32x3 for the CIFAR
and ImageNet ResNets (the ImageNet models' adaptive pooling head takes any size; 224x224 makes
the untuned kernels slower, not the arithmetic different).

Why train: the acceptance is about trained students; a few hundred images of SGD give
trained-like weight and activation statistics at a cost this machine can pay for every model
and width. (The integer module equals the exact model whatever the weights; training makes the
float32 comparisons representative.)

Recorded per configuration: max output difference in output steps against the Brevitas model
in exact arithmetic (the gate: a float64 copy holding the float32 model's scales and weight
codes, see ``apprentice_hw.verify.brevitas_outputs``) and against Brevitas in float32 (with
Brevitas float32's own gap to the exact model beside it), the share of identical outputs, top-1
agreement, the bytes of the quantized weights in the module against parameters x bits / 8, and
the module's other constants.
Results: ``benchmarks/results/lowering_matrix.json`` and a Markdown table.

    python benchmarks/lowering_matrix.py                      # the full matrix (over an hour)
    python benchmarks/lowering_matrix.py --models resnet20 --configs 2:8
    python benchmarks/lowering_matrix.py --models resnet20 --out /tmp/a.json &   # in parallel,
    python benchmarks/lowering_matrix.py --merge /tmp/a.json /tmp/b.json          # then merge
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from apprentice_hw.atomic import write_json
from apprentice_hw.backends import compile_module, prepare_module
from apprentice_hw.compiler import memory_plan
from apprentice_hw.data import load_dataset
from apprentice_hw.distill.trainer import train_steps
from apprentice_hw.export import export_qcdq
from apprentice_hw.export.onnx_export import output_quant_step
from apprentice_hw.hardware import cpu_model_name, get_target
from apprentice_hw.models import MODELS, ModelSpec, build_model
from apprentice_hw.output_steps import compare_outputs
from apprentice_hw.quant import QuantLayers
from apprentice_hw.report import weight_footprint
from apprentice_hw.torch_backend import configure_torch
from apprentice_hw.verify import brevitas_outputs, run_module_outputs

RESULTS = Path(__file__).parent / "results" / "lowering_matrix.json"
CONFIGS = ((2, 2), (2, 4), (2, 8), (4, 4), (4, 8), (8, 4), (8, 8))
INPUT_SIZE = {"resnet-small": (1, 8)}
DEFAULT_INPUT = (3, 32)
SAMPLES = 100
TRAIN_STEPS = 30
BATCH = 64


def model_inputs(name: str, images: torch.Tensor) -> torch.Tensor:
    """Digits images (N, 1, 8, 8) resized and repeated to ``name``'s input shape."""
    channels, size = INPUT_SIZE.get(name, DEFAULT_INPUT)
    resized = torch.nn.functional.interpolate(images, size=(size, size), mode="nearest")
    return resized.repeat(1, channels, 1, 1)


def run_one(name: str, weight_bits: int, act_bits: int, data, tmp: Path) -> dict:
    torch.manual_seed(0)
    layers = QuantLayers.from_bits(weight_bits, act_bits, 8, "per-channel")
    inputs = model_inputs(name, data.train_x)
    model = build_model(ModelSpec(name), layers, inputs.shape[1], 10)
    train_start = time.perf_counter()
    train_steps(model, inputs, data.train_y, TRAIN_STEPS, BATCH)
    train_seconds = time.perf_counter() - train_start
    test = model_inputs(name, data.test_x[:SAMPLES])
    brevitas = brevitas_outputs(model, test)
    reference = brevitas.float32
    exported = export_qcdq(model, test[:1], tmp / f"{name}.onnx")
    target = get_target("x86-host")
    start = time.perf_counter()
    prepared = prepare_module(exported, target)
    executable = compile_module(prepared.mod, target)
    compile_seconds = time.perf_counter() - start
    outputs = run_module_outputs(executable, test.numpy())[0]
    step = output_quant_step(exported)
    check = compare_outputs(reference, outputs, step)
    # The same Brevitas model in exact arithmetic (float64 holding its float32 scales and
    # weight codes): the gate. Brevitas float32 against it shows float32 rounding on its own.
    reference64 = brevitas.float64
    check64 = compare_outputs(reference64, outputs, step)
    brevitas_gap = compare_outputs(reference64, reference, step)
    plan = memory_plan(prepared.mod, target, 1)
    footprint = weight_footprint(model)
    lowered = [layer for layer in prepared.layers if layer.strategy != "float"]
    quantized = sum(layer.weight_bytes for layer in lowered)
    scales = sum(layer.scale_bytes for layer in lowered)
    strategies: dict[str, int] = {}
    for layer in prepared.layers:
        strategies[layer.strategy] = strategies.get(layer.strategy, 0) + 1
    return {
        "model": name,
        "weight_bits": weight_bits,
        "act_bits": act_bits,
        "input": list(test.shape[1:]),
        "max_diff_steps": check.max_diff_steps,
        "fraction_exact": check.fraction_exact,
        "prediction_agreement": check.prediction_agreement,
        "max_diff_steps_vs_brevitas_exact": check64.max_diff_steps,
        "prediction_agreement_vs_brevitas_exact": check64.prediction_agreement,
        "fraction_exact_vs_brevitas_exact": check64.fraction_exact,
        "fraction_within_one_step_vs_brevitas_exact": check64.fraction_within_one_step,
        "fraction_within_one_step": check.fraction_within_one_step,
        "brevitas_float32_vs_exact_max_steps": brevitas_gap.max_diff_steps,
        "quantized_parameters": footprint.quantized_parameters,
        "params_x_bits_bytes": footprint.quantized_bytes,
        "module_quantized_weight_bytes": quantized,
        "module_scale_bytes": scales,
        "module_constant_bytes": plan.weight_bytes,
        "weight_ratio": round(quantized / footprint.quantized_bytes, 4),
        "strategies": strategies,
        "train_seconds": round(train_seconds, 1),
        "compile_seconds": round(compile_seconds, 1),
        "brevitas_top1_on_test": float(
            np.mean(reference.argmax(1) == data.test_y[:SAMPLES].numpy())
        ),
    }


def markdown(rows: list[dict]) -> str:
    lines = [
        "| model | W/A | vs Brevitas exact: max steps | identical | within 1 step "
        "| top-1 agreement "
        "| vs Brevitas fp32 (steps, top-1) | Brevitas fp32 vs exact "
        "| module weights / (params x bits/8) | scales | other | kernels |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        other = (
            r["module_constant_bytes"]
            - r["module_quantized_weight_bytes"]
            - r["module_scale_bytes"]
        )
        kernels = ", ".join(f"{k} {v}" for k, v in sorted(r["strategies"].items()))
        lines.append(
            f"| {r['model']} | W{r['weight_bits']}A{r['act_bits']} "
            f"| {r['max_diff_steps_vs_brevitas_exact']:.2f} "
            f"| {r['fraction_exact_vs_brevitas_exact']:.0%} "
            f"| {r['fraction_within_one_step_vs_brevitas_exact']:.0%} "
            f"| {r['prediction_agreement_vs_brevitas_exact']:.0%} "
            f"| {r['max_diff_steps']:.2f}, {r['prediction_agreement']:.0%} "
            f"| {r['brevitas_float32_vs_exact_max_steps']:.2f} "
            f"| {r['module_quantized_weight_bytes']:,} / "
            f"{r['params_x_bits_bytes']:,.0f} = {r['weight_ratio']:.3f} "
            f"| {r['module_scale_bytes']:,} | {other:,} | {kernels} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=MODELS.names())
    parser.add_argument("--configs", nargs="*", default=[f"{w}:{a}" for w, a in CONFIGS])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--merge", nargs="*", type=Path, help="Merge result files into --out.")
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(path.read_text()) for path in args.merge]
        rows = [row for part in parts for row in part["rows"]]
        write_json(args.out, summarize(rows, parts[0]["machine"], parts[0]["date"]))
        print(markdown(rows))
        return
    configure_torch()
    torch.set_num_threads(1)
    data = load_dataset("digits")
    machine = {"platform": platform.platform(), "cpu": cpu_model_name()}
    # Rows already in --out are kept and skipped: an interrupted run continues where it stopped.
    rows = json.loads(args.out.read_text())["rows"] if args.out.exists() else []
    done = {(r["model"], r["weight_bits"], r["act_bits"]) for r in rows}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            for config in args.configs:
                weight_bits, act_bits = (int(v) for v in config.split(":"))
                if (name, weight_bits, act_bits) in done:
                    continue
                row = run_one(name, weight_bits, act_bits, data, Path(tmp))
                rows.append(row)
                today = datetime.date.today().isoformat()
                write_json(args.out, summarize(rows, machine, today))
                print(
                    f"{name:<12} W{weight_bits}A{act_bits}: vs exact max "
                    f"{row['max_diff_steps_vs_brevitas_exact']:.2f} steps, "
                    f"{row['fraction_exact_vs_brevitas_exact']:.0%} identical; vs float32 max "
                    f"{row['max_diff_steps']:.2f} steps; weights ratio "
                    f"{row['weight_ratio']:.3f}, compile {row['compile_seconds']} s",
                    flush=True,
                )
    result = summarize(rows, machine, datetime.date.today().isoformat())
    write_json(args.out, result)
    print(markdown(rows))
    print(f"every input within 1 step everywhere: {result['all_every_input_within_one_step']}")
    print(f"identical to the exact model everywhere: {result['all_identical']}")


def summarize(rows: list[dict], machine: dict, date: str) -> dict:
    return {
        "benchmark": "lowering_matrix",
        "date": date,
        "machine": machine,
        "samples": SAMPLES,
        "train_steps": TRAIN_STEPS,
        "tolerance_steps": 1.0,
        # The acceptance and the gate of `verify`: against the Brevitas model in exact
        # arithmetic, every input within 1 step and >= 99% top-1 agreement.
        "all_every_input_within_one_step": all(
            r["max_diff_steps_vs_brevitas_exact"] <= 1.0 for r in rows
        ),
        "all_top1_agreement_at_least_99_percent": all(
            r["prediction_agreement_vs_brevitas_exact"] >= 0.99 for r in rows
        ),
        "all_identical": all(r["fraction_exact_vs_brevitas_exact"] == 1.0 for r in rows),
        "all_weights_within_5_percent": all(abs(r["weight_ratio"] - 1) <= 0.05 for r in rows),
        "rows": rows,
    }


if __name__ == "__main__":
    main()
