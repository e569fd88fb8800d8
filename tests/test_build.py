"""`apprentice-hw build` end to end on a tiny recipe, and its error paths.

These run the real pipeline (digits, Brevitas, ONNX Runtime, TVM, the aarch64 cross linker);
the tiny recipe keeps each build to a few seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from report_schema import assert_report_unchanged, assert_same_values

from apprentice_hw import pipeline
from apprentice_hw.data import load_dataset
from apprentice_hw.export.onnx_export import output_quant_step, run_onnxruntime

EM_AARCH64 = 183
EM_X86_64 = 62
EXPECTED_FILES = {
    "manifest.json", "report.json", "report.md", "model.qcdq.onnx", "model.qonnx.onnx",
    "model.so", "teacher.pt", "student.pt", "train_log.jsonl", "recipe.json", "checkpoints",
    "footprint.png", "train_curve.png", "report.html", "bundle",
}  # fmt: skip
BUNDLE_FILES = {
    "model.so", "run.py", "manifest.json", "README.md", "verify_inputs.npy", "verify_outputs.npy",
}  # fmt: skip


def _elf_machine(path: Path) -> tuple[int, int, int]:
    """(class, type, machine) from an ELF header: 2 = 64-bit, 3 = shared object."""
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", f"{path} is not an ELF file"
    return (
        header[4],
        int.from_bytes(header[16:18], "little"),
        int.from_bytes(header[18:20], "little"),
    )


def _leftovers(folder: Path) -> list[str]:
    """Staging directories, lock files and temporary files a build may leave behind."""
    return [p.name for p in folder.iterdir() if p.name.endswith((".partial", ".lock", ".tmp"))]


@pytest.fixture(scope="module")
def x86_build(tmp_path_factory):
    """One real x86-host build of the tiny recipe (through the API), shared by the tests that
    inspect it."""
    import apprentice_hw

    recipe = Path(__file__).parent / "data" / "tiny.toml"
    out = tmp_path_factory.mktemp("x86") / "build"
    result = apprentice_hw.build("x86-host", recipe, out=out)
    assert result.out == out and result.module_path == out / "model.so"
    saved = json.loads((out / "report.json").read_text())
    assert result.report.to_dict() == saved  # the result carries what report.json holds
    assert 0.0 < result.student_top1 == saved["accuracy"]["student_top1"] <= 1.0
    assert result.latency_ms == saved["latency"]["median_ms"] > 0
    assert result.weight_bytes == saved["memory"]["weights"]["quantized_weight_bytes"]
    # Timed with the faster of 1 and every core, and the bundle runs with that count.
    cores = len(os.sched_getaffinity(0))
    assert result.report.latency.threads in {1, cores} and saved["latency"]["threads"] in {1, cores}
    bundle = json.loads((out / "bundle" / "manifest.json").read_text())
    assert bundle["module"]["threads"] == saved["latency"]["threads"]
    assert result.activation_bytes == {
        1: saved["memory"]["activations"]["batch_1"]["activation_bytes_planned"],
        8: saved["memory"]["activations"]["batch_8"]["activation_bytes_planned"],
    }
    return out


def test_build_writes_every_artifact(x86_build):
    assert {p.name for p in x86_build.iterdir()} == EXPECTED_FILES
    assert not _leftovers(x86_build.parent)
    assert _elf_machine(x86_build / "model.so") == (2, 3, EM_X86_64)


def test_manifest_records_versions_steps_and_hashes(x86_build):
    manifest = json.loads((x86_build / "manifest.json").read_text())
    assert [s["name"] for s in manifest["steps"]] == [s.name for s in pipeline.STEPS]
    assert all(s["seconds"] >= 0 for s in manifest["steps"])
    assert manifest["versions"]["apache-tvm"] == "0.27.0.post1"
    assert manifest["versions"]["brevitas"] == "0.13.4"
    assert manifest["recipe"]["weight_bits"] == 2
    for name, entry in manifest["artifacts"].items():
        data = (x86_build / name).read_bytes()
        assert entry["bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    bundle = {f"bundle/{name}" for name in BUNDLE_FILES}
    top_level = EXPECTED_FILES - {"manifest.json", "checkpoints", "bundle"}
    assert set(manifest["artifacts"]) == top_level | bundle


def test_report_is_complete_and_consistent(x86_build):
    assert_report_unchanged(x86_build / "report.json", "build-x86")
    assert_same_values(x86_build / "report.json", "build-x86")  # where the CPU is the recorded one
    report = json.loads((x86_build / "report.json").read_text())
    acc = report["accuracy"]
    for key in ("teacher_top1", "student_top1", "onnxruntime_top1", "compiled_top1"):
        assert 0.0 <= acc[key] <= 1.0
    assert acc["compiled_top1"] == acc["onnxruntime_top1"]
    assert report["checks"]["compiled_vs_onnxruntime"]["max_diff_steps"] <= 1.0
    assert report["latency"]["kind"] == "measured" and report["latency"]["median_ms"] > 0
    estimate = report["latency_estimate"]
    assert estimate["kind"] == "estimated" and estimate["ms"] > 0
    assert estimate["compute_bound_layers"] + estimate["memory_bound_layers"] == len(
        report["layers"]
    )
    activations = report["memory"]["activations"]
    assert (
        activations["batch_8"]["activation_bytes_planned"]
        > activations["batch_1"]["activation_bytes_planned"]
    )
    for plan in activations.values():  # the compiler's plan reuses buffers: never above the sum
        assert 0 < plan["activation_bytes_planned"] <= plan["activation_bytes_unplanned"]
    memory = report["memory"]

    # The largest conv kernel's scratch: its zero-point-padded input in blocks of 4 channels
    # (uint8) and its weights decoded to int8 in blocks of 16 x 4 (padding = kernel // 2);
    # 2-bit packed weights come in groups of input blocks that divide their count
    # (packing.blocks_per_group), so no padded blocks.
    def scratch(layer):
        out_c, in_c, kh, kw = layer["weight_shape"]
        _, height, width = layer["input_shape"]
        blocks_in = -(-in_c // 4)
        padded = blocks_in * (height + 2 * (kh // 2)) * (width + 2 * (kw // 2)) * 4
        return padded + -(-out_c // 16) * blocks_in * kh * kw * 64

    convs = [layer for layer in report["layers"] if layer["kind"] == "conv2d"]
    assert memory["kernel_workspace_bytes_batch_1"] == max(scratch(layer) for layer in convs)
    assert memory["module_file_bytes"] == (x86_build / "model.so").stat().st_size
    assert memory["runtime_library_bytes"]["libtvm_runtime.so"] > 1_000_000
    paper = report["memory"]["paper_activation_bytes"]
    assert paper["batch_8"] == 8 * paper["batch_1"] > 0
    assert sum(layer["output_bytes_batch_1"] for layer in report["layers"]) == paper["batch_1"]
    weights = report["memory"]["weights"]
    assert weights["trained_precision_bytes"] < weights["fp32_bytes"]
    markdown = (x86_build / "report.md").read_text()
    assert f"{weights['compiled_module_bytes']:,}" in markdown
    assert f"{acc['teacher_top1']:.2%}" in markdown


def test_report_command_shows_the_build(x86_build, run_cli):
    from PIL import Image

    shown = run_cli("report", x86_build)
    assert shown.code == 0 and shown.out.strip() == (x86_build / "report.md").read_text().strip()
    as_json = run_cli("report", x86_build, "--format", "json")
    assert json.loads(as_json.out) == json.loads((x86_build / "report.json").read_text())
    plot = x86_build.parent / "plot.png"
    assert run_cli("report", x86_build, "--format", "png", "--out", plot).code == 0
    with Image.open(plot) as image, Image.open(x86_build / "footprint.png") as built:
        assert image.size == built.size == (900, 400)
    page = x86_build.parent / "page.html"
    assert run_cli("report", x86_build, "--format", "html", "-o", page).code == 0
    assert page.read_text() == (x86_build / "report.html").read_text()
    missing = run_cli("report", x86_build.parent)
    assert missing.code == 2 and "is not a build directory" in missing.err


def test_html_report_shows_the_json_numbers_and_the_plots(x86_build):
    import base64
    from html.parser import HTMLParser

    report = json.loads((x86_build / "report.json").read_text())

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.values: dict[str, str] = {}
            self.images: list[str] = []

        def handle_starttag(self, tag, attrs):
            attributes = dict(attrs)
            if "data-key" in attributes:
                self.values[attributes["data-key"]] = attributes["data-value"]
            if tag == "img":
                self.images.append(attributes["src"])

    cells = Cells()
    cells.feed((x86_build / "report.html").read_text())
    assert len(cells.values) >= 10 + 4 * len(report["layers"])
    for key, shown in cells.values.items():
        value = report
        for part in key.split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]
        assert shown == repr(value), key
    footprint, curve = cells.images  # the summary's Figure 1, the training section's curve
    assert (
        base64.b64decode(footprint.split(",", 1)[1]) == (x86_build / "footprint.png").read_bytes()
    )
    assert base64.b64decode(curve.split(",", 1)[1]) == (x86_build / "train_curve.png").read_bytes()
    assert "training.0.train_loss" in cells.values


def test_loaded_module_reproduces_onnxruntime(x86_build):
    """The acceptance check, done independently of the pipeline's own verify step."""
    import tvm
    from tvm import relax

    model = onnx.load(str(x86_build / "model.qcdq.onnx"))
    inputs = load_dataset("digits").test_x[:64].numpy()
    expected = run_onnxruntime(model, inputs)
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(x86_build / "model.so")), tvm.cpu())
    got = np.concatenate(
        [vm["main"](tvm.runtime.tensor(inputs[i : i + 1])).numpy() for i in range(64)]
    )
    steps = np.abs(got.astype(np.float64) - expected).max() / output_quant_step(model)
    assert round(steps, 4) <= 1.0  # outputs are integers x step; rounding drops float noise


