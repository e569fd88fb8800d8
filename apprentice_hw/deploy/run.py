#!/usr/bin/env python3
"""Run an apprentice-hw deploy bundle on the board it was built for.

This file is copied into every build's ``bundle/`` folder as ``run.py``. It needs nothing but
numpy and the TVM runtime (``pip install apache-tvm==<manifest's tvm_version>``) and the files
beside it; it never imports apprentice-hw, so the board does not need the training stack.
The runtime alone is enough: the wheel without ``tvm/lib/libtvm_compiler.so`` (about 19 MB
instead of 300) runs bundles, CPU and CUDA ones.

    python3 run.py --verify                 # the bundled images; outputs must equal the host's
    python3 run.py images.npy               # classify float32 images, (C,H,W) or (N,C,H,W)
    python3 run.py images.npy --top 3 --out logits.npy
    python3 run.py --benchmark 30           # median latency of 30 timed runs

Exit status: 0 success, 1 verification mismatch, 2 bad input (one ``error:`` line).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MANIFEST = "manifest.json"


class BundleError(Exception):
    """A problem with the bundle or the inputs that the user can fix."""


ARCH_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


def read_manifest(folder: Path = HERE) -> dict:
    """The bundle's manifest; the module's hash is checked so a damaged copy fails clearly."""
    path = folder / MANIFEST
    if not path.exists():
        raise BundleError(f"{path} is missing; copy the whole bundle folder to the board")
    try:
        manifest = json.loads(path.read_text())
        module = folder / manifest["module"]["file"]
        expected = manifest["module"]["sha256"]
        for key in ("input", "output", "verification", "target"):
            if not isinstance(manifest[key], dict):
                raise TypeError(key)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise BundleError(f"{path} is damaged ({exc}); copy the bundle folder again") from exc
    if not module.exists():
        raise BundleError(f"{module} is missing; copy the whole bundle folder to the board")
    digest = hashlib.sha256(module.read_bytes()).hexdigest()
    if digest != expected:
        raise BundleError(f"{module} does not match the manifest's sha256; copy it again")
    return manifest


def check_machine(manifest: dict) -> None:
    """A module for another CPU architecture cannot load: say so instead of a loader error."""
    built_for = manifest["target"].get("arch", "")
    here = platform.machine().lower()
    here = ARCH_ALIASES.get(here, here)
    if built_for and built_for != here:
        name = manifest["target"].get("name", built_for)
        raise BundleError(
            f"this bundle's module is built for {built_for} ({name}), this machine is {here}; "
            "run it on the target board, or build for this machine's target"
        )


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def load_inputs(path: Path, manifest: dict):
    """Images from a .npy file as float32 batches of the module's input shape."""
    import numpy as np

    try:
        images = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise BundleError(f"cannot read {path} as a .npy array ({exc or 'empty file'})") from exc
    if not isinstance(images, np.ndarray):  # an .npz archive
        raise BundleError(f"{path} is an .npz archive; pass one .npy array of images")
    shape = manifest["input"]["shape"]
    if images.ndim == len(shape) - 1:
        images = images[None]
    if tuple(images.shape[1:]) != tuple(shape[1:]):
        want = "x".join(str(d) for d in shape[1:])
        raise BundleError(
            f"{path} holds images of shape {images.shape}; the model takes {want} (C,H,W) "
            f"images, one per row of an (N,{','.join(str(d) for d in shape[1:])}) array"
        )
    if not np.issubdtype(images.dtype, np.number):
        raise BundleError(f"{path} holds {images.dtype} values; the model takes float32 pixels")
    images = images.astype(np.float32)
    if not np.all(np.isfinite(images)):
        raise BundleError(f"{path} contains NaN or infinite values")
    if len(images) == 0:
        raise BundleError(f"{path} holds no images (shape {images.shape}); pass at least one")
    return images


