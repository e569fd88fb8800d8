"""Bad input across every command: one ``error:`` line naming the problem and the fix, exit
status 2, no traceback, and nothing written or changed (neither the working folder nor an
existing build). Plus property-based fuzzing of recipe files, target files and ONNX bytes.
"""

from __future__ import annotations

import hashlib
import json
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
    import apprentice_hw

    out = tmp_path_factory.mktemp("bad-input") / "build"
    return apprentice_hw.build("x86-host", TINY, out=out).out


def _variant(source: Path, dest: Path, *edits: tuple[str, str]) -> Path:
    """A copy of the text file ``source`` at ``dest`` with each (old, new) edit applied once."""
    text = source.read_text()
    for old, new in edits:
        assert old in text, (source, old)
        text = text.replace(old, new, 1)
    dest.write_text(text)
    return dest


def _target(folder: Path, base: str, name: str, *edits: tuple[str, str]) -> Path:
    """A target file ``name``.toml made from targets/``base``.toml (its name must match)."""
    source = REPO / "targets" / f"{base}.toml"
    return _variant(source, folder / f"{name}.toml", (f'name = "{base}"', f'name = "{name}"'),
                    *edits)  # fmt: skip


class Evil:
    """A pickle that runs code when loaded: touches a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _damaged_builds(build: Path, root: Path) -> None:
    """Copies of the build, each damaged in one way a later command must notice."""
    damage = {
        "bad-manifest": lambda b: (b / "manifest.json").write_text("{"),
        "no-report": lambda b: (b / "report.json").unlink(),
        "bad-report": lambda b: (b / "report.json").write_text('{"model": 1}'),
        "no-student": lambda b: (b / "student.pt").unlink(),
        "bad-verification": lambda b: np.save(b / "bundle" / "verify_outputs.npy",
                                              np.zeros((16, 3), np.float32)),
        "foreign-file": lambda b: (b / "notes.txt").write_text("my notes"),
    }  # fmt: skip
    for name, spoil in damage.items():
        shutil.copytree(build, root / name)
        spoil(root / name)


def _damaged_tuning_database(cache: Path) -> None:
    """A tuning database for x86-host cut short mid-record (a killed process, a full disk)."""
    from apprentice_hw.compiler import tuning
    from apprentice_hw.hardware import get_target
    from apprentice_hw.resources import CACHE_ENV

    patch = pytest.MonkeyPatch()
    patch.setenv(CACHE_ENV, str(cache))
    try:
        directory = tuning.tuning_dir(get_target("x86-host"))
    finally:
        patch.undo()
    directory.mkdir(parents=True)
    (directory / tuning.WORKLOAD_FILE).write_text("")
    (directory / tuning.RECORD_FILE).write_text('[0, [[["SampleTile", [')


@pytest.fixture(scope="module")
def files(tmp_path_factory, build: Path) -> Path:
    """A working folder with damaged and wrong inputs (never changed by the tests)."""
    import torch

    tmp_path = tmp_path_factory.mktemp("bad-files")
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
    model = onnx.load_from_string(qcdq)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 99
    onnx.save(model, tmp_path / "opset99.onnx")
    model = onnx.load_from_string(qcdq)
    for dim, name in zip(model.graph.input[0].type.tensor_type.shape.dim[2:], "HW", strict=True):
        dim.dim_param = name
    onnx.save(model, tmp_path / "dynamic.onnx")
    (tmp_path / "bad.toml").write_text("name = [unclosed\n")
    tiny = TINY.read_text()
    (tmp_path / "unknown-model.toml").write_text(
        tiny.replace('model = "resnet-small"', 'model = "resnet-9000"', 1)
    )
    arm = (REPO / "targets" / "arm-a72.toml").read_text()
    (tmp_path / "arm-a72.toml").write_text(arm.replace('arch = "aarch64"', 'arch = "sparc"'))
    _target(tmp_path, "x86-host", "half-core", ('\ncores = "host"', "\ncores = 0.5"))
    _target(tmp_path, "x86-host", "bad-kind", ('kind = "llvm"', 'kind = "llvmx"'))
    _target(tmp_path, "x86-host", "no-int8", ("int8 = 128", "# int8 missing"))
    _target(
        tmp_path,
        "arm-a72",
        "not-a-compiler",
        ('cross_compiler = "aarch64-linux-gnu-g++"', 'cross_compiler = "true"'),
    )
    _target(
        tmp_path,
        "arm-a72",
        "wrong-compiler",
        ('cross_compiler = "aarch64-linux-gnu-g++"', 'cross_compiler = "g++"'),
    )
    _target(tmp_path, "arm-a72", "bad-cpu", ('mcpu = "cortex-a72"', 'mcpu = "cortex-a999"'))
    torch.save([1, 2, 3], tmp_path / "a-list.pt")
    torch.save({"conv1.weight": Evil(tmp_path / "pwned")}, tmp_path / "evil.pt")
    recipes = {
        "tau0": [('scheme = "B"', 'scheme = "B"\ntau = 0.0')],
        "lr-absurd": [("lr = 0.05", "lr = 1e6")],
        "width0": [("width = 4", "width = 0")],
        "blocks-empty": [("blocks = [1, 1]", "blocks = []")],
        "threads-abc": [("threads = 1", 'threads = "abc"')],
        "path5": [('dataset = "digits"', 'dataset = "digits"\npath = 5')],
        "init-list": [('scheme = "B"', f'scheme = "C"\nstudent_init = "{tmp_path / "a-list.pt"}"')],
        "init-evil": [('scheme = "B"', f'scheme = "C"\nstudent_init = "{tmp_path / "evil.pt"}"')],
        "escape": [('name = "tiny"', 'name = "../escape"')],
        "stray-key": [('seed = 0', 'seed = 0\nepochs = 3')],
        "no-signal": [('scheme = "B"', 'scheme = "B"\nbeta = 0.0\ngamma = 0.0')],
        "momentum": [("lr = 0.05", "lr = 0.05\nmomentum = 1.5")],
        "diverges": [("lr = 0.05", "lr = 10.0\nmomentum = 0.99\nweight_decay = 0.9")],
    }  # fmt: skip
    for name, edits in recipes.items():
        _variant(TINY, tmp_path / f"{name}.toml", *edits)
    np.save(tmp_path / "nan.npy", np.full((2, 1, 8, 8), np.nan, np.float32))
    np.save(tmp_path / "wrongshape.npy", np.zeros((2, 3, 5, 5), np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 1, 8, 8), np.float32))
    (tmp_path / "empty-dataset").mkdir()
    (tmp_path / "garbage-idx").mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):  # fmt: skip
        (tmp_path / "garbage-idx" / name).write_bytes(b"not an IDX file")
    (tmp_path / "userdata" / "sub").mkdir(parents=True)
    (tmp_path / "userdata" / "notes.txt").write_text("a user's own file")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    _damaged_builds(build, tmp_path)
    _damaged_tuning_database(tmp_path / "damaged-cache")
    return tmp_path


LONG = "x" * 250
DEAD = "127.0.0.1:9"  # nothing listens there: a deploy that got past its checks would say so
DAMAGED_DB = {"APPRENTICE_HW_CACHE": "{dir}/damaged-cache"}
HOME_IS_A_FILE = {"APPRENTICE_HW_CACHE": None, "HOME": "{dir}/bad.toml"}


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
    # target files: checked before training
    (["build", "-t", "{dir}/half-core.toml", "-r", "{tiny}", "-o", "{out}"],
     "'cores' must be a whole number or \"host\", got 0.5"),
    (["build", "-t", "{dir}/bad-kind.toml", "-r", "{tiny}", "-o", "{out}"],
     "[tvm] kind must be \"llvm\" for a cpu target, got 'llvmx'"),
    (["build", "-t", "{dir}/no-int8.toml", "-r", "{tiny}", "-o", "{out}"],
     "[peak_macs_per_cycle_per_core] lacks int8"),
    (["build", "-t", "{dir}/not-a-compiler.toml", "-r", "{tiny}", "-o", "{out}"],
     "cross compiler 'true' (/usr/bin/true) does not answer -dumpmachine, not aarch64"),
    (["build", "-t", "{dir}/wrong-compiler.toml", "-r", "{tiny}", "-o", "{out}"],
     "says it builds for 'x86_64-linux-gnu', not aarch64"),
    (["build", "-t", "{dir}/bad-cpu.toml", "-r", "{tiny}", "-o", "{out}"],
     "LLVM knows no CPU named mcpu = 'cortex-a999' for aarch64-linux-gnu"),
    # recipes: every field's type and range, before training
    (["build", "-t", "x86-host", "-r", "{dir}/tau0.toml", "-o", "{out}"],
     "'tau' must be a number in [0.01, 100] (the paper uses 1), got 0.0"),
    (["build", "-t", "x86-host", "-r", "{dir}/lr-absurd.toml", "-o", "{out}"],
     "[teacher]: 'lr' must be a number in (0, 10] (SGD diverges above that), got 1000000.0"),
    (["build", "-t", "x86-host", "-r", "{dir}/width0.toml", "-o", "{out}"],
     "model 'resnet-small' option 'width' must be an integer from 1 to 4096, got 0"),
    (["build", "-t", "x86-host", "-r", "{dir}/blocks-empty.toml", "-o", "{out}"],
     "option 'blocks' must be a list of 1 to 16 integers from 1 to 4096, got []"),
    (["build", "-t", "x86-host", "-r", "{dir}/threads-abc.toml", "-o", "{out}"],
     "'threads' must be an integer from 1 to 1024, got 'abc'"),
    (["build", "-t", "x86-host", "-r", "{dir}/path5.toml", "-o", "{out}"],
     "[data] 'path' must be a folder path as a string, got 5"),
    (["build", "-t", "x86-host", "-r", "{dir}/init-list.toml", "-o", "{out}"],
     "a-list.pt is not a state dict of tensors"),
    (["build", "-t", "x86-host", "-r", "{dir}/init-evil.toml", "-o", "{out}"],
     "cannot read student_init checkpoint"),
    (["build", "-t", "x86-host", "-r", "{dir}/escape.toml"],
     "recipe name '../escape' must be 1-64 letters, digits"),
    (["build", "-t", "x86-host", "-r", "{dir}/stray-key.toml", "-o", "{out}"],
     "unknown field 'epochs'; known: name, description"),
    (["build", "-t", "x86-host", "-r", "{dir}/no-signal.toml", "-o", "{out}"],
     "'beta' and 'gamma' are both 0"),
    (["build", "-t", "x86-host", "-r", "{dir}/momentum.toml", "-o", "{out}"],
     "'momentum' must be a number in [0, 1), got 1.5"),
    (["build", "-t", "x86-host", "-r", "{dir}/diverges.toml", "-o", "{out}"],
     "training diverged: the teacher's outputs became NaN or infinite in epoch 1"),
    (["train", "-r", "{dir}/threads-abc.toml", "-o", "{out}"], "'threads' must be an integer"),
    # output directories: --force replaces only what apprentice-hw wrote
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", "{dir}/" + LONG],
     "name 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' is 250 bytes long"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", "{dir}/dangling"],
     "is a symbolic link to {dir}/nowhere, which does not exist"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", ".", "--force"],
     "is the working directory or a folder above it", {"cwd": "{dir}/userdata"}),
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", "{build}", "--force"],
     "is the working directory or a folder above it", {"cwd": "{build}/bundle"}),
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", "{dir}/userdata", "--force"],
     "was not written by apprentice-hw (it holds notes.txt, sub)"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", "{dir}/garbage-idx", "--force"],
     "was not written by apprentice-hw"),
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", "{dir}/foreign-file", "--force"],
     "holds files apprentice-hw did not write (notes.txt)"),
    (["train", "-r", "{tiny}", "-o", "{dir}/userdata", "--force"],
     "was not written by apprentice-hw"),
    (["train", "-r", "{tiny}", "-o", ".", "--force"],
     "is the working directory or a folder above it", {"cwd": "{dir}/userdata/sub"}),
    # the tuning database and the cache folder
    (["build", "-t", "x86-host", "-r", "{tiny}", "-o", "{out}"],
     "damaged-cache/tuning/x86-host/", {"env": DAMAGED_DB}),
    (["tune", "{build}"], "is damaged (database_tuning_record.json line 1 is not JSON)",
     {"env": DAMAGED_DB}),
    (["tune", "{build}"], "cannot write the tuning database in", {"env": HOME_IS_A_FILE}),
    (["tune", "{dir}/dynamic.onnx"], "has shape batchx1xHxW: apprentice-hw compiles fixed sizes"),
    # verify
    (["verify", "{dir}/opset99.onnx"], "uses ONNX opset 99; apprentice-hw reads opsets 10 to"),
    (["verify", "{build}/model.qcdq.onnx", "--inputs", "{dir}/empty.npy"],
     "hold no images (shape (0, 1, 8, 8))"),
    (["verify", "{build}/model.qcdq.onnx", "--tolerance", "nan"],
     "--tolerance must be a number of output steps >= 0, got nan"),
    # damaged builds given to later commands
    (["verify", "{dir}/bad-manifest"], "bad-manifest/manifest.json is damaged"),
    (["verify", "{dir}/no-student"], "no-student/student.pt is missing"),
    (["report", "{dir}/bad-manifest"], "bad-manifest/manifest.json is damaged"),
    (["report", "{dir}/bad-report"], "bad-report/report.json is damaged or from another version"),
    (["report", "{dir}/no-report"], "no-report has no report.json"),
    (["report", "{build}", "--compare", "{dir}/bad-report"], "bad-report/report.json is damaged"),
    (["report", "{build}", "--compare", "{dir}/bad-manifest"], "manifest.json is damaged"),
    (["tune", "{dir}/bad-manifest"], "bad-manifest/manifest.json is damaged"),
    (["report", "--model", "resnet-small", "--input", "100000"],
     "--input must be from 8 to 2048 pixels"),
    # deploy: the whole build is checked before a board is contacted
    (["deploy", "{dir}/bad-manifest", "--host", DEAD], "manifest.json is damaged"),
    (["deploy", "{dir}/no-report", "--host", DEAD], "no-report has no report.json"),
    (["deploy", "{dir}/bad-report", "--host", DEAD], "report.json is damaged"),
    (["deploy", "{dir}/bad-verification", "--host", DEAD],
     "verify_outputs.npy holds float32 (16, 3), not float (16, 10)"),
    (["deploy", "{build}", "--host", DEAD, "--wait", "nan"], "--wait from 0 to 86400"),
    # options: ranges, before any work
    (["verify", "{build}/model.qcdq.onnx", "--samples", "100000000"],
     "--samples 100000000 would need 23.8 GiB of random inputs"),
    (["tune", "{build}", "--batch", "100000"], "--batch must be at most 256"),
    (["build", "-t", "zcu104", "-r", "{tiny}", "--reuse", "0", "-o", "{out}"],
     "--reuse must be at least 1, got 0"),
    (["build", "-t", "zcu104", "-r", "{tiny}", "--fps", "nan", "-o", "{out}"],
     "--fps must be a positive number of images per second, got nan"),
]  # fmt: skip


def _snapshot(*folders: Path) -> dict[str, str]:
    """Every file under ``folders`` with its content hash."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _fill(value: str, values: dict[str, Path]) -> str:
    return value.format(**values)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[case[1][:40] for case in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(case, files, build, run_cli,
                                                          monkeypatch):  # fmt: skip
    args, message, *rest = case
    extra = rest[0] if rest else {}
    values = {"tiny": TINY, "fashion": FASHION, "dir": files, "out": files / "out",
              "build": build}  # fmt: skip
    for name, value in extra.get("env", {}).items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, _fill(value, values))
    if "cwd" in extra:
        monkeypatch.chdir(_fill(extra["cwd"], values))
    argv = [_fill(arg, values) for arg in args]
    before = _snapshot(files, build)
    result = run_cli(*argv)
    assert result.code == 2, (argv, result.err)
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and _fill(message, values) in errors[0], result.err
    assert "Traceback" not in result.err
    assert "[2/" not in result.err or "diverged" in message  # refused before training
    assert _snapshot(files, build) == before  # nothing written, nothing changed
    assert not (files / "out").exists() and not (files / "pwned").exists()
    for folder in (files, build.parent, REPO / "build", REPO):
        if folder.is_dir():
            assert not [p for p in folder.iterdir() if p.name.endswith((".partial", ".lock"))]


