"""Bad input across every command: one ``error:`` line naming the problem and the fix, exit
status 2, no traceback, and nothing written or changed (neither the working folder nor an
existing build). Plus property-based fuzzing of recipe files, target files and ONNX bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tomllib
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from apprentice_hw.errors import UserError

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "data" / "tiny.toml"
FASHION = REPO / "pipelines" / "fashion-mnist.toml"


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    """A finished tiny build the bad commands point at (it must come out unchanged)."""
    from apprentice_hw.cli import main

    out = tmp_path_factory.mktemp("bad-input") / "build"
    assert main(["build", "-t", "x86-host", "-r", str(TINY), "-o", str(out), "-q"]) == 0
    return out


@pytest.fixture
def files(tmp_path: Path, build: Path) -> Path:
    """A working folder with damaged and wrong inputs."""
    qcdq = (build / "model.qcdq.onnx").read_bytes()
    (tmp_path / "truncated.onnx").write_bytes(qcdq[: len(qcdq) // 3])
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01 not protobuf \xff" * 8)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    nodes = [
        helper.make_node("Relu", ["x"], ["t"]),
        helper.make_node("StringNormalizer", ["t"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "unsupported.onnx")  # fmt: skip
    (tmp_path / "bad.toml").write_text("name = [unclosed\n")
    tiny = TINY.read_text()
    (tmp_path / "unknown-model.toml").write_text(
        tiny.replace('model = "resnet-small"', 'model = "resnet-9000"', 1)
    )
    arm = (REPO / "targets" / "arm-a72.toml").read_text()
    (tmp_path / "arm-a72.toml").write_text(arm.replace('arch = "aarch64"', 'arch = "sparc"'))
    np.save(tmp_path / "nan.npy", np.full((2, 1, 8, 8), np.nan, np.float32))
    np.save(tmp_path / "wrongshape.npy", np.zeros((2, 3, 5, 5), np.float32))
    (tmp_path / "empty-dataset").mkdir()
    (tmp_path / "garbage-idx").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        (tmp_path / "garbage-idx" / name).write_bytes(b"not an IDX file")
    return tmp_path


BAD_INPUTS = [
    # build: target, bits, recipe, dataset, options, output
    (["build", "-t", "nope", "-r", "{tiny}", "-o", "{out}"], "unknown target 'nope'; choose"),
    (["build", "-t", "{dir}/arm-a72.toml", "-r", "{tiny}", "-o", "{out}"],
     "'arch' must be \"x86_64\" or \"aarch64\", got 'sparc'"),
    (["build", "-t", "x86-host", "--bits", "5", "-r", "{tiny}", "-o", "{out}"],
     "weight bits 5 are not supported"),
    (["build", "-t", "x86-host", "--act-bits", "3", "-r", "{tiny}", "-o", "{out}"],
     "activation bits 3 are not supported"),
    (["build", "-t", "x86-host", "--epochs", "0", "-r", "{tiny}", "-o", "{out}"],
     "--epochs must be at least 1"),
    (["build", "-t", "x86-host", "-r", "{dir}/bad.toml", "-o", "{out}"], "is not valid TOML"),
    (["build", "-t", "x86-host", "-r", "{dir}/unknown-model.toml", "-o", "{out}"],
     "unknown model 'resnet-9000'; choose one of"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "--scheme", "Z", "-o", "{out}"],
     "unknown distillation scheme 'Z'"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "--quant", "weird", "-o", "{out}"],
     "unknown quantizer family 'weird'"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "--seed", "-1", "-o", "{out}"],
     "--seed must be an integer from 0 to 4294967295"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "--data", "{dir}/nothere", "-o", "{out}"],
     "ships with scikit-learn; remove the data path option"),
    (["build", "-t", "x86-host", "-r", "{fashion}", "--data", "{dir}/nothere", "-o", "{out}"],
     "does not exist"),
    (["build", "-t", "x86-host", "-r", "{fashion}", "--data", "{dir}/empty-dataset",
      "-o", "{out}"], "has no train-images-idx3-ubyte"),
    (["build", "-t", "x86-host", "-r", "{fashion}", "--data", "{dir}/bad.toml", "-o", "{out}"],
     "is a file, not a folder"),
    (["build", "-t", "x86-host", "-r", "{fashion}", "--data", "{dir}/garbage-idx",
      "-o", "{out}"], "train-images-idx3-ubyte is not an IDX file (bad magic number)"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", "{build}"],
     "already exists; pass --force to replace it"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", "{build}", "--resume"],
     "is complete: nothing to resume"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "--reuse", "4", "-o", "{out}"],
     "apply to FPGA targets"),
    (["build", "-t", "zcu104", "-r", "{tiny}", "--synthesize", "-o", "{out}"],
     "--synthesize needs vitis_hls on PATH"),
    (["train", "-r", "{tiny}", "-o", "{build}"], "already holds a run; pass --resume"),
    # verify: damaged models and inputs
    (["verify", "{dir}/truncated.onnx"], "is not a valid ONNX model"),
    (["verify", "{dir}/garbage.onnx"], "is not a valid ONNX model"),
    (["verify", "{build}", "--inputs", "{dir}/nan.npy"], "--inputs goes with an .onnx file"),
    (["verify", "{build}/model.qcdq.onnx", "--inputs", "{dir}/nan.npy"],
     "contain NaN or infinite values"),
    (["verify", "{build}/model.qcdq.onnx", "--inputs", "{dir}/wrongshape.npy"],
     "have shape (2, 3, 5, 5); the model wants (N, 1, 8, 8)"),
    (["verify", "{build}", "--samples", "0"], "--samples must be at least 1"),
    # tune: unsupported operators and options
    (["tune", "{dir}/unsupported.onnx"],
     "operators TVM's ONNX importer does not support (StringNormalizer)"),
    (["tune", "{build}", "--trials", "0"], "--trials must be at least 1"),
    (["tune", "{build}", "--time-budget", "soon"], "--time-budget must be a positive duration"),
    # report, deploy, emulated-pi
    (["report", "{dir}/truncated.onnx"], "is not a build directory (no manifest.json)"),
    (["report", "--model", "resnet999"], "unknown model 'resnet999'"),
    (["report", "--model", "resnet18", "--precisions", "W9A9"], "precision 'W9A9' is not"),
    (["deploy", "{build}"], "name the board: --tracker HOST:PORT --key KEY"),
    (["deploy", "{build}", "--host", "box"], "--host must be HOST:PORT"),
    (["emulated-pi", "--port", "99999"], "--port must be between 1 and 65535"),
]  # fmt: skip


def _snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` with its content hash."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[m[:40] for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(args, message, files, build, run_cli):
    values = {"tiny": TINY, "fashion": FASHION, "dir": files, "out": files / "out",
              "build": build}  # fmt: skip
    argv = [arg.format(**values) for arg in args]
    before = _snapshot(files, build)
    result = run_cli(*argv)
    assert result.code == 2, (argv, result.err)
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], result.err
    assert "Traceback" not in result.err
    assert _snapshot(files, build) == before  # nothing written, nothing changed
    assert not (files / "out").exists()
    assert not [p for p in build.parent.iterdir() if p.name.endswith((".partial", ".lock"))]


def test_bad_input_count():
    assert len(BAD_INPUTS) >= 25


def test_a_full_disk_is_refused_before_training(tmp_path, run_cli, monkeypatch):
    from apprentice_hw import pipeline

    real = shutil.disk_usage
    monkeypatch.setattr(pipeline.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=10 * 2**20))  # fmt: skip
    result = run_cli("build", "-t", "x86-host", "-r", TINY, "-o", tmp_path / "out")
    assert result.code == 2 and "only 10 MiB free on the device" in result.err
    assert not (tmp_path / "out").exists() and not list(tmp_path.iterdir())


def test_running_out_of_space_mid_write_is_one_line(tmp_path, run_cli, monkeypatch):
    import errno

    from apprentice_hw import pipeline

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.json"))

    monkeypatch.setattr(pipeline, "write_manifest", full)
    result = run_cli("build", "-t", "x86-host", "-r", TINY, "-o", tmp_path / "out", "-q")
    assert result.code == 2 and "error: no space left on the device writing" in result.err
    assert not (tmp_path / "out").exists()


# -- fuzzing ------------------------------------------------------------------------------------
# APPRENTICE_HW_FUZZ_EXAMPLES=2000 for a longer hunt than the default run's 60 per property.
FUZZ = settings(max_examples=int(os.environ.get("APPRENTICE_HW_FUZZ_EXAMPLES", "60")),
                deadline=None, suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
TOML_VALUES = st.one_of(
    st.integers(-5, 10**12), st.floats(allow_nan=True), st.text(max_size=12), st.booleans(),
    st.lists(st.integers(-3, 9), max_size=3), st.dictionaries(st.text(max_size=5), st.integers()),
)  # fmt: skip


def _mutate(data: dict, path: list[str], value) -> dict:
    """``data`` with the entry at ``path`` (an existing key, or a new one) set to ``value``."""
    node = data
    for key in path[:-1]:
        node = node[key] if isinstance(node.get(key), dict) else node
    node[path[-1]] = value
    return data


@FUZZ
@given(data=st.data())
def test_fuzzed_recipe_files_load_or_fail_with_a_user_error(data, tmp_path_factory):
    from apprentice_hw.config import Recipe
    from apprentice_hw.pipeline import validate_recipe

    recipe = tomllib.loads(TINY.read_text())
    sections = ["", "data", "teacher", "student", "distill"]
    section = data.draw(st.sampled_from(sections))
    table = recipe.get(section, recipe) if section else recipe
    keys = [*table.keys(), "surprise"]
    key = data.draw(st.sampled_from(keys))
    mutated = _mutate(recipe, [section, key] if section else [key], data.draw(TOML_VALUES))
    try:
        validate_recipe(Recipe.from_dict(mutated))
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)


@FUZZ
@given(data=st.data())
def test_fuzzed_target_files_parse_or_fail_with_a_user_error(data, tmp_path_factory):
    from apprentice_hw.hardware import parse_target

    name = data.draw(st.sampled_from(["arm-a72", "x86-host", "jetson-orin", "zcu104"]))
    target = tomllib.loads((REPO / "targets" / f"{name}.toml").read_text())
    sections = [key for key, value in target.items() if isinstance(value, dict)] + [""]
    section = data.draw(st.sampled_from(sections))
    table = target[section] if section else target
    key = data.draw(st.sampled_from([*table.keys(), "surprise"]))
    mutated = _mutate(target, [section, key] if section else [key], data.draw(TOML_VALUES))
    try:
        parse_target(mutated, Path(f"{name}.toml"))
    except UserError as exc:
        assert str(exc) and "\n" not in str(exc)


@FUZZ
@given(cut=st.integers(0, 10_000), flips=st.lists(st.integers(0, 10_000), max_size=4))
def test_damaged_onnx_bytes_are_a_user_error_or_a_valid_model(cut, flips, tmp_path_factory):
    from apprentice_hw.verify import load_onnx

    folder = tmp_path_factory.mktemp("onnx")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                                                [x], [y]))  # fmt: skip
    data = bytearray(model.SerializeToString())
    data = data[: min(cut, len(data))] if cut < len(data) else data
    for flip in flips:
        if data:
            data[flip % len(data)] ^= 0xFF
    path = folder / "m.onnx"
    path.write_bytes(bytes(data))
    try:
        loaded = load_onnx(path)
    except UserError as exc:
        assert "is not a valid ONNX model" in str(exc)
    else:
        onnx.checker.check_model(loaded)


def test_a_truncated_training_checkpoint_is_one_line(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("train", "-r", TINY, "-o", out, "-q").code == 0
    checkpoint = out / "checkpoints" / "student.ckpt"
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    before = _snapshot(out)
    result = run_cli("train", "-r", TINY, "-o", out, "--resume", "-q")
    assert result.code == 2
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "student.ckpt is unreadable" in errors[0]
    assert _snapshot(out) == before
