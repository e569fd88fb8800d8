"""ARM cost without a board: executed instructions and modeled cycles per inference.

No Arm board is reachable here and qemu's wall time says nothing about one, so this benchmark
counts instead of timing, deterministically:

1. **Count.** Each runtime runs single-threaded in the emulated Raspberry Pi's Python (Debian
   arm64 under Debian's dynamically linked ``qemu-aarch64``; ``apprentice-hw emulated-pi`` sets
   it up) with a TCG plugin of our own (``qemu_block_counts.c``, built here with gcc) that counts
   every translated block's executions and keeps its machine code. Each model runs twice, with 1
   warm-up + ``CALLS`` calls and with the warm-up alone (``timing.py --calls``); the difference,
   divided by ``CALLS``, is one inference: imports, loading and first-call set-up cancel.
2. **Model.** Every block that ran, hottest first until ``COVERAGE`` of the instructions, is
   disassembled (``llvm-mc``) and given to ``llvm-mca`` for the target's core (LLVM 19: Debian's
   ``llvm-19``); its cycles per execution (steady state of ``MCA_ITERATIONS`` repetitions) times
   its executions per inference is its share. The remaining instructions get the modeled blocks'
   average cycles per instruction. What the model leaves out: caches and memory (every load hits
   L1), branch mispredictions, and work across block boundaries. So a modeled cycle count is a
   ranking tool, not a latency: every ARM number from here is labelled **modeled**.
3. **Check.** ``--x86-check`` applies the same method to x86-64 (``qemu-x86_64 -cpu max``, AVX2,
   ``llvm-mca`` for this machine's core) and compares the modeled ratios between runtimes with
   single-threaded timings on this machine (one fresh process per runtime and round, as
   ``latency.py`` times).

Runtimes, each on the same fp32 network (zoo ResNet-20 32x32 and ResNet-18 224, batch 1): ONNX
Runtime's aarch64 wheel (``ORT_ARM``: later wheels crash on import under qemu 7.2) on the fp32
model and on its own ``quantize_static`` int8 QDQ model (MLAS's NEON kernels; on a core with
``dotprod`` its SDOT ones); LiteRT's aarch64 wheel (``LITERT_ARM``, XNNPACK) on its own
full-integer int8 model (``litert_int8.py``, made in a converter environment of its own in the
cache); and apprentice-hw W8A8, W4A4, W2A8 and W2A2 modules for the target.
Counts are cached in ``~/.cache/apprentice-hw/arm-cost`` by file hash, so an interrupted run
continues where it stopped.

    python benchmarks/arm_cost.py                         # both models on arm-a72 and arm-a76
    python benchmarks/arm_cost.py --models resnet20 --targets arm-a72
    python benchmarks/arm_cost.py --models resnet20 --x86-check
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from latency import (  # beside this script
    MODELS,
    STUDENTS,
    calibration_images,
    export_float,
    quantize_with_onnxruntime,
    student_onnx,
    with_batch,
)
from timing import summary

from apprentice_hw.atomic import write_json
from apprentice_hw.hardware import cpu_model_name
from apprentice_hw.models import ModelSpec, build_model
from apprentice_hw.quant import FloatLayers
from apprentice_hw.resources import cache_root

RESULTS = Path(__file__).parent / "results" / "arm_cost.json"
PLUGIN_SOURCE = Path(__file__).with_name("qemu_block_counts.c")
TIMING = Path(__file__).with_name("timing.py")
QEMU = {"aarch64": "qemu-aarch64", "x86_64": "qemu-x86_64"}  # Debian's qemu-user (loads plugins)
LLVM_MC, LLVM_MCA = "llvm-mc-19", "llvm-mca-19"
ORT_ARM = "1.19.2"
# LiteRT's aarch64 wheel for the emulated Pi (2.2.0 and 2.3.0 crash under qemu 7.2 when the
# interpreter starts: cpuinfo_arm_linux_init), and the environment that makes its int8 models
LITERT_ARM = "2.1.6"
LITERT_CONVERTER = ("torch==2.13.0", "litert-torch==0.10.0")
LITERT_SCRIPT = Path(__file__).with_name("litert_int8.py")
CALLS = {"resnet20": 10, "resnet18": 2}  # extra calls counted; the count is exact, so few do
COVERAGE = 0.995  # share of the instructions whose blocks llvm-mca models
MCA_ITERATIONS = 100


@dataclass(frozen=True)
class Core:
    """How one target's modules run under qemu and which llvm-mca model prices them."""

    qemu_cpu: str  # the CPU qemu presents (runtimes pick their kernels from its features)
    mca_cpu: str  # llvm-mca's scheduling model
    why: str = ""


