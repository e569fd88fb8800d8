"""The deploy bundle: what a user copies to the board.

``bundle/`` in every build holds the cross-linked module (weights are constants inside it,
packed at their trained precision), ``run.py`` (numpy + the TVM runtime only), a manifest with
the input/output contract, verification images with the host build's outputs for them, and a
README. The bundle is written inside the build's staging directory, so it appears complete or
not at all.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from apprentice_hw.artifacts import BUNDLE_DIR
from apprentice_hw.atomic import write_json, write_text
from apprentice_hw.errors import UserError
from apprentice_hw.report.layers import constant_values

BUNDLE_MANIFEST = "manifest.json"
BUNDLE_MODULE = "model.so"
RUNNER_FILE = "run.py"
VERIFY_INPUTS = "verify_inputs.npy"
VERIFY_OUTPUTS = "verify_outputs.npy"
VERIFY_COUNT = 16  # enough to cover every class of digits; small enough to upload in a blink
BUNDLE_FORMAT = "apprentice-hw-bundle/1"
PREPROCESSING = (
    "float32 NCHW pixels divided by the format's maximum value (255 for 8-bit images, 16 for "
    "scikit-learn digits); no mean/std normalization"
)
SOURCE_PREPROCESSING = "float32 NCHW, prepared as the source model expects (compile)"
# what the output holds: a build's classifier, or a compiled model's own output
OUTPUT_MEANING = {False: "class logits (argmax is the prediction)", True: "the model's output"}


def _quantization(model: onnx.ModelProto, node: onnx.NodeProto) -> dict[str, Any]:
    constants = constant_values(model)
    scale = constants.get(node.input[1])
    zero = constants.get(node.input[2]) if len(node.input) > 2 else None
    return {
        "scale": float(scale.reshape(-1)[0]) if scale is not None else None,
        "zero_point": int(zero.reshape(-1)[0]) if zero is not None else 0,
        "dtype": str(zero.dtype) if zero is not None else "uint8",
    }


def input_quantization(model: onnx.ModelProto) -> dict[str, Any] | None:
    """How the model's first quantizer turns input pixels into integer codes (None if it has none).

    A board that receives already-quantized codes (a camera pipeline, say) needs this to feed
    the same codes the module would compute.
    """
    name = model.graph.input[0].name
    node = next((n for n in model.graph.node if n.input and n.input[0] == name), None)
    if node is None or node.op_type != "QuantizeLinear":
        return None
    return _quantization(model, node)


def output_quantization(model: onnx.ModelProto) -> dict[str, Any]:
    """The output's quantizer: logits are ``scale * (code - zero_point)``."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers[model.graph.output[0].name]
    return _quantization(model, node)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_bundle(
    folder: Path,
    module_path: Path,
    model: onnx.ModelProto,
    target_info: dict[str, Any],
    model_info: dict[str, Any],
    inputs: np.ndarray,
    outputs: np.ndarray,
    produced_by: str,
    tolerance_steps: float = 0.0,
    threads: int | None = None,
) -> dict[str, Any]:
    """Write ``folder`` (the bundle) and return its manifest; ``threads``, where the build
    measured which count runs the module fastest, is what ``run.py`` uses by default.

    ``outputs`` are the host build's outputs for ``inputs``; the board must reproduce them
    exactly (integer kernels, float64 requantization on both).
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(module_path, folder / BUNDLE_MODULE)
    shutil.copyfile(Path(__file__).with_name(RUNNER_FILE), folder / RUNNER_FILE)
    np.save(folder / VERIFY_INPUTS, np.ascontiguousarray(inputs, np.float32))
    np.save(folder / VERIFY_OUTPUTS, np.ascontiguousarray(outputs))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    output = output_quantization(model)
    manifest = {
        "format": BUNDLE_FORMAT,
        "model": model_info,
        "target": target_info,
        "module": {
            "file": BUNDLE_MODULE,
            "sha256": _sha256(folder / BUNDLE_MODULE),
            "bytes": (folder / BUNDLE_MODULE).stat().st_size,
            "entry": "main",
            "runtime": "TVM Relax virtual machine (tvm.runtime.vm.VirtualMachine)",
            "tvm_version": metadata.version("apache-tvm"),
            "weights": "constants inside the module, stored at their trained precision",
            **({"threads": threads} if threads else {}),
        },
        "input": {
            "name": model.graph.input[0].name,
            "shape": [1, *(d.dim_value for d in dims[1:])],
            "dtype": "float32",
            "layout": "NCHW",
            "preprocessing": SOURCE_PREPROCESSING if "source" in model_info else PREPROCESSING,
            "quantization": input_quantization(model),
        },
        "output": {
            "shape": [1, int(outputs.shape[1])],
            "dtype": str(outputs.dtype),
            "meaning": OUTPUT_MEANING["source" in model_info],
            "quant_step": output["scale"],
            "quantization": output,
        },
        "verification": {
            "inputs": VERIFY_INPUTS,
            "outputs": VERIFY_OUTPUTS,
            "count": len(inputs),
            "produced_by": produced_by,
            "tolerance_steps": tolerance_steps,
        },
    }
    write_json(folder / BUNDLE_MANIFEST, manifest)
    write_text(folder / "README.md", board_readme(manifest))
    return manifest


def board_readme(manifest: dict[str, Any]) -> str:
    """Instructions for the person at the board."""
    target, model = manifest["target"], manifest["model"]
    shape = "x".join(str(d) for d in manifest["input"]["shape"][1:])
    if "source" in model:  # compile: a user's quantized ONNX model
        title = f"{model['source']} for {target['name']}"
        origin = f"Compiled by apprentice-hw from the {model['format']} model `{model['source']}`."
    else:
        title = (
            f"{model['student']} W{model['weight_bits']}A{model['act_bits']} for " + target["name"]
        )
        origin = f"Trained on {model['dataset']} by apprentice-hw (recipe `{model['recipe']}`)."
    return f"""# {title}

