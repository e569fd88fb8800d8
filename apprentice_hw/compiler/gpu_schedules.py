"""GPU schedules for the integer conv kernels: dp4a, weights unpacked in registers, one launch.

TVM's CUDA pipeline schedules every function with DLight. DLight's matmul rule takes the
blocked integer conv (``kernels.conv2d_int_blocked``) as a generic GEMM: shared-memory tiles
and scalar ``int32`` multiply-adds, one per weight. This module adds one pass before DLight
that schedules the conv kernels itself (DLight leaves functions marked scheduled alone):

* one CUDA kernel per conv layer: the activation padding, the weight decoding and the fused
  epilogue (requantization, residual add, ReLU, the next quantize) run inside it, so no
  workspace is written to GPU memory between them;
* each thread owns one output channel of a few output pixels (``ConvTile``); for every
  (input-channel block, ky, kx) it decodes its four weights from their stored form (int8, or 2
  or 4 bits packed per byte) straight into a register, then gathers four activation codes per
  pixel and adds their dot product with one ``dp4a`` (uint8 x int8 -> int32, sm_61 and newer);
* the threads of a warp take neighbouring pixel groups of one output channel, so they read
  neighbouring activation bytes and the same weight bytes (a broadcast from the cache).

No shared memory and no barriers: the layers of an edge network are small, and the caches
serve the reuse. This is a first schedule, not a tuned one: it was compiled and checked (PTX,
register use, and the generated CUDA C executed on the host, ``tests/test_cuda_kernels.py``)
but, with no GPU lent to the project so far, never timed on one. Functions it does not take
(dense, pooling, elementwise) stay with DLight. Convs whose output channel count is not a
multiple of 16 get one thread per pixel group for all 16 channels of a block
(``ConvTile.lanes`` = 1; see ``_check_thread_writes_its_outputs``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from apprentice_hw.lowering.kernels import VNNI_LANES as LANES  # output channels per block

LOG = logging.getLogger(__name__)
PIXELS_PER_THREAD = 4  # output pixels of one row a thread accumulates (registers)
MAX_THREADS = 256  # threads per CUDA block
MIN_THREADS = 64  # below this, rows join the block too
DP4A_MIN_ARCH = 61  # dp4a arrived with compute capability 6.1 (Pascal)


@dataclass(frozen=True)
class ConvTile:
    """How one conv kernel's outputs are split over a CUDA grid.

    A thread computes ``pixels`` adjacent outputs in one row, of one channel (``lanes`` = 16:
    the 16 channels of an output block go to 16 threads) or of all 16 channels of the block
    (``lanes`` = 1); a CUDA block holds ``lanes`` x ``columns`` x ``rows`` threads. (Pixels
    ``columns`` apart would make a warp's loads contiguous, but the fused epilogue's region is
    then the span between them: TVM computes and stores every pixel in it, those of the other
    threads included - the host run of the kernel caught that.)
    """

    pixels: int
    columns: int
    rows: int
    lanes: int = LANES

    @property
    def threads(self) -> int:
        return self.lanes * self.columns * self.rows


def _divisors(value: int) -> list[int]:
    return [d for d in range(1, value + 1) if value % d == 0]


def conv_tile(out_rows: int, out_columns: int, lanes: int = LANES) -> ConvTile:
    """The tile for an output of ``out_rows`` x ``out_columns`` pixels per channel."""
    pixels = max(d for d in _divisors(out_columns) if d <= PIXELS_PER_THREAD)
    groups = out_columns // pixels
    columns = max(d for d in _divisors(groups) if lanes * d <= MAX_THREADS)
    rows = 1
    for candidate in _divisors(out_rows):
        if lanes * columns * candidate > MAX_THREADS:
            break
        rows = candidate
        if lanes * columns * rows >= MIN_THREADS:
            break
    return ConvTile(pixels, columns, rows, lanes)


def schedule_conv(sch, use_dp4a: bool = True, lanes_per_thread: bool = False) -> ConvTile:
    """Schedule a blocked integer conv function for CUDA in place; returns the tile used.

    ``lanes_per_thread``: each thread computes all 16 channels of its output block (for output
    channel counts that are not a multiple of 16, where one channel per thread leaves TVM unable
    to confine the fused epilogue: ``_check_thread_writes_its_outputs``). Without ``dp4a`` (GPUs
    older than sm_61: the Jetson Nano) the four products are unrolled into scalar multiply-adds;
    the rest of the schedule is the same.
    """
    from apprentice_hw.compiler.intrinsics import register_dp4a
    from apprentice_hw.compiler.schedules import inline_around, loop_extent

    outputs = inline_around(sch, "pad_blocked", "conv2d_int")
    conv = sch.get_sblock("conv_blocked")
    n, ob, i, j, oi, rc, ry, rx, ri = sch.get_loops(conv)
    lanes = 1 if lanes_per_thread else LANES
    tile = conv_tile(loop_extent(sch, i), loop_extent(sch, j), lanes)
    io, im = sch.split(i, factors=[None, tile.rows])
    jo, jm, ji = sch.split(j, factors=[None, tile.columns, tile.pixels])
    if lanes_per_thread:
        sch.reorder(n, ob, io, jo, im, jm, rc, ry, rx, ji, oi, ri)
        thread = sch.fuse(im, jm)
    else:
        sch.reorder(n, ob, io, jo, oi, im, jm, rc, ry, rx, ji, ri)
        thread = sch.fuse(oi, im, jm)
    sch.bind(sch.fuse(n, ob, io, jo), "blockIdx.x")
    sch.bind(thread, "threadIdx.x")
    accumulators = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(accumulators, thread)
    # The thread's weights for this (channel block, ky, kx), decoded into registers.
    decode = sch.get_sblock("weight_blocked")
    sch.compute_at(decode, rx)
    sch.set_scope(decode, 0, "local")
    sch.unroll(sch.get_loops(decode)[-1])
    # Four activation codes per pixel (zero point where the window leaves the image).
    pad = sch.get_sblock("pad_blocked")
    sch.compute_at(pad, ji)
    sch.set_scope(pad, 0, "local")
    sch.unroll(sch.get_loops(pad)[-1])
    sch.decompose_reduction(conv, rc)
    if use_dp4a:
        sch.tensorize(ri, register_dp4a())
    else:
        sch.unroll(ri)
    sch.unroll(ji)
    if lanes_per_thread:
        sch.unroll(oi)
    for output in outputs:
        sch.reverse_compute_at(output, thread)
        _check_thread_writes_its_outputs(sch, output, tile)
    sch.compute_inline(accumulators)
    return tile


class InexactEpilogueError(Exception):
    """TVM could not confine a thread's fused epilogue to the outputs the thread computed."""


