"""Run the CUDA C that TVM generates for one kernel on this CPU, thread after thread.

No GPU is lent to the project's CI, so the arithmetic of the CUDA kernels (index math, the
packed-weight decoding, ``dp4a``, the fused epilogue) is checked by compiling TVM's CUDA
source for the host with a small header that supplies CUDA's built-ins (``threadIdx``,
``blockIdx``, ``__dp4a``) and calling the kernel once per (block, thread), in order. That is
faithful only for kernels whose threads do not talk to each other, so kernels with shared
memory, barriers or warp shuffles are refused. It checks the source, not nvcc's code
generation or the hardware: running on a GPU stays the final check.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SHIM = r"""
#include <algorithm>
#include <cmath>
#include <cstdint>
using std::max;
using std::min;
struct HostDim3 { unsigned int x = 0, y = 0, z = 0; };
static HostDim3 threadIdx, blockIdx, blockDim, gridDim;
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
/* dp4a.u32.s32: four unsigned bytes of a times four signed bytes of b, plus c. */
static inline int __dp4a(unsigned int a, int b, int c) {
  for (int k = 0; k < 4; ++k)
    c += (int)((a >> (8 * k)) & 0xFFu) * (int)(int8_t)((unsigned int)b >> (8 * k));
  return c;
}
"""
COOPERATIVE = ("__shared__", "__syncthreads", "__shfl", "atomic")
BINDING = re.compile(r'T\.thread_binding\((?:T\.int64\()?(\d+)\)?, thread="(\w+\.\w+)"\)')
KERNEL = re.compile(r'extern "C" __global__ void __launch_bounds__\(\d+\) (\w+)\(([^)]*)\) \{')


@dataclass(frozen=True)
class Launch:
    """The grid of one kernel: blocks and threads along x (the schedules bind only x)."""

    blocks: int
    threads: int


def launch_of(func) -> Launch:
    """Blocks and threads of a scheduled single-kernel PrimFunc, from its thread bindings."""
    extents = {
        tag: int(extent) for extent, tag in BINDING.findall(func.script())
    }  # TVMScript prints each binding as T.thread_binding(T.int64(N), thread="tag")
    if set(extents) != {"blockIdx.x", "threadIdx.x"}:
        raise ValueError(f"expected blockIdx.x and threadIdx.x bindings only, got {extents}")
    return Launch(extents["blockIdx.x"], extents["threadIdx.x"])


def kernel_parameters(source: str) -> tuple[str, list[tuple[str, str]]]:
    """The kernel's name and its parameters as (C type, name), in the kernel's order.

    TVM orders a kernel's parameters its own way (not as the PrimFunc's), so arguments are
    matched by name: a parameter is the buffer's name with ``_ptr`` appended.
    """
    kernels = KERNEL.findall(source)
    if len(kernels) != 1:
        raise ValueError(f"expected one kernel, found {len(kernels)}")
    name, params = kernels[0]
    parameters = []
    for param in params.split(","):
        ctype, _, pname = param.strip().rpartition(" ")
        parameters.append((ctype.replace("__restrict__", "").strip(), pname))
    return name, parameters


def host_program(source: str) -> str:
    """C++ for the host: the shim, TVM's source, and a ``main`` that runs the kernel.

    ``program BLOCKS THREADS FILE...``: one file per kernel parameter, in the kernel's order,
    holding its bytes; the kernel runs over them and every file is written back.
    """
    name, parameters = kernel_parameters(source)
    body = source[source.rindex(f"{name}(") :]
    used = [word for word in COOPERATIVE if word in body]
    if used:
        raise ValueError(f"threads of this kernel cooperate ({', '.join(used)}): not emulated")
    types = [ctype for ctype, _ in parameters]
    arguments = ", ".join(f"({t})args[{k}]" for k, t in enumerate(types))
    runner = f"""
#include <cstdio>
#include <cstdlib>
#include <vector>
int main(int argc, char** argv) {{
  const int count = {len(types)};
  if (argc != 3 + count) {{
    std::fprintf(stderr, "usage: BLOCKS THREADS FILE x %d\\n", count);
    return 2;
  }}
  std::vector<void*> args(count);
  std::vector<long> sizes(count);
  for (int k = 0; k < count; ++k) {{
    FILE* f = std::fopen(argv[3 + k], "rb");
    std::fseek(f, 0, SEEK_END); sizes[k] = std::ftell(f); std::fseek(f, 0, SEEK_SET);
    args[k] = std::malloc(sizes[k]);  /* exactly the tensor: the sanitizer sees overruns */
    if (std::fread(args[k], 1, sizes[k], f) != (size_t)sizes[k]) return 3;
    std::fclose(f);
  }}
  gridDim.x = std::atoi(argv[1]); blockDim.x = std::atoi(argv[2]);
  for (unsigned int b = 0; b < gridDim.x; ++b)
    for (unsigned int t = 0; t < blockDim.x; ++t) {{
      blockIdx.x = b; threadIdx.x = t;
      {name}({arguments});
    }}
  for (int k = 0; k < count; ++k) {{
    FILE* f = std::fopen(argv[3 + k], "wb");
    std::fwrite(args[k], 1, sizes[k], f);
    std::fclose(f);
    std::free(args[k]);
  }}
  return 0;
}}
"""
    return SHIM + source.replace("#include <cuda.h>", "") + runner


def run_on_host(source: str, launch: Launch, buffers: dict[str, np.ndarray], workdir: Path) -> None:
    """Compile ``source`` for the host and run its kernel over ``buffers`` (changed in place).

    ``buffers`` maps the PrimFunc's buffer names to arrays; the kernel may take fewer (TVM
    drops buffers a kernel does not touch), never others.

    The program runs in its own process under AddressSanitizer: a kernel that reads or writes
    outside a tensor fails here, where on a GPU it could pass silently.
    """
    cpp, program = workdir / "kernel_host.cpp", workdir / "kernel_host"
    cpp.write_text(host_program(source))
    # No FMA contraction and no type-based aliasing assumptions: the kernels reinterpret
    # byte arrays as 32-bit words, as CUDA allows.
    subprocess.run(["g++", "-O1", "-std=c++17", "-ffp-contract=off", "-fno-strict-aliasing",
                    "-fsanitize=address", "-w", "-o", str(program), str(cpp)],
                   check=True, capture_output=True, text=True)  # fmt: skip
    _, parameters = kernel_parameters(source)
    unknown = [p for _, p in parameters if p.removesuffix("_ptr") not in buffers]
    if unknown:
        raise ValueError(f"kernel parameters without a buffer: {unknown}")
    arrays = [buffers[p.removesuffix("_ptr")] for _, p in parameters]
    files = []
    for k, array in enumerate(arrays):
        files.append(workdir / f"arg{k}.bin")
        files[-1].write_bytes(np.ascontiguousarray(array).tobytes())
    command = [str(program), str(launch.blocks), str(launch.threads), *map(str, files)]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"the kernel failed on the host: {completed.stderr[-3000:]}")
    for array, file in zip(arrays, files, strict=True):
        array[...] = np.frombuffer(file.read_bytes(), dtype=array.dtype).reshape(array.shape)