def test_arm_build_is_an_aarch64_shared_object(tiny_recipe, tmp_path, run_cli):
    out = tmp_path / "arm"
    result = run_cli("build", "-t", "arm-a72", "--bits", "4", "-r", tiny_recipe, "-o", out)
    assert result.code == 0, result.err
    assert _elf_machine(out / "model.so") == (2, 3, EM_AARCH64)
    assert_report_unchanged(out / "report.json", "build-arm")
    report = json.loads((out / "report.json").read_text())
    assert report["model"]["weight_bits"] == 4
    assert report["latency"]["kind"] == "not measured"
    assert "aarch64" in report["latency"]["reason"]
    assert "latency not measured" in result.out
    assert "schedules: 0 from your tuning records" in result.err  # says where they came from
    # The arithmetic is still checked, on a host build with the same integer kernels.
    assert "host build" in report["checks"]["compiled_module_checked"]
    assert report["checks"]["compiled_vs_brevitas"]["max_diff_steps"] <= 1.0
    assert {layer["strategy"] for layer in report["layers"]} == {"int8", "packed"}
    # Progress goes to stderr, numbered per step.
    assert f"[1/{len(pipeline.STEPS)}] load data" in result.err


def test_existing_output_is_refused_then_replaced_with_force(x86_build, tiny_recipe, run_cli):
    before = (x86_build / "manifest.json").read_bytes()
    args = ("build", "-t", "x86-host", "-r", tiny_recipe, "-o", x86_build, "-q")
    refused = run_cli(*args)
    assert refused.code == 2 and "already exists; pass --force" in refused.err
    assert (x86_build / "manifest.json").read_bytes() == before
    replaced = run_cli(*args, "--force")
    assert replaced.code == 0 and replaced.err == ""
    assert (x86_build / "manifest.json").read_bytes() != before
    assert not _leftovers(x86_build.parent)