def _check_thread_writes_its_outputs(sch, output, tile: ConvTile) -> None:
    """Refuse the schedule unless each thread's epilogue stays within its own outputs.

    ``reverse_compute_at`` derives the epilogue's loops from the index map between the NCHW
    output and the blocked accumulators. Where TVM cannot invert it exactly (with one channel
    per thread and an output channel count that is not a multiple of 16, ``o // 16, o % 16``)
    it falls back to the whole range: every thread would compute and store the other threads'
    channels from accumulators it never filled. Found by the host runs of the kernels.
    """
    from apprentice_hw.compiler.schedules import loop_extent

    # The loops below blockIdx.x and threadIdx.x: channels (when the thread has 16), then the
    # row's pixels (innermost); TVM drops loops of extent 1.
    extents = [loop_extent(sch, loop) for loop in sch.get_loops(output)[2:]]
    if None in extents:
        raise InexactEpilogueError("a thread's epilogue has a loop of unknown extent")
    pixels = extents.pop() if tile.pixels > 1 and extents else 1
    channels = 1
    for extent in extents:
        channels *= extent
    own = LANES // tile.lanes  # channels per thread
    # A last, partial block of channels has fewer than 16: fewer, never more, is right.
    fits = channels == own or (tile.lanes == 1 and channels < own)
    if pixels != tile.pixels or not fits:
        raise InexactEpilogueError(
            f"a thread's epilogue covers {channels} channels x {pixels} pixels, "
            f"not {own} x {tile.pixels}"
        )


PER_OUTPUT_THREADS = 128  # output elements per thread block of the per-output kernels
# Integer kernels computed one output per thread: (block, stage inlined into it or None)
PER_OUTPUT_KERNELS = (("conv2d_grouped", "pad_grouped"), ("dense_int_packed", None),
                      ("window_sums", None))  # fmt: skip


def per_output_kernel(sch) -> tuple[str, str | None] | None:
    """The (block, inlined stage) of ``PER_OUTPUT_KERNELS`` the function holds, or None."""
    from apprentice_hw.compiler.schedules import block_names

    names = block_names(sch)
    return next((kernel for kernel in PER_OUTPUT_KERNELS if kernel[0] in names), None)