CORES = {
    "arm-a72": Core("cortex-a72", "cortex-a72"),
    # LLVM 19 prices cortex-a76 with the Cortex-A57 model; the Neoverse N1 is the A76's
    # server twin (same core, same pipelines) and has a model of its own.
    "arm-a76": Core("cortex-a76", "neoverse-n1", "Neoverse N1 model (the A76's server twin)"),
}
MARKER = {  # an instruction put between blocks so one llvm-mc call disassembles them all
    "aarch64": ("404f2fd4", "brk\t#0x7a7a"),
    "x86_64": ("49bf7a7a7a7a7a7a7a7a", "movabsq\t$8825501086245354106, %r15"),
}
NOP = "nop"


def cache_dir() -> Path:
    folder = cache_root() / "arm-cost"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# -- tools ------------------------------------------------------------------------------------
def require_tools(arch: str) -> None:
    """Fail in one line when a tool is missing, naming the Debian package."""
    tools = {QEMU[arch]: "qemu-user", LLVM_MC: "llvm-19", LLVM_MCA: "llvm-19", "gcc": "gcc"}
    missing = sorted({package for tool, package in tools.items() if not shutil.which(tool)})
    if missing:
        sys.exit(f"error: missing tools; run 'apt-get install {' '.join(missing)}'")


def build_plugin() -> Path:
    """The counting plugin, compiled once per version of its source."""
    source = PLUGIN_SOURCE.read_bytes()
    plugin = cache_dir() / f"qemu_block_counts-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if not plugin.exists():
        partial = plugin.with_suffix(".partial.so")
        subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(partial),
                        str(PLUGIN_SOURCE)], check=True)  # fmt: skip
        partial.replace(plugin)
    return plugin


def arm_wheel(package: str, version: str, module: str) -> Path:
    """A package's aarch64 wheel for the emulated Python, unpacked once (no dependencies: the
    emulated Pi's own numpy serves both runtimes)."""
    site = cache_dir() / f"{package}-{version}-aarch64"
    if not (site / module).exists():
        platforms = ["manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64"]
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                        "--disable-pip-version-check", "--target", str(site),
                        *[arg for p in platforms for arg in ("--platform", p)],
                        "--python-version", "3.11", "--implementation", "cp",
                        "--only-binary=:all:", f"{package}=={version}"], check=True)  # fmt: skip
    return site


def arm_onnxruntime() -> Path:
    return arm_wheel("onnxruntime", ORT_ARM, "onnxruntime")


def arm_litert() -> Path:
    return arm_wheel("ai-edge-litert", LITERT_ARM, "ai_edge_litert")


def litert_python() -> Path:
    """The converter's own environment (about 2 GB: torch, jax, litert-torch), made once."""
    folder = cache_dir() / "litert-converter"
    python = folder / "bin" / "python"
    if not (folder / "READY").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *LITERT_CONVERTER], check=True)  # fmt: skip
        (folder / "READY").write_text(" ".join(LITERT_CONVERTER) + "\n")
    return python


def litert_int8_model(name: str, out: Path) -> Path:
    """LiteRT's int8 model of ``name`` (``litert_int8.py``), made in the converter's environment
    with this checkout's model zoo, calibrated on ONNX Runtime's calibration images."""
    if not out.exists():
        images = out.with_suffix(".calibration.npy")
        np.save(images, calibration_images(name).numpy())
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        subprocess.run([str(litert_python()), str(LITERT_SCRIPT), name, str(MODELS[name][1]),
                        str(images), str(out)], env=env, check=True)  # fmt: skip
    return out


def emulated_pi() -> Path:
    from apprentice_hw.deploy.emulated_pi import EmulatedPi, default_dir

    pi = EmulatedPi(default_dir())
    if not pi.ready:
        sys.exit("error: no emulated Pi; set it up with 'apprentice-hw emulated-pi --setup-only'")
    return pi.folder


# -- 1. counting ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    code: str  # machine code in hex
    n_insns: int