def test_bad_input_count():
    assert len(BAD_INPUTS) >= 80


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
    from apprentice_hw.config import parse_recipe
    from apprentice_hw.pipeline import validate_recipe

    recipe = tomllib.loads(TINY.read_text())
    sections = ["", "data", "teacher", "student", "distill"]
    section = data.draw(st.sampled_from(sections))
    table = recipe.get(section, recipe) if section else recipe
    keys = [*table.keys(), "surprise"]
    key = data.draw(st.sampled_from(keys))
    mutated = _mutate(recipe, [section, key] if section else [key], data.draw(TOML_VALUES))
    try:
        validate_recipe(parse_recipe(mutated, TINY))
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


# -- code in checkpoints, --force and symbolic links ------------------------------------------
def _plant(path: Path, marker: Path) -> None:
    """Replace the checkpoint at ``path`` with one that would run code if unpickled freely."""
    import torch

    torch.save({"epoch": 1, "networks": Evil(marker)}, path)


def test_a_malicious_training_checkpoint_runs_no_code(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("train", "-r", TINY, "-o", out, "-q").code == 0
    marker = tmp_path / "pwned"
    _plant(out / "checkpoints" / "student.ckpt", marker)
    result = run_cli("train", "-r", TINY, "-o", out, "--resume", "-q")
    assert result.code == 2 and "student.ckpt is unreadable" in result.err, result.err
    assert "Traceback" not in result.err and not marker.exists()
    import torch  # the planted file is real: a free unpickling runs its code

    torch.load(out / "checkpoints" / "student.ckpt", weights_only=False)
    assert marker.exists()


def test_a_malicious_student_in_a_build_runs_no_code(tmp_path, build, run_cli):
    copy = tmp_path / "build"
    shutil.copytree(build, copy)
    marker = tmp_path / "pwned"
    _plant(copy / "student.pt", marker)
    result = run_cli("verify", copy)
    assert result.code == 2 and "student.pt is damaged or not a weights file" in result.err
    assert not marker.exists()


def test_a_malicious_student_in_an_interrupted_build_runs_no_code(tmp_path, run_cli, monkeypatch,
                                                                  interrupt_build_at):  # fmt: skip
    interrupt_build_at("compile")
    out = tmp_path / "out"
    assert run_cli("build", "-t", "x86-host", "-r", TINY, "-o", out, "-q").code == 130
    monkeypatch.undo()
    marker = tmp_path / "pwned"
    _plant(tmp_path / ".out.partial" / "student.pt", marker)
    result = run_cli("build", "-t", "x86-host", "-r", TINY, "-o", out, "--resume", "-q")
    assert result.code == 2 and "student.pt is damaged or not a weights file" in result.err
    assert not marker.exists() and not out.exists()


def test_force_through_a_symbolic_link_replaces_the_directory_and_keeps_the_link(
    tmp_path, build, run_cli
):
    real = tmp_path / "builds" / "real"
    real.parent.mkdir()
    shutil.copytree(build, real)
    link = tmp_path / "link"
    link.symlink_to(real)
    before = json.loads((real / "manifest.json").read_text())["created_unix"]
    result = run_cli("build", "-t", "x86-host", "-r", TINY, "-o", link, "--force", "-q")
    assert result.code == 0, result.err
    assert link.is_symlink() and link.resolve() == real
    assert json.loads((real / "manifest.json").read_text())["created_unix"] != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["builds", "link"]
    assert sorted(p.name for p in real.parent.iterdir()) == ["real"]  # no .real.old-PID


def test_train_force_replaces_a_training_run(tmp_path, run_cli):
    out = tmp_path / "run"
    assert run_cli("train", "-r", TINY, "-o", out, "-q").code == 0
    first = (out / "recipe.json").stat().st_mtime_ns
    again = run_cli("train", "-r", TINY, "-o", out, "--force", "-q")
    assert again.code == 0, again.err
    assert (out / "recipe.json").stat().st_mtime_ns != first