def schedule_per_output(sch, block: str, inlined: str | None) -> None:
    """One thread per output element of a grouped or depthwise conv, a dense layer with packed
    weights or the window sums of 9-bit weights (``kernels.window_sums``), the epilogue with it.

    DLight's reduction rule takes the int32 sum for a cross-thread reduction and fails on
    these ("No matched reducer": the packed weights' shift and mask in the sum); a depthwise
    conv sums only KH x KW products per output, a classifier a few thousand, so each thread
    computes its own sum and requantizes it.
    """
    if inlined is not None:
        sch.compute_inline(sch.get_sblock(inlined))
    kernel = sch.get_sblock(block)
    variables = sch.get(kernel).iter_vars
    spatial = [loop for loop, var in zip(sch.get_loops(kernel), variables, strict=False)
               if int(var.iter_type) == 0]  # fmt: skip
    blocks, threads = sch.split(sch.fuse(*spatial), factors=[None, PER_OUTPUT_THREADS])
    sch.bind(blocks, "blockIdx.x")
    sch.bind(threads, "threadIdx.x")
    stage, consumers = kernel, sch.get_consumers(kernel)
    while consumers:
        [consumer] = consumers  # an elementwise chain, as TVM fuses it
        sch.set_scope(stage, 0, "local")  # each thread's own value: a register
        sch.reverse_compute_at(consumer, threads)
        stage, consumers = consumer, sch.get_consumers(consumer)


def has_dp4a(target) -> bool:
    """Whether the CUDA target's GPU has ``dp4a`` (compute capability 6.1 and newer)."""
    match = re.match(r"sm_(\d+)", str(target.attrs.get("arch", "")))  # sm_87, sm_90a
    return match is not None and int(match.group(1)) >= DP4A_MIN_ARCH


def schedule_function(func, target):
    """``func`` scheduled for CUDA when it is a blocked integer conv, a grouped conv or a dense
    layer (``schedule_per_output``); otherwise ``None``.

    ``None`` leaves the function to DLight, also when the schedule fails (logged): the
    DLight schedule is correct, only slower.
    """
    from tvm import s_tir

    from apprentice_hw.compiler.schedules import is_blocked_conv

    kernel = per_output_kernel(s_tir.Schedule(func))
    if kernel is not None:
        sch = s_tir.Schedule(func)
        try:
            schedule_per_output(sch, *kernel)
        except Exception as exc:  # any schedule error: left to DLight
            LOG.info("GPU %s schedule did not apply (%s); left to DLight", kernel[0], exc)
            return None
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    if not is_blocked_conv(s_tir.Schedule(func)):
        return None
    for lanes_per_thread in (False, True):  # one channel per thread where TVM allows it
        sch = s_tir.Schedule(func)
        try:
            schedule_conv(sch, use_dp4a=has_dp4a(target), lanes_per_thread=lanes_per_thread)
        except InexactEpilogueError as exc:
            LOG.info("one channel per thread: %s; trying 16 channels per thread", exc)
            continue
        except Exception as exc:  # any schedule error: DLight's schedule is correct
            LOG.info("GPU conv schedule did not apply (%s); left to DLight", exc)
            return None
        return sch.mod["main"].with_attr("tirx.is_scheduled", True)
    return None


def schedule_pass(target):
    """A module pass that schedules the integer conv and dense functions for CUDA."""
    from apprentice_hw.compiler.schedules import scheduling_pass

    return scheduling_pass(
        "ApprenticeCUDAConvSchedule", lambda func: schedule_function(func, target)
    )


# The build's CUDA pipeline, in the four stages of a TVM backend pipeline module (memory.py
# runs the first stages alone): TVM's CUDA passes with ``schedule_pass`` before DLight.


def library_dispatch_passes(target) -> list:
    from tvm.relax.backend.cuda import pipeline as cuda

    return cuda.library_dispatch_passes(target)


def legalize_passes(target) -> list:
    from tvm.relax.backend.cuda import pipeline as cuda

    passes = cuda.legalize_passes(target)
    dlight = [p.info.name for p in passes].index("ApplyDefaultSchedule")  # fails loudly if renamed
    return [*passes[:dlight], schedule_pass(target), *passes[dlight:]]


def dataflow_lower_passes(target) -> list:
    from tvm.relax.backend.cuda import pipeline as cuda

    return cuda.dataflow_lower_passes(target)


def finalize_passes(target) -> list:
    from tvm.relax.backend.cuda import pipeline as cuda

    return cuda.finalize_passes(target)


def cuda_pipeline(target):
    """The Relax pipeline a CUDA build compiles with (``tvm.compile(relax_pipeline=...)``)."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="ApprenticeCUDAPipeline")
    def _pipeline(mod, _ctx):
        with target:
            passes = (
                library_dispatch_passes(target)
                + legalize_passes(target)
                + dataflow_lower_passes(target)
                + finalize_passes(target)
            )
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