def _read_counts(path: Path) -> Counter[Block]:
    counts: Counter[Block] = Counter()
    for line in path.read_text().splitlines():
        executions, n_insns, code = line.split("\t")
        counts[Block(code, int(n_insns))] += int(executions)  # same code at two addresses
    return counts


def _command(arch: str, qemu_cpu: str, plugin: Path, out: Path, calls: int, case: dict):
    """qemu running ``timing.py --calls`` on one core, in the emulated Pi or on this machine."""
    runner = [str(TIMING), "--calls", str(calls), json.dumps(case)]
    env = {**os.environ, "TVM_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONHOME", None)
    prefix = ["taskset", "-c", "0", QEMU[arch], "-cpu", qemu_cpu, "-plugin", f"{plugin},out={out}"]
    if arch == "aarch64":
        pi = emulated_pi()
        runtime = arm_litert() if case["runtime"] == "litert" else arm_onnxruntime()
        env["PYTHONPATH"] = f"{runtime}:{pi / 'site'}:{TIMING.parent}"
        return [*prefix, "-L", str(pi / "root"), str(pi / "root/usr/bin/python3.11"), *runner], env
    site = next(Path(sys.prefix).glob("lib/python3*/site-packages"))
    env["PYTHONPATH"] = f"{site}:{TIMING.parent}"
    return [*prefix, os.path.realpath(sys.executable), *runner], env


def count_blocks(case: dict, calls: int, arch: str, qemu_cpu: str) -> Counter[Block]:
    """Block executions of 1 + ``calls`` calls of ``case``, cached by the model file's hash."""
    digest = hashlib.sha256(Path(case["path"]).read_bytes())
    digest.update(f"{case['runtime']} {arch} {qemu_cpu} {calls}".encode())
    cached = cache_dir() / "counts" / f"{digest.hexdigest()[:24]}.tsv"
    if not cached.exists():
        cached.parent.mkdir(exist_ok=True)
        partial = cached.with_suffix(".partial")
        command, env = _command(arch, qemu_cpu, build_plugin(), partial, calls, case)
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0 or not partial.exists():
            raise RuntimeError(f"{case['runtime']} {case['precision']} under qemu failed: "
                               f"{done.stderr.strip()[-1500:]}")  # fmt: skip
        partial.replace(cached)
    return _read_counts(cached)


def per_inference(case: dict, arch: str, qemu_cpu: str) -> dict[Block, float]:
    """Executions per inference of every block: (1 + N calls) - (1 call), over N."""
    calls = CALLS[case["model"]]
    with_calls = count_blocks(case, calls, arch, qemu_cpu)
    warm_up = count_blocks(case, 0, arch, qemu_cpu)
    with_calls.subtract(warm_up)
    return {block: n / calls for block, n in with_calls.items() if n > 0}


# -- 2. the cycle model -----------------------------------------------------------------------
def _llvm_mc(code: str, arch: str) -> list[str]:
    """Assembly lines of the machine code ``code`` (hex), comments and directives dropped."""
    hex_bytes = " ".join(f"0x{code[i : i + 2]}" for i in range(0, len(code), 2))
    triple, attributes = ("aarch64", "+dotprod") if arch == "aarch64" else ("x86_64", "+avx2")
    done = subprocess.run([LLVM_MC, "--disassemble", f"-triple={triple}", f"-mattr={attributes}"],
                          input=hex_bytes, capture_output=True, text=True, check=True)  # fmt: skip
    # x86 lines may end in a comment ("# imm = 0x..."); AArch64 immediates are "#0x..", "#-20"
    lines = [re.sub(r"\s+#\s.*$", "", line).strip() for line in done.stdout.splitlines()]
    return [line for line in lines if line and not line.startswith(".")]


def disassemble(blocks: list[Block], arch: str) -> list[list[str]]:
    """Each block's instructions as assembly text: one llvm-mc call for all, the blocks
    separated by a marker instruction; block by block where that loses a boundary (bytes
    llvm-mc cannot decode can swallow a marker)."""
    marker_code, marker_text = MARKER[arch]
    split: list[list[str]] = [[]]
    for line in _llvm_mc(marker_code.join(block.code for block in blocks), arch):
        if line == marker_text:
            split.append([])
        else:
            split[-1].append(line)
    if len(split) == len(blocks):
        return split
    return [_llvm_mc(block.code, arch) for block in blocks]