{target["description"]}. {origin}

## On the board

1. Copy this whole folder to the board, e.g. `scp -r bundle pi@raspberrypi.local:model`.
2. Install the TVM runtime and numpy (Python 3.9 or newer, {target["arch"]}):
   `pip install apache-tvm=={manifest["module"]["tvm_version"]} numpy`
3. Check the copy: `python3 run.py --verify` runs {manifest["verification"]["count"]} bundled
   images and must find the outputs identical to the host build's (within
   {manifest["verification"]["tolerance_steps"]:g} output steps; exit status 0).
4. Classify: `python3 run.py images.npy --top 3 [--out logits.npy]` where `images.npy` holds
   float32 images of shape {shape} (C,H,W), one image or a stack (N,C,H,W);
   {manifest["input"]["preprocessing"]}.
5. Time it: `python3 run.py --benchmark 30` (median of 30 runs of 10 calls).

`run.py` uses only numpy and the TVM runtime; the weights are inside `{manifest["module"]["file"]}`.

## Contract

- input `{manifest["input"]["name"]}`: float32 {manifest["input"]["layout"]}
  {manifest["input"]["shape"]}; first quantizer: {manifest["input"]["quantization"]}
- output: {manifest["output"]["dtype"]} {manifest["output"]["shape"]},
  {manifest["output"]["meaning"]}; one output step = {manifest["output"]["quant_step"]:g}
- module: `{manifest["module"]["file"]}` sha256 `{manifest["module"]["sha256"]}`, entry
  `{manifest["module"]["entry"]}`, batch {manifest["input"]["shape"][0]}

From the build machine, `apprentice-hw deploy BUILD_DIR --tracker HOST:PORT --key KEY` does the
same over TVM RPC and writes the board's latency into the build's report.
"""


@dataclass(frozen=True)
class Bundle:
    """A bundle read back from a build directory, checked against its manifest."""

    folder: Path
    manifest: dict[str, Any]
    inputs: np.ndarray  # the verification images
    outputs: np.ndarray  # the host build's outputs for them

    @property
    def module_path(self) -> Path:
        return self.folder / self.manifest["module"]["file"]


def read_bundle(build_dir: Path) -> Bundle:
    """The build's bundle, or a one-line UserError saying what is missing or damaged.

    Everything a deploy uses is checked here, before a board is contacted: the manifest's
    fields, the module's hash and the verification arrays' shapes and values.
    """
    from apprentice_hw.build_dir import read_manifest

    read_manifest(build_dir)
    folder = Path(build_dir) / BUNDLE_DIR
    path = folder / BUNDLE_MANIFEST
    rebuild = f"rebuild {build_dir} with 'apprentice-hw build --force'"
    if not path.exists():
        raise UserError(f"{build_dir} has no deploy bundle ({path} is missing); {rebuild}")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); {rebuild}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != BUNDLE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise UserError(f"{path} is format {found!r}, not {BUNDLE_FORMAT}; {rebuild}")
    try:
        module, check = manifest["module"], manifest["verification"]
        names = (module["file"], check["inputs"], check["outputs"], RUNNER_FILE)
        input_shape = [int(d) for d in manifest["input"]["shape"]]
        output_shape = [int(d) for d in manifest["output"]["shape"]]
        step = float(manifest["output"]["quant_step"])
        tolerance = float(check["tolerance_steps"])
        arch, sha256 = str(manifest["target"]["arch"]), str(module["sha256"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is damaged (bad or missing {exc}); {rebuild}") from exc
    if not (np.isfinite(step) and step > 0 and np.isfinite(tolerance) and tolerance >= 0 and arch):
        raise UserError(f"{path} is damaged (output step, tolerance or arch); {rebuild}")
    for name in names:
        if not isinstance(name, str) or not (folder / name).is_file():
            raise UserError(f"the bundle in {build_dir} lacks {name}; {rebuild}")
    if _sha256(folder / module["file"]) != sha256:
        raise UserError(
            f"{folder / module['file']} does not match its sha256 in the bundle manifest "
            f"(changed after the build); {rebuild}"
        )
    inputs = _array(folder / check["inputs"], (None, *input_shape[1:]), rebuild)
    outputs = _array(folder / check["outputs"], (len(inputs), *output_shape[1:]), rebuild)
    return Bundle(folder, manifest, inputs, outputs)


def _array(path: Path, shape: tuple[int | None, ...], rebuild: str) -> np.ndarray:
    """A verification array: readable without pickle, of ``shape`` (None: any), finite."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable .npy array ({exc}); {rebuild}") from exc
    fits = array.ndim == len(shape) and all(
        want is None or got == want for got, want in zip(array.shape, shape, strict=True)
    )
    if not fits or len(array) == 0 or not np.issubdtype(array.dtype, np.floating):
        raise UserError(
            f"{path} holds {array.dtype} {array.shape}, not float "
            f"({', '.join('N' if d is None else str(d) for d in shape)}) "
            f"as the bundle manifest says; {rebuild}"
        )
    if not np.all(np.isfinite(array)):
        raise UserError(f"{path} holds NaN or infinite values; {rebuild}")
    return array
