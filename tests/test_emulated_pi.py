"""An arm-a72 build on the emulated Raspberry Pi 4 (aarch64 Python + TVM runtime under qemu).

Slow, and it needs the emulated Pi set up once (root, qemu-user-static, debootstrap, the package
registries): run it with ``make test-pi``, which sets it up and then runs this file. Without the
emulated Pi these tests skip, unless ``APPRENTICE_HW_REQUIRE_PI=1`` (set by ``make test-pi``)
turns the skip into a failure.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from apprentice_hw.deploy.emulated_pi import EmulatedPi, default_dir

pytestmark = pytest.mark.slow

# Read at import, before the test session points the cache at a private folder.
PI = EmulatedPi(default_dir())
TINY = Path(__file__).parent / "data" / "tiny.toml"


@pytest.fixture(scope="module")
def pi() -> EmulatedPi:
    if not PI.ready:
        message = f"no emulated Pi in {PI.folder}; 'make test-pi' sets it up"
        if os.environ.get("APPRENTICE_HW_REQUIRE_PI") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return PI


@pytest.fixture(scope="module")
def arm_build(tmp_path_factory) -> Path:
    import apprentice_hw

    out = tmp_path_factory.mktemp("pi") / "arm-a72"
    return apprentice_hw.build("arm-a72", TINY, bits=4, out=out).out


def test_bundle_runner_works_on_the_emulated_pi_with_only_the_bundle(pi, arm_build, tmp_path):
    bundle = tmp_path / "copied-to-the-pi"
    shutil.copytree(arm_build / "bundle", bundle)
    checked = pi.run(str(bundle / "run.py"), "--verify", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "16 verification images: outputs identical to the host build's" in checked.stdout
    images = np.load(bundle / "verify_inputs.npy")[:4]
    np.save(tmp_path / "images.npy", images)
    classified = pi.run(str(bundle / "run.py"), "images.npy", "--out", "logits.npy", cwd=tmp_path)
    assert classified.returncode == 0, classified.stderr
    expected = np.load(bundle / "verify_outputs.npy")[:4]
    assert np.array_equal(np.load(tmp_path / "logits.npy"), expected)
    # The emulated interpreter has the TVM runtime and numpy, and not apprentice-hw or torch.
    probe = pi.run("-c", "import importlib.util as u; print([u.find_spec(m) is None for m in "
                   "('apprentice_hw', 'torch', 'onnx')])", cwd=tmp_path)  # fmt: skip
    assert probe.stdout.strip() == "[True, True, True]", probe.stderr


def test_deploy_to_the_emulated_pi_gets_outputs_identical_to_the_host_build(pi, arm_build, run_cli):
    with pi.serve("emulated-pi-test") as board:
        result = run_cli("deploy", arm_build, "--tracker", board.tracker, "--key", board.key,
                         "--repeat", "3", "--number", "2")  # fmt: skip
    assert result.code == 0, result.err
    deploy = json.loads((arm_build / "report.json").read_text())["deploy"]
    assert deploy["identical"] and deploy["max_diff_steps"] == 0.0 and deploy["samples"] == 16
    assert deploy["latency_median_ms"] > 0
