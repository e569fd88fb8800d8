#!/usr/bin/env bash
# Prepare .device/ for a GPU machine that has Python 3.12, numpy and onnxruntime but no
# registry: the GPU benchmark's cases (benchmarks/gpu_latency.py --prepare) and a runtime-only
# TVM (the apache-tvm wheel without its 260 MB compiler library, plus apache-tvm-ffi) unpacked
# into .device/site. About 25 MB in all. Then, on the GPU machine, from the repository root:
#
#   PYTHONPATH=$PWD/.device/site python3 benchmarks/gpu_latency.py --time .device/gpu
#
# and bring .device/gpu/gpu_latency.json back for `gpu_latency.py --report`.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGET=${1:-h100}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
TVM_VERSION=$(.venv/bin/python -c 'from importlib import metadata; print(metadata.version("apache-tvm"))')
FFI_VERSION=$(.venv/bin/python -c 'from importlib import metadata; print(metadata.version("apache-tvm-ffi"))')
rm -rf .device/gpu .device/site .device/wheels
mkdir -p .device/wheels .device/site
.venv/bin/python benchmarks/gpu_latency.py --prepare .device/gpu --target "$TARGET"
.venv/bin/pip download --quiet --no-deps --only-binary=:all: --python-version "$PYTHON_VERSION" \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 -d .device/wheels \
  "apache-tvm==$TVM_VERSION" "apache-tvm-ffi==$FFI_VERSION"
for wheel in .device/wheels/*.whl; do
  # Wheels are zip files; the runtime needs no install step. Leave out the compiler library
  # and the CUTLASS headers (TVM then imports in runtime-only mode).
  .venv/bin/python -m zipfile -e "$wheel" .device/site
done
rm -rf .device/site/tvm/lib/libtvm_compiler.so .device/site/tvm/3rdparty .device/wheels
du -sh .device