def _mca_cycles(bodies: list[list[str]], arch: str, mca_cpu: str) -> tuple[list[float], int]:
    """llvm-mca's cycles per execution of each body; lines it cannot assemble become nops."""
    lines: list[str] = []
    for index, body in enumerate(bodies):
        lines += [f"# LLVM-MCA-BEGIN b{index}", *body, f"# LLVM-MCA-END b{index}"]
    replaced = 0
    triple = "aarch64-linux-gnu" if arch == "aarch64" else "x86_64-linux-gnu"
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "blocks.s"
        while True:
            source.write_text("\n".join(lines) + "\n")
            done = subprocess.run([LLVM_MCA, f"-mtriple={triple}", f"-mcpu={mca_cpu}",
                                   f"-iterations={MCA_ITERATIONS}", "-resource-pressure=0",
                                   "-instruction-info=0", str(source)],
                                  capture_output=True, text=True, check=False)  # fmt: skip
            bad = re.search(rf"{re.escape(str(source))}:(\d+):\d+: error", done.stderr)
            if done.returncode == 0 or bad is None:
                break
            lines[int(bad.group(1)) - 1] = NOP
            replaced += 1
    if done.returncode != 0:
        raise RuntimeError(f"llvm-mca failed: {done.stderr.strip()[-800:]}")
    totals = [int(n) for n in re.findall(r"Total Cycles:\s+(\d+)", done.stdout)]
    if len(totals) != len(bodies):
        raise RuntimeError(f"llvm-mca priced {len(totals)} of {len(bodies)} blocks")
    return [total / MCA_ITERATIONS for total in totals], replaced


@dataclass(frozen=True)
class Cost:
    instructions: float  # executed per inference (exact)
    modeled_cycles: float
    modeled_share: float  # of the instructions, in blocks llvm-mca priced
    unassembled: int  # instructions llvm-mca could not read (priced as nops)


def model_cost(blocks: dict[Block, float], arch: str, mca_cpu: str) -> Cost:
    """Modeled cycles of one inference: hot blocks by llvm-mca, the tail at their average CPI."""
    ranked = sorted(blocks.items(), key=lambda item: -item[1] * item[0].n_insns)
    total = sum(n * block.n_insns for block, n in ranked)
    hot, covered = [], 0.0
    for block, n in ranked:
        if covered >= COVERAGE * total:
            break
        hot.append((block, n))
        covered += n * block.n_insns
    bodies = disassemble([block for block, _ in hot], arch)
    cycles_each, replaced = _mca_cycles(bodies, arch, mca_cpu)
    hot_cycles = sum(c * n for c, (_, n) in zip(cycles_each, hot, strict=True))
    cycles = hot_cycles + (total - covered) * hot_cycles / covered
    return Cost(total, cycles, covered / total, replaced)


# -- the cases --------------------------------------------------------------------------------
def build_cases(name: str, target_name: str, tmp: Path, litert: bool = True) -> list[dict]:
    """ORT fp32, ORT int8 (its own quantize_static), LiteRT int8 (its own quantizer) and the
    four students, as files."""
    from apprentice_hw.backends import compile_module, export_module, prepare_module
    from apprentice_hw.hardware import get_target

    size, classes = MODELS[name]
    target = get_target(target_name)
    fp32_path = tmp / f"{name}_fp32.onnx"
    if not fp32_path.exists():  # the network latency.py times, seeded alike
        torch.manual_seed(0)
        fp32 = build_model(ModelSpec(name), FloatLayers(), 3, classes).eval()
        export_float(fp32, torch.rand(1, 3, size, size), fp32_path)
        quantize_with_onnxruntime(fp32_path, calibration_images(name), tmp / f"{name}_int8.onnx")
    cases = []
    for label in ("fp32", "int8"):
        path = tmp / f"{name}_{label}_b1.onnx"
        onnx.save(with_batch(onnx.load(str(tmp / f"{name}_{label}.onnx")), 1), str(path))
        cases.append({"model": name, "input": size, "batch": 1, "runtime": "onnxruntime",
                      "precision": label, "path": str(path)})  # fmt: skip
    if litert:
        tflite = litert_int8_model(name, tmp / f"{name}_int8.tflite")
        cases.append({"model": name, "input": size, "batch": 1, "runtime": "litert",
                      "precision": "int8", "path": str(tflite)})  # fmt: skip
    for label in STUDENTS:
        prepared = prepare_module(student_onnx(name, label, tmp), target, batch=1)
        library = tmp / f"{name}_{label}_{target_name}.so"
        export_module(compile_module(prepared.mod, target, use_tuning=False), target, library)
        strategies = sorted({layer.strategy for layer in prepared.layers})
        cases.append({"model": name, "input": size, "batch": 1, "runtime": "apprentice-hw",
                      "precision": label, "path": str(library),
                      "strategies": strategies})  # fmt: skip
        print(f"built {name} {label} for {target_name}", flush=True)
    return cases


