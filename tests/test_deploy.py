"""Deploy bundles and `apprentice-hw deploy` over real TVM RPC (tracker and server on 127.0.0.1).

The "board" here is an x86 RPC server: the module really travels through the tracker, is loaded
by the server process and timed by TVM's RPC time evaluator. The emulated Raspberry Pi (aarch64
under qemu) is in test_emulated_pi.py, marked slow.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from report_schema import assert_report_unchanged

from apprentice_hw.deploy.bundle import read_bundle
from apprentice_hw.errors import UserError
from apprentice_hw.remote import LOOPBACK, free_port, local_rpc, local_server

TINY = Path(__file__).parent / "data" / "tiny.toml"


@pytest.fixture(scope="module")
def builds(tmp_path_factory) -> dict[str, Path]:
    """A tiny x86-host build and a tiny arm-a72 build (never modified: tests copy them)."""
    import apprentice_hw

    root = tmp_path_factory.mktemp("deploy")
    for target in ("x86-host", "arm-a72"):
        apprentice_hw.build(target, TINY, out=root / target)
    return {"x86": root / "x86-host", "arm": root / "arm-a72"}


@pytest.fixture(scope="module")
def board():
    """A TVM tracker with one x86 RPC server registered as 'x86-board'."""
    with local_rpc("x86-board") as device:
        yield device


def _copy(build: Path, tmp_path: Path) -> Path:
    out = tmp_path / build.name
    shutil.copytree(build, out)
    return out


def test_bundle_holds_the_module_runner_contract_and_verification_data(builds):
    bundle = read_bundle(builds["x86"])
    manifest = bundle.manifest
    assert (
        manifest["module"]["sha256"]
        == hashlib.sha256((builds["x86"] / "model.so").read_bytes()).hexdigest()
    )
    model = onnx.load(builds["x86"] / "model.qcdq.onnx")
    assert manifest["input"]["name"] == model.graph.input[0].name
    assert manifest["input"]["shape"] == [1, 1, 8, 8] and manifest["input"]["dtype"] == "float32"
    quant = manifest["input"]["quantization"]
    assert quant["scale"] > 0 and quant["dtype"] in ("uint8", "int8")
    report = json.loads((builds["x86"] / "report.json").read_text())
    assert manifest["output"]["quant_step"] == report["checks"]["output_step"]
    assert manifest["output"]["shape"] == [1, 10]
    inputs, outputs = bundle.inputs, bundle.outputs
    assert inputs.shape == (16, 1, 8, 8) and outputs.shape == (16, 10)
    # The verification outputs are the built module's own outputs on those images.
    from apprentice_hw.compiler.runtime import run_module

    assert np.array_equal(run_module(bundle.module_path, inputs), outputs)
    readme = (bundle.folder / "README.md").read_text()
    assert "python3 run.py --verify" in readme and manifest["module"]["sha256"] in readme
    # The arm bundle's expected outputs come from the host twin, and say so.
    arm = read_bundle(builds["arm"]).manifest
    assert "host build" in arm["verification"]["produced_by"] and arm["target"]["arch"] == "aarch64"


def _runner(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(bundle / "run.py"), *args], capture_output=True,
                          text=True, timeout=120, cwd=bundle.parent)  # fmt: skip


def test_runner_verifies_classifies_and_rejects_bad_input(builds, tmp_path):
    bundle = tmp_path / "bundle"
    shutil.copytree(builds["x86"] / "bundle", bundle)  # nothing else from the build
    checked = _runner(bundle, "--verify")
    assert checked.returncode == 0, checked.stderr
    assert "outputs identical to the host build's" in checked.stdout
    images = np.load(bundle / "verify_inputs.npy")[:3]
    np.save(tmp_path / "three.npy", images)
    np.save(tmp_path / "one.npy", images[0])
    classified = _runner(bundle, "three.npy", "one.npy", "--top", "2", "--out", "logits.npy")
    assert classified.returncode == 0, classified.stderr
    logits = np.load(tmp_path / "logits.npy")
    expected = np.load(bundle / "verify_outputs.npy")
    assert np.array_equal(logits, np.concatenate([expected[:3], expected[:1]]))
    assert f"three.npy[2]: class {expected[2].argmax()} " in classified.stdout
    np.save(tmp_path / "wrong.npy", np.zeros((2, 3, 8, 8), np.float32))
    wrong = _runner(bundle, "wrong.npy")
    assert wrong.returncode == 2 and "the model takes 1x8x8" in wrong.stderr
    assert "Traceback" not in wrong.stderr
    expected[0, 0] += 1.0  # a host output the module does not reproduce
    np.save(bundle / "verify_outputs.npy", expected)
    mismatch = _runner(bundle, "--verify")
    assert mismatch.returncode == 1 and "differ by up to" in mismatch.stdout
    with (bundle / "model.so").open("ab") as module:
        module.write(b"\0")
    damaged = _runner(bundle, "--verify")
    assert damaged.returncode == 2 and "does not match the manifest's sha256" in damaged.stderr


RUNNER_BAD_INPUTS = [
    # (build, damage to the copied bundle, arguments, message)
    ("x86", "manifest", ("--verify",), "manifest.json is damaged"),
    ("x86", None, ("zero-bytes.npy",), "cannot read zero-bytes.npy as a .npy array"),
    ("x86", None, ("no-images.npy",), "no-images.npy holds no images"),
    ("x86", None, ("archive.npz",), "is an .npz archive"),
    ("x86", None, ("--verify", "--out", "missing/logits.npy"), "the folder missing does not exist"),
    ("arm", None, ("--verify",), "built for aarch64 (arm-a72), this machine is x86_64"),
    ("x86", None, ("--verify", "--threads", "5000"), "--threads must be from 1 to"),
    ("x86", None, ("--verify", "--threads", "0"), "--threads must be from 1 to"),
    ("x86", "outputs", ("--verify",), "verification data is damaged"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "damage", "args", "message"), RUNNER_BAD_INPUTS,
                         ids=[case[3][:30] for case in RUNNER_BAD_INPUTS])  # fmt: skip
def test_runner_bad_input_is_one_line_exit_2(builds, tmp_path, build, damage, args, message):
    import platform

    if build == "arm" and platform.machine() != "x86_64":
        pytest.skip("the foreign module is an aarch64 one; this machine is not x86_64")
    bundle = tmp_path / "bundle"
    shutil.copytree(builds[build] / "bundle", bundle)
    if damage == "manifest":
        (bundle / "manifest.json").write_text('{"format": "apprentice-hw-bundle/1"}')
    elif damage == "outputs":
        np.save(bundle / "verify_outputs.npy", np.zeros((0, 10), np.float32))
    (tmp_path / "zero-bytes.npy").write_bytes(b"")
    np.save(tmp_path / "no-images.npy", np.zeros((0, 1, 8, 8), np.float32))
    np.savez(tmp_path / "archive.npz", images=np.zeros((1, 1, 8, 8), np.float32))
    result = _runner(bundle, *args)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert not (tmp_path / "missing").exists()


def test_the_tvm_runtime_alone_runs_a_bundle(builds, runtime_only_tvm, tmp_path):
    """A board needs TVM's runtime, not its 260 MB compiler library."""
    import os

    env = {**os.environ, "PYTHONPATH": str(runtime_only_tvm)}
    probe = subprocess.run(
        [sys.executable, "-c", "import tvm, tvm.base; print(tvm.__file__, tvm.base._RUNTIME_ONLY)"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert probe.stdout.split() == [str(runtime_only_tvm / "tvm" / "__init__.py"), "True"]
    bundle = tmp_path / "bundle"
    shutil.copytree(builds["x86"] / "bundle", bundle)
    checked = subprocess.run([sys.executable, str(bundle / "run.py"), "--verify"],
                             capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "outputs identical to the host build's" in checked.stdout


def test_deploy_through_a_tracker_gets_identical_outputs(builds, board, tmp_path, run_cli):
    build = _copy(builds["x86"], tmp_path)
    result = run_cli("deploy", build, "--tracker", board.tracker, "--key", board.key,
                     "--repeat", "5", "--number", "3")  # fmt: skip
    assert result.code == 0, result.err
    assert "identical to the host build's" in result.out
    assert_report_unchanged(build / "report.json", "build-x86-deployed")
    report = json.loads((build / "report.json").read_text())
    deploy = report["deploy"]
    assert deploy["identical"] and deploy["max_diff_steps"] == 0.0 and deploy["samples"] == 16
    assert deploy["threads"] >= 1  # the board's TVM worker threads, as its runtime reports them
    assert deploy["repeats"] == 5 and deploy["number"] == 3
    assert 0 < deploy["latency_min_ms"] <= deploy["latency_median_ms"] <= deploy["latency_max_ms"]
    assert deploy["board"] == f"'x86-board' via {board.tracker}"
    assert "## On the board" in (build / "report.md").read_text()
    assert 'data-key="deploy.latency_median_ms"' in (build / "report.html").read_text()
    manifest = json.loads((build / "manifest.json").read_text())
    for name, entry in manifest["artifacts"].items():  # re-hashed after the report changed
        assert entry["sha256"] == hashlib.sha256((build / name).read_bytes()).hexdigest()


def test_deploy_to_a_direct_server(builds, tmp_path, run_cli):
    build = _copy(builds["x86"], tmp_path)
    with local_server() as server:
        result = run_cli("deploy", build, "--host", server.address, "--repeat", "3")
    assert result.code == 0, result.err
    assert json.loads((build / "report.json").read_text())["deploy"]["identical"]


def test_a_module_the_board_cannot_load_fails_cleanly(builds, board, tmp_path, run_cli):
    build = _copy(builds["arm"], tmp_path)
    before = (build / "report.json").read_bytes()
    result = run_cli("deploy", build, "--tracker", board.tracker, "--key", board.key)
    assert result.code == 2
    assert "could not load the module (built for aarch64)" in result.err
    assert (build / "report.json").read_bytes() == before


def test_different_outputs_are_recorded_and_exit_1(builds, board, tmp_path, run_cli):
    build = _copy(builds["x86"], tmp_path)
    expected = np.load(build / "bundle" / "verify_outputs.npy")
    expected[3] += 2 * read_bundle(build).manifest["output"]["quant_step"]
    np.save(build / "bundle" / "verify_outputs.npy", expected)
    result = run_cli("deploy", build, "--tracker", board.tracker, "--key", board.key,
                     "--repeat", "2", "--number", "1")  # fmt: skip
    assert result.code == 1 and "differ from the host build's" in result.err
    deploy = json.loads((build / "report.json").read_text())["deploy"]
    assert not deploy["identical"] and deploy["max_diff_steps"] == pytest.approx(2.0)


def test_deploy_bad_input_is_one_line_exit_2(builds, board, tmp_path, run_cli):
    no_bundle = _copy(builds["x86"], tmp_path)
    shutil.rmtree(no_bundle / "bundle")
    tampered = _copy(builds["x86"], tmp_path / "t")
    with (tampered / "bundle" / "model.so").open("ab") as module:
        module.write(b"\0")
    dead = f"{LOOPBACK}:{free_port()}"
    x86 = builds["x86"]
    cases = [
        ((x86,), "name the board: --tracker HOST:PORT --key KEY"),
        ((x86, "--host", "h:1", "--tracker", board.tracker, "--key", "k"), "not both"),
        ((x86, "--tracker", "nowhere", "--key", "k"), "--tracker must be HOST:PORT"),
        ((x86, "--host", "box"), "--host must be HOST:PORT"),
        ((x86, "--tracker", board.tracker, "--key", "k", "--repeat", "1"), "--repeat must be"),
        ((tmp_path / "none", "--host", dead), "is not a build directory"),
        ((no_bundle, "--host", dead), "has no deploy bundle"),
        ((tampered, "--host", dead), "does not match its sha256"),
        ((x86, "--tracker", dead, "--key", "k"), "cannot reach the TVM RPC tracker"),
        ((x86, "--tracker", board.tracker, "--key", "pi9"), "no board with key 'pi9'"),
        ((x86, "--host", dead), "cannot open an RPC session on the RPC server"),
    ]
    for args, message in cases:
        before = (x86 / "report.json").read_bytes()
        result = run_cli("deploy", *args)
        assert result.code == 2, (args, result.err)
        errors = [line for line in result.err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], result.err
        assert "Traceback" not in result.err
        assert (x86 / "report.json").read_bytes() == before


def test_parse_errors_name_the_fix():
    from apprentice_hw.remote import RpcServer

    with pytest.raises(UserError, match=r"e\.g\. 192\.168\.1\.5:9090"):
        RpcServer.parse("192.168.1.5")
    assert RpcServer.parse("pi.local:9090").address == "pi.local:9090"


def _tvm_processes() -> set[int]:
    import psutil

    found = set()
    for process in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "tvm.exec" in cmdline and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.add(process.pid)
    return found


def test_local_tracker_and_servers_leave_no_process_behind(builds, tmp_path, run_cli):
    before = _tvm_processes()
    build = _copy(builds["x86"], tmp_path)
    with local_rpc("leak-check") as device:
        started = _tvm_processes() - before
        assert len(started) >= 2  # the tracker and the server, plus their helpers
        result = run_cli("deploy", build, "--tracker", device.tracker, "--key", device.key,
                         "--repeat", "2", "--number", "1")  # fmt: skip
        assert result.code == 0, result.err
    with local_server():
        pass
    assert not (_tvm_processes() - before)


def test_a_failure_on_the_board_mid_run_is_one_line_and_writes_nothing(
    builds, board, tmp_path, run_cli, monkeypatch
):
    import dataclasses

    from apprentice_hw.deploy import bundle as bundle_module

    build = _copy(builds["x86"], tmp_path)
    # Inputs the module cannot take reach the board (the bundle itself passed its checks).
    wrong = np.zeros((16, 1, 9, 9), np.float32)
    read_bundle = bundle_module.read_bundle

    def with_wrong_inputs(path):
        return dataclasses.replace(read_bundle(path), inputs=wrong)

    monkeypatch.setattr(bundle_module, "read_bundle", with_wrong_inputs)
    before = (build / "report.json").read_bytes()
    result = run_cli("deploy", build, "--tracker", board.tracker, "--key", board.key)
    assert result.code == 2
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "failed while running the verification images" in errors[0]
    assert (build / "report.json").read_bytes() == before


def test_a_tracker_with_no_free_board_times_out_with_one_line(builds, tmp_path, run_cli):
    build = _copy(builds["x86"], tmp_path)
    before = (build / "report.json").read_bytes()
    with local_rpc("busy-board") as device:
        held = device.connect()  # someone else is using the only board
        try:
            result = run_cli("deploy", build, "--tracker", device.tracker, "--key", device.key,
                             "--wait", "2")  # fmt: skip
        finally:
            del held
    assert result.code == 2
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no board with key 'busy-board'" in errors[0]
    assert "became free within 2 s" in errors[0]
    assert (build / "report.json").read_bytes() == before


def test_a_board_that_disappears_mid_run_is_one_line_and_writes_nothing(builds, tmp_path, run_cli):
    import threading

    build = _copy(builds["x86"], tmp_path)
    before = (build / "report.json").read_bytes()
    with local_server() as server:
        # Long enough timing (minutes) that the plug is pulled while it runs.
        unplug = threading.Timer(8.0, server.kill)
        unplug.start()
        try:
            result = run_cli("deploy", build, "--host", server.address, "--repeat", "100000",
                             "--number", "100")  # fmt: skip
        finally:
            unplug.cancel()
    assert result.code == 2, result.err
    errors = [line for line in result.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{server.address} failed while" in errors[0], result.err
    assert (build / "report.json").read_bytes() == before


def test_deploy_and_a_rebuild_never_write_the_same_build_at_once(builds, board, tmp_path,
                                                                 run_cli):  # fmt: skip
    from apprentice_hw.outputs import exclusive

    build = _copy(builds["x86"], tmp_path)
    before = {p.name: p.read_bytes() for p in build.iterdir() if p.is_file()}
    with exclusive(build):  # a 'build --force' of it (or another deploy) is running
        deploy = run_cli("deploy", build, "--tracker", board.tracker, "--key", board.key)
        rebuild = run_cli("build", "-t", "x86-host", "-r", TINY, "-o", build, "--force", "-q")
    for result in (deploy, rebuild):
        assert result.code == 2 and "is writing" in result.err, result.err
    assert {p.name: p.read_bytes() for p in build.iterdir() if p.is_file()} == before