BAD_INPUTS = [
    (["--target", "nope"], "unknown target 'nope'; choose one of"),
    (["--target", "x86-host", "--bits", "5"], "weight bits 5 are not supported"),
    (["--target", "x86-host", "--bits", "two"], "'two' is not a valid integer"),
    (["--target", "x86-host", "--act-bits", "3"], "activation bits 3 are not supported"),
    (["--target", "x86-host", "--epochs", "0"], "--epochs must be at least 1"),
    (["--target", "x86-host", "--recipe", "nope"], "unknown recipe 'nope'"),
    (
        ["--target", "x86-host", "--recipe", "missing.toml"],
        "recipe file missing.toml does not exist",
    ),
    (["--target", "missing.toml"], "target file missing.toml does not exist"),
    (["--bits", "2"], "Missing option '--target'"),
    (["--target", "x86-host", "--frobnicate"], "No such option '--frobnicate'"),
    (["--target", "x86-host", "--kernel", "fast"], "unknown kernel strategy 'fast'"),
    (["--target", "x86-host", "--threads", "0"], "--threads must be a whole number from 1 to"),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[m[:30] for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, tmp_path, run_cli):
    out = tmp_path / "out"
    result = run_cli("build", *args, "--out", out)
    assert result.code == 2
    assert result.err.startswith("error: ") and result.err.count("\n") == 1
    assert message in result.err
    assert "Traceback" not in result.err
    assert not out.exists() and not _leftovers(tmp_path)


def test_unwritable_output_is_refused_before_training(tmp_path, run_cli, tiny_recipe):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = run_cli("build", "-t", "x86-host", "-r", tiny_recipe, "-o", blocker / "sub")
    assert result.code == 2 and "cannot write to" in result.err
    assert "[1/" not in result.err  # refused before the first step


def test_interrupt_leaves_nothing_half_written(tmp_path, run_cli, tiny_recipe, monkeypatch,
                                               interrupt_build_at):  # fmt: skip
    interrupt_build_at("compile")
    out = tmp_path / "out"
    result = run_cli("build", "-t", "x86-host", "-r", tiny_recipe, "-o", out, "-q")
    assert result.code == 130 and "continues with --resume" in result.err
    assert not out.exists()
    # The staging directory keeps what finished, and says so.
    assert _leftovers(tmp_path) == [".out.partial"]
    progress = json.loads((tmp_path / ".out.partial" / pipeline.PROGRESS_FILE).read_text())
    assert progress["completed"] == ["data", "train", "export"]
    monkeypatch.undo()
    resumed = run_cli("build", "-t", "x86-host", "-r", tiny_recipe, "-o", out, "--resume")
    assert resumed.code == 0, resumed.err
    assert "train teacher and distil the low-precision student (finished before" in resumed.err
    assert "epoch" not in resumed.err  # nothing was trained again
    assert not _leftovers(tmp_path) and (out / "model.so").exists()
    manifest = json.loads((out / "manifest.json").read_text())
    assert pipeline.PROGRESS_FILE not in manifest["artifacts"]


def test_resume_checks_what_it_continues(tmp_path, run_cli, tiny_recipe, monkeypatch,
                                        interrupt_build_at):  # fmt: skip
    out = tmp_path / "out"
    fresh = run_cli("build", "-t", "x86-host", "-r", tiny_recipe, "-o", out, "-q", "--resume")
    assert fresh.code == 0, fresh.err  # nothing to resume: a normal build
    again = run_cli("build", "-t", "x86-host", "-r", tiny_recipe, "-o", out, "--resume")
    assert again.code == 2 and "is complete: nothing to resume" in again.err

    interrupt_build_at("verify")
    other = tmp_path / "other"
    assert run_cli("build", "-t", "x86-host", "-r", tiny_recipe, "-o", other, "-q").code == 130
    monkeypatch.undo()
    changed = run_cli("build", "-t", "x86-host", "-r", tiny_recipe, "-o", other, "--resume",
                      "--bits", "4")  # fmt: skip
    assert changed.code == 2 and "used other options" in changed.err
    assert "recipe.weight_bits:" in changed.err and "-> 4" in changed.err  # names what differs
    (tmp_path / ".other.partial" / "student.pt").write_bytes(b"truncated")
    damaged = run_cli("build", "-t", "x86-host", "-r", tiny_recipe, "-o", other, "--resume")
    assert damaged.code == 2 and "student.pt is damaged" in damaged.err


def test_console_script_reports_errors_without_traceback(tmp_path):
    script = Path(sys.executable).with_name("apprentice-hw")
    ok = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and "apprentice-hw" in ok.stdout
    bad = subprocess.run(
        [script, "build", "--target", "x86-host", "--bits", "7", "--out", tmp_path / "o"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "weight bits 7 are not supported" in bad.stderr
    debug = subprocess.run(
        [script, "--debug", "build", "--target", "x86-host", "--bits", "7"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Traceback" in debug.stderr and debug.returncode != 0


def test_verify_command_checks_a_build_against_brevitas(x86_build, run_cli):
    result = run_cli("verify", x86_build, "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["passed"] and data["samples"] == 100
    assert data["module"] == str(x86_build / "model.so")
    assert data["gate"] == "compiled_vs_brevitas"
    assert set(data["comparisons"]) == {
        "compiled_vs_onnxruntime", "onnxruntime_vs_brevitas", "compiled_vs_brevitas",
        "compiled_vs_brevitas_float32",
    }  # fmt: skip
    for check in data["comparisons"].values():
        assert check["max_diff_steps"] <= 1.0 and check["prediction_agreement"] >= 0.99


def _doubling_strategy():
    """A deliberately wrong kernel: int8 conv2d whose sums come out twice as large."""
    from tvm import relax

    from apprentice_hw.lowering import KERNEL_STRATEGIES, KernelStrategy

    int8 = KERNEL_STRATEGIES.get("int8")

    def emit(bb, data, layer):
        return bb.emit(relax.op.multiply(int8.emit(bb, data, layer), relax.const(2, "int32")))

    return KernelStrategy(
        name="doubling", description="broken on purpose",
        unsupported=lambda layer: None if layer.kind == "conv2d" else "conv2d only",
        weight_bytes=int8.weight_bytes, emit=emit,
    )  # fmt: skip


def test_verify_names_the_first_layer_that_diverges(x86_build, run_cli, monkeypatch):
    from apprentice_hw.lowering import KERNEL_STRATEGIES

    monkeypatch.setitem(KERNEL_STRATEGIES._entries, "doubling", _doubling_strategy())
    result = run_cli("verify", x86_build, "--kernel", "doubling", "-n", "20")
    assert result.code == 1
    assert "verify: FAIL" in result.out
    # The input quantizer agrees; the first activation after the broken conv1 does not.
    assert "first divergence: layer /relu " in result.out


VERIFY_BAD_INPUTS = [
    (["/nonexistent/model.onnx"], "does not exist"),
    (["README.md"], "is not a valid ONNX model"),
    (["tests", "-n", "0"], "--samples must be at least 1"),
    (["tests"], "is not a build directory"),
]


@pytest.mark.parametrize(("args", "message"), VERIFY_BAD_INPUTS)
def test_verify_bad_input_is_one_line_exit_2(args, message, run_cli):
    result = run_cli("verify", *args)
    assert result.code == 2 and result.err.count("\n") == 1, result.err
    assert message in result.err


def test_report_compare_puts_builds_side_by_side(x86_build, run_cli, tmp_path):
    import shutil

    other = tmp_path / "again"
    shutil.copytree(x86_build, other)
    report = json.loads((x86_build / "report.json").read_text())
    table = run_cli("report", x86_build, "--compare", other)
    assert table.code == 0
    assert f"| | {x86_build.name} | again |" in table.out
    constants = f"{report['memory']['weights']['compiled_module_bytes']:,}"
    assert f"| module constants (bytes) | {constants} | {constants} |" in table.out
    data = json.loads(run_cli("report", x86_build, "--compare", other, "--format", "json").out)
    assert data["builds"] == [x86_build.name, "again"]
    assert data["rows"]["latency b1 median (ms)"] == [report["latency"]["median_ms"]] * 2
    plot = tmp_path / "both.png"
    assert run_cli("report", x86_build, "--compare", other, "--format", "png", "-o", plot).code == 0
    assert plot.stat().st_size > 0
    bad = run_cli("report", x86_build, "--compare", tmp_path)
    assert bad.code == 2 and "is not a build directory" in bad.err


def test_latency_is_timed_with_the_thread_count_asked_for(x86_build):
    from apprentice_hw.pipeline import measured_latency
    from apprentice_hw.progress import Progress

    bundle = json.loads((x86_build / "bundle" / "manifest.json").read_text())
    sample = np.random.default_rng(0).random(bundle["input"]["shape"], dtype=np.float32)
    latency = measured_latency(x86_build / "model.so", sample, 1, Progress(quiet=True))
    assert latency.measured and latency.threads == 1 and latency.median_ms > 0


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH; 'make test' installs Debian's "
                    "chromium where it can (root or sudo)")  # fmt: skip
def test_the_html_report_renders_in_chromium_on_a_phone_and_a_desktop(x86_build, tmp_path):
    import html
    import re

    from PIL import Image

    page = (x86_build / "report.html").as_uri()
    browser = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run([*browser, "--dump-dom", page], capture_output=True, text=True,
                         timeout=180, check=True).stdout  # fmt: skip
    shown = [html.unescape(title) for title in re.findall(r"<h2>(.*?)</h2>", dom)]
    markdown = (x86_build / "report.md").read_text().splitlines()
    assert shown == [line[3:] for line in markdown if line.startswith("## ")]
    assert shown[0] == "Summary" and {"Memory", "Layers", "Latency (batch 1)"} <= set(shown)
    for width, height in ((1280, 900), (390, 844)):  # a desktop window, a phone
        shot = tmp_path / f"page-{width}.png"
        subprocess.run([*browser, f"--window-size={width},{height}", f"--screenshot={shot}", page],
                       capture_output=True, timeout=180, check=True)  # fmt: skip
        with Image.open(shot) as image:
            assert image.size == (width, height)
            grey = np.asarray(image.convert("L"))
        assert grey.std() > 20 and (grey < 128).mean() > 0.01  # text on a page, not blank