def cost_rows(cases: list[dict], target_name: str, arch: str, core: Core) -> list[dict]:
    rows = []
    for case in cases:
        blocks = per_inference(case, arch, core.qemu_cpu)
        cost = model_cost(blocks, arch, core.mca_cpu)
        row = {key: case[key] for key in ("model", "input", "batch", "runtime", "precision")}
        row.update(target=target_name, qemu_cpu=core.qemu_cpu, mca_cpu=core.mca_cpu,
                   instructions=round(cost.instructions), unassembled=cost.unassembled,
                   modeled_cycles=round(cost.modeled_cycles),
                   modeled_share=round(cost.modeled_share, 4))  # fmt: skip
        if "strategies" in case:
            row["strategies"] = case["strategies"]
        rows.append(row)
        print(f"{target_name} {case['model']} {case['runtime']:<14} {case['precision']:<5} "
              f"{cost.instructions / 1e6:9.2f} M instructions {cost.modeled_cycles / 1e6:9.2f} M "
              f"modeled cycles", flush=True)  # fmt: skip
    best_int8 = min(r["modeled_cycles"] for r in rows if r["runtime"] != "apprentice-hw"
                    and r["precision"] == "int8")  # fmt: skip
    fp32 = next(r["modeled_cycles"] for r in rows if r["precision"] == "fp32")
    for row in rows:
        row["vs_best_int8_peer"] = round(row["modeled_cycles"] / best_int8, 3)
        row["vs_onnxruntime_fp32"] = round(row["modeled_cycles"] / fp32, 3)
    return rows


# -- 3. the x86 check -------------------------------------------------------------------------
def measured_single_thread(cases: list[dict], rounds: int = 3, runs: int = 6) -> list[float]:
    """Median single-thread ms per case: fresh processes pinned to one core, rounds alternating."""
    times: list[list[float]] = [[] for _ in cases]
    env = {**os.environ, "TVM_NUM_THREADS": "1"}
    for _ in range(rounds):
        for index, case in enumerate(cases):
            done = subprocess.run(["taskset", "-c", "1", sys.executable, str(TIMING),
                                   json.dumps(case), str(runs), "10"], env=env,
                                  capture_output=True, text=True, check=True)  # fmt: skip
            times[index] += json.loads(done.stdout.strip().splitlines()[-1])
    return [summary(t, 10)["median_ms"] for t in times]


def _ranks(values: list[float]) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def x86_check(name: str, tmp: Path) -> dict:
    """The cycle model against this machine: modeled and measured ratios between runtimes."""
    from apprentice_hw.compiler import tuning
    from apprentice_hw.hardware import get_target

    mca_cpu = tuning.cpu_key(get_target("x86-host").tvm_target())
    cases = build_cases(name, "x86-host", tmp, litert=False)  # LiteRT: not in this venv
    rows = cost_rows(cases, "x86-host", "x86_64", Core("max", mca_cpu))
    measured = measured_single_thread(cases)
    fp32_ms = measured[0]
    for row, ms in zip(rows, measured, strict=True):
        row["measured_ms"] = ms
        row["measured_vs_onnxruntime_fp32"] = round(ms / fp32_ms, 3)
    modeled = [row["modeled_cycles"] for row in rows]
    spearman = float(np.corrcoef(_ranks(modeled), _ranks(measured))[0, 1])
    ratio_error = [row["vs_onnxruntime_fp32"] / row["measured_vs_onnxruntime_fp32"]
                   for row in rows]  # fmt: skip
    return {"model": name, "mca_cpu": mca_cpu, "rows": rows,
            "spearman_modeled_vs_measured": round(spearman, 3),
            "modeled_over_measured_ratio": [round(e, 3) for e in ratio_error]}  # fmt: skip