def load_cuda_runtime(tvm) -> None:
    """Make sure TVM's CUDA runtime library is loaded before a CUDA module is.

    A full TVM loads it when imported; a runtime-only TVM (no compiler library) skips the
    CUDA backend's Python registration, and with it the library that reads CUDA modules.
    """
    import ctypes

    from tvm import base

    if "tvm_runtime_cuda" in base._LOADED_LIBS:
        return
    runtime_dir = Path(base._LOADED_LIBS["tvm_runtime"]._name).resolve().parent
    library = runtime_dir / "libtvm_runtime_cuda.so"
    try:
        base._LOADED_LIBS["tvm_runtime_cuda"] = ctypes.CDLL(str(library), mode=ctypes.RTLD_LOCAL)
    except OSError as exc:
        raise BundleError(
            f"this bundle runs on an NVIDIA GPU, and TVM's CUDA runtime did not load ({exc}); "
            "install the CUDA driver and apache-tvm with its CUDA runtime library"
        ) from exc


class Model:
    """The compiled module on this machine (its CPU, or its GPU for CUDA bundles)."""

    def __init__(self, folder: Path, manifest: dict) -> None:
        try:
            import tvm
            import tvm.runtime
            from tvm.runtime.vm import VirtualMachine
        except ImportError as exc:
            version = manifest["module"].get("tvm_version", "")
            raise BundleError(
                f"the TVM runtime does not import here ({exc}); install it with 'pip install "
                f"apache-tvm{'==' + version if version else ''} numpy'"
            ) from exc

        self.tvm = tvm
        kind = manifest["target"].get("device", "cpu")
        if kind == "cuda":
            load_cuda_runtime(tvm)
        self.device = tvm.device(kind)
        if not self.device.exist:
            what = "an NVIDIA GPU" if kind == "cuda" else f"a {kind} device"
            raise BundleError(
                f"this bundle runs on {what} and TVM sees none here; run it on the target "
                f"({manifest['target'].get('name', kind)})"
            )
        try:
            library = tvm.runtime.load_module(str(folder / manifest["module"]["file"]))
            self.vm = VirtualMachine(library, self.device)
        except Exception as exc:  # TVM's loader errors are long C++ messages
            first = " ".join(str(exc).split())[:200]
            raise BundleError(
                f"TVM could not load {manifest['module']['file']} ({first}); check that "
                f"apache-tvm=={manifest['module'].get('tvm_version', '?')} is installed"
            ) from exc
        self.entry = manifest["module"]["entry"]
        self.batch = manifest["input"]["shape"][0]

    def __call__(self, images):
        import numpy as np

        outputs = []
        for start in range(0, len(images), self.batch):
            chunk = np.ascontiguousarray(images[start : start + self.batch])
            if len(chunk) < self.batch:  # the module has a fixed batch: pad the last one
                padding = np.zeros((self.batch - len(chunk), *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, padding])
            result = self.vm[self.entry](self.tvm.runtime.tensor(chunk, self.device)).numpy()
            outputs.append(result[: min(self.batch, len(images) - start)])
        return np.concatenate(outputs)

    def benchmark_ms(self, sample, repeats: int, number: int = 10) -> list[float]:
        """Per-call milliseconds of ``repeats`` timed runs (each the mean of ``number`` calls)."""
        timer = self.vm.time_evaluator(self.entry, self.device, number=number, repeat=repeats)
        tensor = self.tvm.runtime.tensor(sample, self.device)
        return [seconds * 1e3 for seconds in timer(tensor).results]


class Verification:
    """The bundled images and the host build's outputs for them, read before the module loads."""

    def __init__(self, folder: Path, manifest: dict) -> None:
        import numpy as np

        check = manifest["verification"]
        try:
            self.inputs = np.load(folder / check["inputs"], allow_pickle=False)
            self.expected = np.load(folder / check["outputs"], allow_pickle=False)
            self.tolerance = float(check["tolerance_steps"])
            self.step = float(manifest["output"]["quant_step"])
            self.produced_by = check["produced_by"]
        except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
            raise BundleError(
                f"the bundle's verification data is damaged ({exc}); copy it again"
            ) from exc
        if len(self.inputs) == 0 or len(self.inputs) != len(self.expected):
            raise BundleError("the bundle's verification data is damaged; copy it again")

    def run(self, model: Model) -> int:
        """Run the images; report how far the outputs are from the host build's."""
        import numpy as np

        outputs = model(self.inputs)
        max_steps = float(np.max(np.abs(outputs.astype(np.float64) - self.expected)) / self.step)
        identical = bool(np.array_equal(outputs, self.expected))
        agree = float(np.mean(outputs.argmax(1) == self.expected.argmax(1)))
        verdict = "identical" if identical else f"differ by up to {max_steps:g} output steps"
        print(
            f"{len(self.inputs)} verification images: outputs {verdict} to the host build's "
            f"({self.produced_by}); top-1 agreement {agree:.0%}"
        )
        return 0 if max_steps <= self.tolerance else 1