# -- results ----------------------------------------------------------------------------------
def markdown(result: dict) -> str:
    """The README's tables: modeled cycles per model and target, then the x86 check."""
    lines = ["| model | target (llvm-mca model) | runtime | precision | M instructions | "
             "M modeled cycles | vs best int8 peer | vs ORT fp32 |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['target']} ({r['mca_cpu']}) | {r['runtime']} | "
            f"{r['precision']} | {r['instructions'] / 1e6:.2f} | {r['modeled_cycles'] / 1e6:.2f} "
            f"| {r['vs_best_int8_peer']:.2f} | {r['vs_onnxruntime_fp32']:.2f} |"
        )
    for check in result["x86_check"]:
        lines += ["", f"x86 check, {check['model']} (llvm-mca {check['mca_cpu']}), Spearman "
                  f"{check['spearman_modeled_vs_measured']:.2f}:", "",
                  "| runtime | precision | modeled vs ORT fp32 | measured vs ORT fp32 | "
                  "measured ms (1 thread) |", "|---|---|---|---|---|"]  # fmt: skip
        for r in check["rows"]:
            measured = f"{r['measured_vs_onnxruntime_fp32']:.2f} | {r['measured_ms']:.3f}"
            lines.append(f"| {r['runtime']} | {r['precision']} | "
                         f"{r['vs_onnxruntime_fp32']:.2f} | {measured} |")  # fmt: skip
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------
def _version_line(command: str) -> str:
    done = subprocess.run([command, "--version"], capture_output=True, text=True, check=False)
    return next(line.strip() for line in done.stdout.splitlines() if "version" in line)


def _versions() -> dict[str, str]:
    from importlib import metadata

    return {
        "qemu": _version_line(QEMU["aarch64"]),
        "llvm-mca": _version_line(LLVM_MCA),
        "onnxruntime (aarch64)": ORT_ARM,
        "ai-edge-litert (aarch64)": LITERT_ARM,
        "litert converter": " ".join(LITERT_CONVERTER),
        "apache-tvm": metadata.version("apache-tvm"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS))
    parser.add_argument("--targets", nargs="*", default=list(CORES), choices=list(CORES),
                        help="Arm targets to count (none: only --x86-check).")  # fmt: skip
    parser.add_argument(
        "--x86-check",
        action="store_true",
        help="Also check the model's ranking against timings on this machine.",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true",
                        help="Print the tables of the results file and exit.")  # fmt: skip
    args = parser.parse_args()
    if args.report:
        print(markdown(json.loads(args.out.read_text())))
        return
    require_tools("aarch64")
    if args.x86_check:
        require_tools("x86_64")

    from apprentice_hw.torch_backend import configure_torch

    configure_torch()
    result = {"benchmark": "arm_cost", "date": datetime.date.today().isoformat(),
              "method": "instructions counted under qemu-user (TCG plugin), one thread, "
                        "(1 + N calls) - (1 call); cycles modeled by llvm-mca per executed block",
              "labels": "modeled: not measured on a board",
              "calls": CALLS, "coverage": COVERAGE, "versions": _versions(),
              "machine": {"cpu": cpu_model_name(), "cores": len(os.sched_getaffinity(0))},
              "cores": {name: core.__dict__ for name, core in CORES.items()},
              "rows": [], "x86_check": []}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:  # untuned modules: no tuning cache is read
        for name in args.models:
            for target_name in args.targets:
                cases = build_cases(name, target_name, Path(tmp))
                result["rows"] += cost_rows(cases, target_name, "aarch64", CORES[target_name])
            if args.x86_check:
                result["x86_check"].append(x86_check(name, Path(tmp)))
    result = merged(args.out, result)
    write_json(args.out, result)
    print(markdown(result))
    print(f"wrote {args.out}")


def merged(path: Path, result: dict) -> dict:
    """``result`` plus the rows of an earlier run in ``path`` that this run did not redo (the
    Arm counts and the x86 check can run separately: the check needs an idle machine)."""
    if not path.exists():
        return result
    earlier = json.loads(path.read_text())
    done = {(row["model"], row["target"]) for row in result["rows"]}
    checked = {check["model"] for check in result["x86_check"]}
    result["rows"] = [row for row in earlier.get("rows", [])
                      if (row["model"], row["target"]) not in done] + result["rows"]  # fmt: skip
    result["x86_check"] = [check for check in earlier.get("x86_check", [])
                           if check["model"] not in checked] + result["x86_check"]  # fmt: skip
    return result


if __name__ == "__main__":
    main()