def classify(model: Model, paths: list[Path], batches: list, top: int, out: Path | None) -> None:
    """Print the top classes of every image in ``batches`` (read from ``paths``)."""
    import numpy as np

    outputs = [model(images) for images in batches]
    for path, logits in zip(paths, outputs, strict=True):
        for index, row in enumerate(logits):
            best = np.argsort(-row)[:top]
            ranked = ", ".join(f"class {c} ({row[c]:.3f})" for c in best)
            print(f"{path.name}[{index}]: {ranked}")
    if out is not None:
        tmp = out.with_name(f".{out.name}.tmp.npy")
        try:
            np.save(tmp, np.concatenate(outputs))
            os.replace(tmp, out)
        except OSError as exc:
            raise BundleError(f"cannot write {out} ({exc.strerror or exc})") from exc
        print(f"logits written to {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, help=".npy files of float32 images")
    parser.add_argument("--verify", action="store_true", help="check the bundled images")
    parser.add_argument("--benchmark", type=int, metavar="N", help="time N runs on a bundled image")
    parser.add_argument("--top", type=int, default=1, help="classes to print per image")
    parser.add_argument("--out", type=Path, help="write all logits to this .npy file")
    parser.add_argument("--threads", type=int,
                        help="TVM worker threads (default: what the build measured fastest, "
                             "else all cores)")  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.inputs or args.verify or args.benchmark):
        parser.error("give .npy inputs, --verify or --benchmark N")
    # Read when TVM's thread pool starts. TVM's own default halves the core count on some CPUs
    # (it assumes two hardware threads per core); one worker per usable core is what the
    # build's latency measurement uses too. More workers than cores only spin against each
    # other (thousands of them never finish starting).
    cores = usable_cores()
    if args.threads is not None and not 1 <= args.threads <= cores:
        print(f"error: --threads must be from 1 to {cores} (this machine's cores)", file=sys.stderr)
        return 2
    if args.out is not None and not args.out.parent.is_dir():
        print(f"error: --out {args.out}: the folder {args.out.parent} does not exist",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        manifest = read_manifest()
        built = manifest["module"].get("threads")
        if args.threads is not None:
            os.environ["TVM_NUM_THREADS"] = str(args.threads)
        elif built and "TVM_NUM_THREADS" not in os.environ:  # the build's choice, if it fits
            os.environ["TVM_NUM_THREADS"] = str(min(int(built), cores))
        else:
            os.environ.setdefault("TVM_NUM_THREADS", str(cores))
        check_machine(manifest)
        if args.top < 1 or (args.benchmark is not None and args.benchmark < 1):
            raise BundleError("--top and --benchmark must be at least 1")
        # Every input is read and checked before the module loads (seconds on a board).
        check = Verification(HERE, manifest) if args.verify else None
        batches = [load_inputs(path, manifest) for path in args.inputs]
        model = Model(HERE, manifest)
        status = check.run(model) if check is not None else 0
        if args.inputs:
            classify(model, args.inputs, batches, args.top, args.out)
        if args.benchmark:
            import numpy as np

            batch = manifest["input"]["shape"][0]
            sample = np.load(HERE / manifest["verification"]["inputs"])[:batch]
            times = model.benchmark_ms(sample, args.benchmark)
            print(
                f"latency median {statistics.median(times):.3f} ms (min {min(times):.3f}, "
                f"max {max(times):.3f}; {len(times)} runs of 10 calls, batch "
                f"{manifest['input']['shape'][0]})"
            )
        return status
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
