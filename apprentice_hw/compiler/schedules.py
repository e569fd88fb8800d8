"""Default CPU schedules: vectorized, multi-threaded loops without tuning.

TVM's CPU pipeline leaves every TIR function as the naive loop nest the operator defined:
single-threaded, scalar. This module adds one pass to that pipeline, after operator fusion,
that schedules each function by what it contains (a registry of rules, first match wins):

* ``blocked_conv``: the integer conv2d of ``kernels.conv2d_int_blocked`` with whatever TVM
  fused after it (requantization, residual add, ReLU, the next quantize). Output-channel blocks
  of 16 and a few output pixels are the register tile (a local accumulator); the 16 x 4 inner
  product is tensorized as one VNNI ``vpdpbusd`` where the target has it; on AVX2 without
  VNNI, as two ``vpmaddubsw`` adding into int16 partial sums where the lowering proved they
  fit (low-bit layers, ``lowering/int16_sums.py``; widened to int32 once per chunk of input
  blocks), else as four ``vpmaddwd`` on int16 pairs (the weights stored in pair order for
  it); on NEON as ``sdot`` (``+dotprod``), else ``smlal`` or 16-bit ``mla`` int16 sums where
  proven and ``smull`` + ``sadalp`` into int32 lanes elsewhere; unrolled on other CPUs; rows
  of the output are spread over threads; the fused epilogue runs on each finished tile from
  the accumulators.
  The tile's size and the prologue's threading are ``ConvKnobs``: a heuristic picks them
  untuned, ``apprentice-hw tune`` measures the alternatives (``compiler/tuning.py``).
* ``bitserial_conv``: ``kernels.conv2d_bitserial``: a tile of pixels x 8-channel blocks of
  16-bit popcount sums in registers (NEON: ``and`` + ``cnt`` + ``uadalp``), the activation's
  bit planes gathered per row, the fused epilogue per tile.
* ``elementwise``: every function of spatial blocks only (quantize, dequantize, adds, casts):
  inlined into one loop, split into threads and vector lanes.
* ``spatial_outer``: anything else with a reduction (dense, pooling, mean): its outer spatial
  loops run in parallel.

A function whose rule fails to apply is compiled as it is (correct, slow) and logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

from apprentice_hw.lowering.requantize import HIGH_HALF_STAGE
from apprentice_hw.registry import Registry

LOG = logging.getLogger(__name__)
VECTOR_BYTES = 64  # split elementwise loops into chunks of this many bytes of output
DEFAULT_ACCUMULATORS = 16  # pixels x 16-channel blocks of the untuned conv kernel's tile
# AVX2's int16 sums: one ymm of int16 lanes per pixel x block (and its int32 sums, mostly
# spilled between chunks) of 16 registers. Sum of one thread's kernel times on Zen 3 (W4A4,
# 2026-12-02): ResNet-20 4 -> 0.77 ms (8: 0.95, 16: 1.0); ResNet-18 4 -> 32.8 ms, 7 -> 25.8
INT16_ACCUMULATORS = 7
# NEON's int16 sums: four q registers of int16 lanes per pixel x block, of 32
NEON_INT16_ACCUMULATORS = 4
NEON_ACCUMULATORS = 4  # NEON's int32 sums: four q registers per pixel x block, of 32
NEON_MAX_ACCUMULATORS = 8  # searched at most on NEON
SDOT_REGISTERS = 30  # lane-indexed SDOT tiles: q registers for sums, codes and weights (of 32)
# NEON's smlal int16 sums: one lane per product, eight q registers per pixel x block
NEON_LONG_INT16_ACCUMULATORS = 3
# NEON's bit-serial counts: q registers of 16-bit counts per tile (one per pixel, 8-channel
# block, activation bit and weight plane), of 32
BITSERIAL_ACCUMULATORS = 16
PAIRS_ACCUMULATORS = 8  # AVX2's vpmaddwd: two ymm of int32 sums per pixel x block
AVX2_MAX_ACCUMULATORS = 8  # searched at most on AVX2 (VNNI: MAX_ACCUMULATORS)
PARALLEL_PAD_BYTES = 128 * 1024  # pad on threads from this input size on
VNNI_LANES = 16  # int32 accumulators per vector: the output channels of one conv block
INTRINSIC_LANES = 4  # int32 lanes of a 128-bit NEON intrinsic in an epilogue
MAX_TUNED_PIXELS = 16  # tuning tries row tiles up to this many pixels
MAX_TUNED_BLOCKS = 4  # and up to this many 16-channel output blocks
MAX_ACCUMULATORS = 24  # pixels x blocks searched at most (AVX-512 has 32 vector registers;
# narrower ISAs spill sooner, which the measurements show)
PARALLEL_MIN_ELEMENTS = 4096  # below this, threads cost more than they save


@dataclass(frozen=True)
class ScheduleRule:
    """Schedules one kind of TIR function; ``applies`` looks at the function's blocks."""

    name: str
    applies: Callable[[object], bool]  # (schedule) -> whether this rule takes the function
    apply: Callable[[object, object], None]  # (schedule, target)


SCHEDULE_RULES: Registry[ScheduleRule] = Registry("schedule rule")
# the first that applies wins
RULE_ORDER = ("blocked_conv", "bitserial_conv", "grouped_conv", "elementwise", "spatial_outer")


def _has_feature(target, feature: str) -> bool:
    from tvm.target import codegen

    return "cpu" in target.keys and bool(codegen.target_has_features(feature, target))


def _has_vnni(target) -> bool:
    return _has_feature(target, "avx512vnni")


def has_fused_multiply_add(target) -> bool:
    """Whether ``target``'s CPU has a hardware float FMA (every AArch64 core; x86 from Haswell)."""
    if "cpu" not in target.keys:
        return False
    if str(target.attrs.get("mtriple", "")).startswith("aarch64"):
        return True
    return _has_feature(target, "fma")


def _dot_product(target) -> str:
    """How the conv's 16x4 inner product runs: 'vnni', 'avx2' (vpmaddwd), 'neon' (32-bit
    vector mla, AArch64) or 'unrolled' (scalar code for LLVM to vectorize if it can)."""
    if _has_vnni(target):
        return "vnni"
    if _has_feature(target, "avx2"):
        return "avx2"
    if "cpu" in target.keys and str(target.attrs.get("mtriple", "")).startswith("aarch64"):
        return "neon"
    return "unrolled"


def has_signed_dot(target) -> bool:
    """Whether ``target``'s CPU has a signed-byte dot product (AArch64 ``SDOT``, ``+dotprod``)."""
    return _dot_product(target) == "neon" and _has_feature(target, "dotprod")


def int16_product(target) -> str | None:
    """Which int16-sum kernel ``target``'s CPU gets for proven layers (``int16_sums.py``):
    'avx2' (``vpmaddubsw``), 'neon' (16-bit ``mla``, AArch64), or None (VNNI's int32 dot
    product is faster; other CPUs keep int32 products)."""
    dot = _dot_product(target)
    return dot if dot in ("avx2", "neon") else None


def _blocks(sch) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def block_names(sch) -> set[str]:
    return {sch.get(block).name_hint for block in _blocks(sch)}


def _is_spatial(sch, block) -> bool:
    return all(int(var.iter_type) == 0 for var in sch.get(block).iter_vars)


def loop_extent(sch, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if hasattr(extent, "value") else None


def _parallel_vectorize(sch, block, dtype_bytes: int = 4) -> None:
    """All loops of a spatial block fused, split into [threads][vector lanes]."""
    loops = sch.get_loops(block)
    if not loops:
        return
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    total = loop_extent(sch, fused)
    lanes = max(1, VECTOR_BYTES // dtype_bytes)
    if total is None or total < lanes:
        return
    outer, inner = sch.split(fused, factors=[None, lanes])
    sch.vectorize(inner)
    if total >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(outer)


def _try_inline(sch, block) -> bool:
    """Inline ``block`` into its consumers when TVM allows it (not for a function output)."""
    try:
        sch.compute_inline(block)
    except Exception:  # ScheduleError: the block writes an output, or is not elementwise
        return False
    return True


def inline_around(sch, first: str, last: str, kernel: str = "conv_blocked") -> list:
    """Inline the blocks TVM fused around the kernel; returns the blocks left after ``last``.

    Blocks before ``first`` (an elementwise producer) go into it. Blocks after ``last`` are
    inlined forward into their consumers, ``last`` included, so what stays are the blocks that
    write the function's outputs, each computing the whole epilogue from the int32 sums, and
    the ``sqdmulh`` stages of ``requantize.high_half_requantize``, computed per tile into a
    buffer of a tile's size (global scope: under 1 KiB, TVM puts it on the stack; "local"
    would be a workspace-pool call per tile).
    """
    names = [sch.get(block).name_hint for block in _blocks(sch)]
    for name in names[: names.index(first)]:
        sch.compute_inline(sch.get_sblock(name))
    for name in names[names.index(last) :]:
        if not name.startswith(HIGH_HALF_STAGE):  # a stage of four-lane intrinsic calls
            _try_inline(sch, sch.get_sblock(name))
    names = [sch.get(block).name_hint for block in _blocks(sch)]
    return [sch.get_sblock(name) for name in names[names.index(kernel) + 1 :]]


def _output_dtype_bytes(sch, block) -> int:
    import numpy as np

    buffer = sch.get(block).writes[0].source
    return max(1, np.dtype(str(buffer.dtype)).itemsize)


# -- rules ----------------------------------------------------------------------------------
BLOCKED_CONV = {"pad_blocked", "weight_blocked", "conv_blocked", "conv2d_int"}


def is_blocked_conv(sch) -> bool:
    """Whether the function is ``kernels.conv2d_int_blocked`` (with whatever TVM fused to it)."""
    return block_names(sch) >= BLOCKED_CONV


@dataclass(frozen=True)
class ConvKnobs:
    """The free choices of the blocked conv schedule: what tuning searches over.

    ``pixels`` output pixels of one row times ``blocks`` blocks of 16 output channels form the
    register tile (``pixels x blocks`` vector accumulators); ``parallel_prologue`` spreads the
    activation padding over threads (it pays for big layers only: a thread-pool launch costs
    microseconds).
    """

    pixels: int
    blocks: int = 1
    parallel_prologue: bool = True


def _divisors(value: int, limit: int) -> list[int]:
    return [d for d in range(1, min(value, limit) + 1) if value % d == 0]


def conv_shape(sch) -> dict[str, int]:
    """Loop extents of ``conv_blocked``: batch, output blocks, rows, columns."""
    n, ob, i, j = sch.get_loops(sch.get_sblock("conv_blocked"))[:4]
    return {
        "batch": loop_extent(sch, n), "out_blocks": loop_extent(sch, ob),
        "rows": loop_extent(sch, i), "columns": loop_extent(sch, j),
    }  # fmt: skip


def default_conv_knobs(sch, target) -> ConvKnobs:
    """The untuned choice of tile for ``target``'s dot product.

    VNNI: about DEFAULT_ACCUMULATORS vector accumulators, the widest row tile of at most that
    many pixels, then as many 16-channel output blocks as still fit (each weight vector serves
    more pixels, each activation more channels). Measured on one Zen 4 core, the int8 kernel
    alone (2026-12-02): 64 ch at 56x56 147 -> 165 GMAC/s (8x1 -> 14x1 pixels x blocks), 512 ch
    at 7x7 195 -> 215 (7x1 -> 7x2), 16 ch at 32x32 93 -> 117 (8x1 -> 16x1).
    AVX2 int16 sums: pixels first, up to INT16_ACCUMULATORS (16 ymm registers); NEON's the
    same, up to NEON_INT16_ACCUMULATORS (each takes four of 32 q registers). AVX2 int16
    pairs (``vpmaddwd``): output blocks first, each activation pair is widened and broadcast
    once for all of them (ResNet-18's 7x7 stem on Zen 3: 16x1 6.1 ms, 2x4 4.1 ms).
    The padding pass runs on threads only for big inputs: a thread-pool launch costs more
    than it saves on a small layer (16 ch at 32x32 on Zen 4: 117 -> 72 GMAC/s threaded).
    """
    shape = conv_shape(sch)
    if _dot_product(target) == "avx2" and not has_int16_sums(sch):
        blocks = max(_divisors(shape["out_blocks"], MAX_TUNED_BLOCKS))
        pixels = max(_divisors(shape["columns"], max(1, PAIRS_ACCUMULATORS // blocks)))
    else:
        budget = NEON_ACCUMULATORS if _dot_product(target) == "neon" else DEFAULT_ACCUMULATORS
        if has_int16_sums(sch):
            budget = {"avx2": INT16_ACCUMULATORS, "neon": NEON_INT16_ACCUMULATORS}[
                int16_product(target)
            ]
            if int16_lane_inputs(sch) == 1 or has_wide_pairs(sch):  # 8 q registers each
                budget = NEON_LONG_INT16_ACCUMULATORS
        pixels = max(_divisors(shape["columns"], budget))
        blocks = max(_divisors(shape["out_blocks"], max(1, budget // pixels)))
    pad = sch.get(sch.get_sblock("pad_blocked")).writes[0].source  # uint8: one byte each
    padded_bytes = math.prod(int(extent) for extent in pad.shape)
    return ConvKnobs(pixels, blocks, parallel_prologue=padded_bytes >= PARALLEL_PAD_BYTES)


def conv_knob_space(sch, target) -> list[ConvKnobs]:
    """Every knob setting tuning measures on ``target``, the default first."""
    shape = conv_shape(sch)
    space = [default_conv_knobs(sch, target)]
    limit = {"avx2": AVX2_MAX_ACCUMULATORS, "neon": NEON_MAX_ACCUMULATORS}.get(
        _dot_product(target), MAX_ACCUMULATORS
    )
    for pixels in _divisors(shape["columns"], MAX_TUNED_PIXELS):
        for blocks in _divisors(shape["out_blocks"], MAX_TUNED_BLOCKS):
            if pixels * blocks > limit:
                continue
            for parallel_prologue in (True, False):
                knobs = ConvKnobs(pixels, blocks, parallel_prologue)
                if knobs not in space:
                    space.append(knobs)
    return space


def _storage(sch) -> str:
    """``int8`` or ``packed``: the dtype of what the weight stage reads (int8 or bytes)."""
    decode = sch.get(sch.get_sblock("weight_blocked"))
    return "int8" if str(decode.reads[0].source.dtype) == "int8" else "packed"


def _packed_group(sch) -> int:
    """Input blocks per packed group (``packing.pack_blocked``); 1 for int8 weights."""
    if _storage(sch) != "packed":
        return 1
    decode = sch.get(sch.get_sblock("weight_blocked"))
    blocks_in = int(decode.writes[0].source.shape[1])
    return blocks_in // int(decode.reads[0].source.shape[1])


def _unpack_in_registers(sch, decode, conv, loop, pairs: bool) -> None:
    """Unpack the tile's packed weight blocks right before the dot products that use them.

    The stage is computed under ``loop`` (one input block, one kernel position) into a local
    buffer of 64 int8 per output block of the tile; the block's fields are whole vectors
    (``packing.pack_blocked``: 2-bit, one 64-byte vector of a group; 4-bit, two 32-byte
    halves), each a shift, a mask and a subtraction. The unpacked block is used by every pixel
    of the tile: no per-call workspace.
    """
    depth = 1 + [sch.get(rv) for rv in sch.get_loops(conv)].index(sch.get(loop))
    sch.compute_at(decode, loop)
    *outer, oi, ci = sch.get_loops(decode)[depth:]
    if pairs:  # storage and the local block in AVX2's pair order
        sch.transform_layout(
            decode, ("write", 0),
            lambda ob_, cb_, ky_, kx_, oi_, ci_: (ob_, cb_, ky_, kx_, ci_ // 2, oi_, ci_ % 2),
        )  # fmt: skip
        cp, cr = sch.split(ci, factors=[2, 2])
        sch.reorder(cp, oi, cr)
        element = sch.fuse(cp, oi, cr)
    else:
        element = sch.fuse(oi, ci)
    length = int(sch.get(decode).reads[0].source.shape[-1])  # bytes per packed group
    parts = max(1, 64 // length)  # fields of a block: 4-bit, two vectors of 32 bytes
    fields, lanes = sch.split(element, factors=[parts, None])
    sch.vectorize(lanes)
    for other in [*outer, fields]:
        sch.unroll(other)


def has_signed_codes(sch) -> bool:
    """Whether the conv's codes fit signed bytes (``kernels.conv2d_int_blocked``'s
    ``signed_codes``, set by the lowering where the target has signed-byte instructions)."""
    return "signed_codes" in sch.get(sch.get_sblock("pad_blocked")).annotations


def is_channels_last(sch) -> bool:
    """Whether the conv reads and writes NHWC tensors (``kernels.conv2d_int_blocked``)."""
    annotations = sch.get(sch.get_sblock("pad_blocked")).annotations
    return "layout" in annotations and str(annotations["layout"]) == "NHWC"


def _schedule_padding(sch, parallel: bool) -> None:
    """Rows of the padded input on threads (when ``parallel``), vectors within a row.

    NCHW: the four channels of a block for a whole row are one vector. NHWC: each pixel's
    channels are copied as vectors of at most ``VECTOR_BYTES``.
    """
    pad = sch.get_sblock("pad_blocked")
    if "pad_rows" in block_names(sch):  # kernel columns folded into channels: rows first
        n, y, _x, _c = sch.get_loops(sch.get_sblock("pad_rows"))
        if parallel:
            sch.parallel(sch.fuse(n, y))
    if is_channels_last(sch):
        n, y, _x, cb, ci = sch.get_loops(pad)
        rows = sch.fuse(n, y)
        pixel = sch.fuse(cb, ci)
        extent = loop_extent(sch, pixel) or 0
        if extent > VECTOR_BYTES:  # whole vectors: a folded pixel holds 24 codes, say
            lanes = max(d for d in _divisors(extent, VECTOR_BYTES) if d & (d - 1) == 0)
            pixel = sch.split(pixel, factors=[None, lanes])[1]
        sch.vectorize(pixel)
    else:
        n, cb, y, x, ci = sch.get_loops(pad)
        rows = sch.fuse(n, cb, y)
        sch.vectorize(sch.fuse(x, ci))
    if parallel:
        sch.parallel(rows)


def _vectorize_epilogue(sch, output) -> None:
    """Vectorize an epilogue block computed under a tile: over output channels, 16 at a time
    (NHWC: contiguous in the accumulators and the output), or over a row's pixels (NCHW).

    The ``sqdmulh`` stage (``requantize.high_half_requantize``) gets vectors of the
    intrinsic's own width, 4 int32 lanes, or none: LLVM splits a 16-lane add into four, but
    cannot split or widen a call of an AArch64 intrinsic ("Do not know how to split")."""
    high_half = sch.get(output).name_hint.startswith(HIGH_HALF_STAGE)
    lanes = INTRINSIC_LANES if high_half else VNNI_LANES
    inner = sch.get_loops(output)[-1]
    extent = loop_extent(sch, inner) or 0
    if extent > lanes and extent % lanes == 0:
        inner = sch.split(inner, factors=[None, lanes])[1]
    elif high_half and extent != lanes:
        return  # scalar calls
    sch.vectorize(inner)


def schedule_blocked_conv(sch, target, knobs: ConvKnobs | None = None) -> None:
    from apprentice_hw.compiler.intrinsics import (
        register_avx2,
        register_sdot,
        register_sdot_lanes,
        register_vnni,
    )

    knobs = knobs or default_conv_knobs(sch, target)
    first = "pad_rows" if "pad_rows" in block_names(sch) else "pad_blocked"
    outputs = inline_around(sch, first, "conv2d_int")

    _schedule_padding(sch, knobs.parallel_prologue)
    if has_int16_sums(sch):
        _schedule_tile_epilogue(sch, outputs, _schedule_int16_sums(sch, target, knobs))
        return

    decode = sch.get_sblock("weight_blocked")
    storage = _storage(sch)
    conv = sch.get_sblock("conv_blocked")
    n, ob, i, j, oi, rc, ry, rx, ri = sch.get_loops(conv)
    obo, obi = sch.split(ob, factors=[None, knobs.blocks])
    jo, ji = sch.split(j, factors=[None, knobs.pixels])
    dot = _dot_product(target)
    lanes = _sdot_lane_groups(sch, target, knobs)
    if lanes:
        # Lane-indexed SDOT: the tile's input blocks come ``lanes`` at a time from one vector
        # load per pixel (``register_sdot_lanes``): (rc, ry, rx) outside, then the tile.
        rc, rl = sch.split(rc, factors=[None, lanes])
        sch.reorder(n, obo, i, jo, rc, ry, rx, obi, ji, rl, oi, ri)
    else:
        # Packed 2-bit weights come in groups of G = 4 input blocks sharing 64 bytes: the
        # blocks of a group are the innermost reduction steps (G = 1 for other storage).
        rc, rg = sch.split(rc, factors=[None, _packed_group(sch)])
        if dot == "avx2":
            rp, rr = sch.split(ri, factors=[2, 2])
            sch.reorder(n, obo, i, jo, rc, ry, rx, rg, obi, ji, rp, oi, rr)
        elif dot in ("vnni", "neon"):
            sch.reorder(n, obo, i, jo, rc, ry, rx, rg, obi, ji, oi, ri)
        else:
            sch.reorder(n, obo, i, jo, rc, ry, rx, rg, obi, ji, ri, oi)
    sch.parallel(sch.fuse(n, obo, i))
    # Weights are stored in blocks already: int8 ones are read in place, packed ones are
    # unpacked per (input block, kernel position) into registers for all the tile's pixels.
    if storage == "int8":
        sch.compute_inline(decode)
    else:
        _unpack_in_registers(sch, decode, conv, rg, pairs=dot == "avx2")
    # The tile's accumulators (pixels x blocks x 16 lanes) live in a local buffer that LLVM
    # keeps in registers across the whole reduction.
    local = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(local, jo)
    init = sch.decompose_reduction(conv, rc)
    sch.vectorize(sch.get_loops(init)[-1])
    if lanes:
        sch.tensorize(rl, register_sdot_lanes(lanes))
    elif dot == "vnni":
        sch.tensorize(oi, register_vnni())
    elif dot == "neon" and has_signed_dot(target) and has_signed_codes(sch):
        sch.tensorize(oi, register_sdot())
    elif dot == "avx2":
        sch.tensorize(rp, register_avx2())
    else:
        # TVM refuses to vectorize a spatial loop inside the reduction loop ``ri``; unrolled,
        # the 16 x 4 products are straight-line code that LLVM's SLP vectorizer may pack (on
        # AArch64 it did not: one scalar madd per product; NEON convs without SDOT take the
        # int16 sums or the wide pairs of ``_schedule_int16_sums`` instead).
        sch.unroll(ri)
        sch.unroll(oi)
    sch.unroll(ji)
    sch.unroll(obi)
    _schedule_tile_epilogue(sch, outputs, jo)


def _sdot_lane_groups(sch, target, knobs: ConvKnobs) -> int:
    """Input blocks per lane-indexed ``SDOT`` vector (``register_sdot_lanes``), 0 for none.

    Only NHWC convs with int8 weights (packed ones are unpacked per group in registers) and
    signed codes, where a pixel's blocks are contiguous; as many blocks (4 or 2, dividing
    the input blocks) as leave the tile's accumulators, one code vector per pixel and the
    blocks' weights (four q registers each, for every output block) within the 32 registers.
    """
    if not (has_signed_dot(target) and has_signed_codes(sch) and is_channels_last(sch)):
        return 0
    if _storage(sch) != "int8":
        return 0
    blocks_in = int(sch.get(sch.get_sblock("weight_blocked")).writes[0].source.shape[1])
    accumulators = 4 * knobs.pixels * knobs.blocks + knobs.pixels
    for groups in (4, 2):
        if blocks_in % groups == 0 and accumulators + 4 * groups * knobs.blocks <= SDOT_REGISTERS:
            return groups
    return 0


def _schedule_tile_epilogue(sch, outputs: list, tile, local: str = "conv_blocked_local") -> None:
    """The epilogue (requantization, residual add, ReLU, next quantize) on each finished tile,
    straight from the accumulators: no int32 output buffer, one parallel loop less (ResNet-20
    W4A4: 0.459 -> 0.429 ms, 2026-11-25). ``tile`` is the loop over tiles; the accumulators'
    ``local`` stage is computed under it and inlined into the epilogue."""
    for output in outputs:
        sch.reverse_compute_at(output, tile)
        _vectorize_epilogue(sch, output)
    sch.compute_inline(sch.get_sblock(local))


def _int16_stage_loops(sch, partial, depth: int, knobs: ConvKnobs) -> dict:
    """The loops ``compute_at`` made for the int16 stage below ``depth``, by role.

    ``compute_at`` makes one loop per iteration variable whose range in the tile is longer
    than one, in the block's order (spatial: blocks, pixels, lanes, pairs; reduction: input
    blocks of the chunk, kernel rows, kernel columns, the pair's two channels), and none for
    the others: their roles map to None.
    """
    reads = sch.get(partial).reads
    weights = reads[-1].source  # weight_blocked (OB, CB, KH, KW, 16, 4)
    kh, kw = int(weights.shape[2]), int(weights.shape[3])
    chunk = int(sch.get(partial).iter_vars[7].dom.extent)  # rq
    lane_inputs = int16_lane_inputs(sch)
    roles = [("blocks", knobs.blocks), ("pixels", knobs.pixels), ("lanes", VNNI_LANES),
             ("pairs", 4 // lane_inputs), ("rq", chunk), ("ry", kh), ("rx", kw),
             ("rr", lane_inputs)]  # fmt: skip
    loops = iter(sch.get_loops(partial)[depth:])
    return {role: next(loops) if extent > 1 else None for role, extent in roles}


def has_int16_sums(sch) -> bool:
    """Whether the conv sums products in int16 chunks (``kernels``' ``int16_chunk``)."""
    return "conv_int16" in block_names(sch)


def has_wide_pairs(sch) -> bool:
    """Whether the conv sums pairs of products in int32 lanes (``kernels``' ``wide_pairs``)."""
    return str(sch.get(sch.get_sblock("conv_int16")).writes[0].source.dtype) == "int32"


def int16_lane_inputs(sch) -> int:
    """Input channels whose products share an int16 lane: 2 (pairs) or 1 (``smlal``)."""
    lanes = sch.get(sch.get_sblock("conv_int16")).writes[0].source.shape[-1]
    return 4 // int(lanes)


def _schedule_int16_sums(sch, target, knobs: ConvKnobs):
    """AVX2 without VNNI, or NEON: a layer proven to fit int16 (``lowering/int16_sums.py``).

    The tile is the int32 one of the VNNI schedule (pixels x blocks accumulators, rows on
    threads); for each chunk of input blocks, the tile's int16 partial sums (one vector of
    16 x 2 lanes per pixel and block, in registers) take two ``vpmaddubsw`` + two ``vpaddw``
    (NEON: eight 16-bit ``mla``) per block and kernel position, then are widened into the
    accumulators (``vpmaddwd`` by ones; NEON: shifts and adds). Layers with one product per
    lane (NEON, codes of at most 127) have 16 x 4 lanes per pixel and block instead, eight
    ``smlal`` each, widened by ``saddlp`` and ``addp``. Packed weights are unpacked per (input
    block, kernel position) as in the VNNI path.
    """
    from apprentice_hw.compiler.intrinsics import (
        register_avx2_int16,
        register_neon_int16,
        register_neon_int16_long,
        register_neon_wide_pairs,
    )

    if has_wide_pairs(sch):
        product, widen = register_neon_wide_pairs()
    elif int16_lane_inputs(sch) == 1:
        product, widen = register_neon_int16_long()
    elif int16_product(target) == "neon":
        product, widen = register_neon_int16()
    else:
        product, widen = register_avx2_int16()
    conv = sch.get_sblock("conv_blocked")
    n, ob, i, j, oi, rc, rp = sch.get_loops(conv)
    obo, obi = sch.split(ob, factors=[None, knobs.blocks])
    jo, ji = sch.split(j, factors=[None, knobs.pixels])
    sch.reorder(n, obo, i, jo, rc, obi, ji, oi, rp)
    sch.parallel(sch.fuse(n, obo, i))
    local = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(local, jo)
    init = sch.decompose_reduction(conv, rc)
    sch.vectorize(sch.get_loops(init)[-1])

    partial = sch.get_sblock("conv_int16")
    sch.compute_at(partial, rc)
    sch.set_scope(partial, 0, "local")
    depth = 1 + [sch.get(loop) for loop in sch.get_loops(partial)].index(sch.get(rc))
    loops = _int16_stage_loops(sch, partial, depth, knobs)
    rq, rg = loops["rq"], None
    if rq is not None:
        rq, rg = sch.split(rq, factors=[None, _packed_group(sch)])
    order = [rq, loops["ry"], loops["rx"], rg, loops["blocks"], loops["pixels"], loops["lanes"],
             loops["pairs"], loops["rr"]]  # fmt: skip
    order = [loop for loop in order if loop is not None]
    sch.reorder(*order)
    zero = sch.decompose_reduction(partial, order[0])
    sch.vectorize(sch.fuse(*sch.get_loops(zero)[-2:]))
    decode = sch.get_sblock("weight_blocked")
    if _storage(sch) == "int8":
        sch.compute_inline(decode)
    else:
        # under the innermost loop that fixes one input block and kernel position
        fixed = [loop for loop in (rc, rq, loops["ry"], loops["rx"], rg) if loop is not None]
        _unpack_in_registers(sch, decode, partial, fixed[-1], pairs=False)
    sch.tensorize(loops["lanes"], product)
    for unrolled in (loops["pixels"], loops["blocks"]):
        if unrolled is not None:
            sch.unroll(unrolled)
    sch.tensorize(oi, widen)
    sch.unroll(ji)
    sch.unroll(obi)
    return jo


def is_bitserial_conv(sch) -> bool:
    """Whether the function is ``kernels.conv2d_bitserial`` (with whatever TVM fused to it)."""
    return block_names(sch) >= {"code_bits", "bitpack_data", "conv_bits"}


def _schedule_bit_planes(sch) -> None:
    """The activation's bit planes, one row of pixels at a time (rows on threads for big
    inputs): per pixel and 16 channels, each bit of the codes as one vector, then each plane's
    two bytes gathered by the ``register_bit_gather`` intrinsic (one multiply per byte)."""
    from apprentice_hw.compiler.intrinsics import register_bit_gather

    bits = sch.get_sblock("code_bits")
    pack = sch.get_sblock("bitpack_data")
    size = math.prod(int(extent) for extent in sch.get(pack).writes[0].source.shape)
    n, y, _x, _cb, b, t = sch.get_loops(pack)
    rows = sch.fuse(n, y)
    sch.compute_at(bits, b)
    sch.vectorize(sch.get_loops(bits)[-1])
    sch.tensorize(t, register_bit_gather())
    sch.unroll(b)
    if size * 8 >= PARALLEL_PAD_BYTES:  # the codes' bytes (eight per plane byte and bit)
        sch.parallel(rows)


def _bitserial_stage_loops(sch, conv, depth: int, extents: dict[str, int]) -> dict:
    """The loops ``compute_at`` made for ``conv_bits`` below ``depth``, by role (None for a
    role of extent one, which gets no loop; see ``_int16_stage_loops``)."""
    loops = iter(sch.get_loops(conv)[depth:])
    return {role: next(loops) if extent > 1 else None for role, extent in extents.items()}


def schedule_bitserial_conv(sch, target) -> None:
    """``kernels.conv2d_bitserial``: a tile of pixels x 8-channel output blocks whose 16-bit
    counts (one q register per activation bit and weight plane) stay in registers over the
    whole reduction; on NEON each (block, kernel position, 16 input channels) is the
    ``and`` + ``cnt`` + ``uadalp`` intrinsic. Rows of the output on threads.

    The tile is set on ``conv2d_bitserial`` (the counts' weighted sum) and the counts are
    computed under it: its reads of the counts name each bit and plane by a constant, which
    TVM cannot solve the other way round (``reverse_compute_at``). The fused epilogue then
    runs on each finished tile, as in the blocked conv.
    """
    from apprentice_hw.compiler.intrinsics import register_neon_bitserial

    names = [sch.get(block).name_hint for block in _blocks(sch)]
    for name in names[: names.index("code_bits")]:
        sch.compute_inline(sch.get_sblock(name))
    for name in names[names.index("conv2d_bitserial") + 1 :]:
        _try_inline(sch, sch.get_sblock(name))
    names = [sch.get(block).name_hint for block in _blocks(sch)]
    outputs = [sch.get_sblock(name) for name in names[names.index("conv2d_bitserial") + 1 :]]
    _schedule_bit_planes(sch)

    conv = sch.get_sblock("conv_bits")
    _, _, out_w, out_blocks, act_bits, planes, lanes = (
        int(extent) for extent in sch.get(conv).writes[0].source.shape
    )
    per_pixel = act_bits * planes  # count vectors per pixel and block
    budget = max(1, BITSERIAL_ACCUMULATORS // per_pixel)
    pixels = max(_divisors(out_w, budget))
    blocks = max(_divisors(out_blocks, max(1, budget // pixels)))
    combine = sch.get_sblock("conv2d_bitserial")
    if str(sch.get(combine).annotations["layout"]) == "NHWC":
        n, i, j, o = sch.get_loops(combine)
        oo, oi = sch.split(o, factors=[None, blocks * lanes])
        jo, ji = sch.split(j, factors=[None, pixels])
        sch.reorder(n, oo, i, jo, ji, oi)
    else:
        n, o, i, j = sch.get_loops(combine)
        oo, oi = sch.split(o, factors=[None, blocks * lanes])
        jo, ji = sch.split(j, factors=[None, pixels])
        sch.reorder(n, oo, i, jo, oi, ji)
    sch.parallel(sch.fuse(n, oo, i))
    sch.compute_at(conv, jo)
    sch.set_scope(conv, 0, "local")
    sch.set_scope(combine, 0, "local")
    depth = 1 + [sch.get(loop) for loop in sch.get_loops(conv)].index(sch.get(jo))
    kh, kw = (int(extent) for extent in sch.get(conv).reads[-1].source.shape[2:4])
    blocks_in = int(sch.get(conv).reads[-1].source.shape[1])
    extents = {"pixels": pixels, "blocks": blocks, "bits": act_bits, "planes": planes,
               "lanes": lanes, "rc": blocks_in, "ry": kh, "rx": kw, "rt": 2}  # fmt: skip
    loops = _bitserial_stage_loops(sch, conv, depth, extents)
    order = [loops[role] for role in
             ("rc", "ry", "rx", "pixels", "blocks", "bits", "planes", "lanes", "rt")]  # fmt: skip
    order = [loop for loop in order if loop is not None]
    sch.reorder(*order)
    init = sch.decompose_reduction(conv, order[0])  # zero the tile's counts once
    sch.vectorize(sch.get_loops(init)[-1])
    product = next(loops[r] for r in ("bits", "planes", "lanes") if loops[r] is not None)
    if _dot_product(target) == "neon":
        sch.tensorize(product, register_neon_bitserial(act_bits, planes))
    else:
        for role in ("rt", "lanes", "planes", "bits"):
            if loops[role] is not None:
                sch.unroll(loops[role])
    for role in ("pixels", "blocks"):
        if loops[role] is not None:
            sch.unroll(loops[role])
    for output in outputs:
        sch.reverse_compute_at(output, jo)
        _vectorize_epilogue(sch, output)
    _try_inline(sch, combine)


GROUPED_LANES = 16  # output channels per vector of the grouped conv's int32 sums


def is_grouped_conv(sch) -> bool:
    """Whether the function is ``kernels.conv2d_int_grouped`` on NHWC data (with its fused
    epilogue); an NCHW one is left to the generic rule."""
    if not {"pad_grouped", "conv2d_grouped"} <= block_names(sch):
        return False
    annotations = sch.get(sch.get_sblock("pad_grouped")).annotations
    return "layout" in annotations and str(annotations["layout"]) == "NHWC"


def schedule_grouped_conv(sch, target) -> None:
    """Grouped and depthwise convs on CPUs (NHWC): the padded codes copied as vectors of
    channels; each output pixel's sums as vectors of ``GROUPED_LANES`` output channels in
    registers over the window (weights stored (K, O): contiguous), then the epilogue on them.

    Rows on threads. Scalar loops over the channels were 2.5 GMAC/s on a 64-channel 3x3
    depthwise layer at 56x56 (Zen 3, one thread, int8 weights).
    """
    outputs = inline_around(sch, "pad_grouped", "conv2d_grouped", kernel="conv2d_grouped")
    pad = sch.get_sblock("pad_grouped")
    n, y, _x, c = sch.get_loops(pad)
    sch.parallel(sch.fuse(n, y))
    channels = loop_extent(sch, c) or 0
    lanes = max(d for d in _divisors(channels, GROUPED_LANES))
    if lanes > 1:
        sch.vectorize(sch.split(c, factors=[None, lanes])[1])
    conv = sch.get_sblock("conv2d_grouped")
    n, i, j, o, rc, ry, rx = sch.get_loops(conv)
    out_channels = loop_extent(sch, o) or 0
    lanes = max(d for d in _divisors(out_channels, GROUPED_LANES))
    oo, oi = sch.split(o, factors=[None, lanes])
    sch.reorder(n, i, j, oo, rc, ry, rx, oi)
    sch.parallel(sch.fuse(n, i))
    local = sch.cache_write(conv, 0, "local")
    sch.reverse_compute_at(local, oo)
    init = sch.decompose_reduction(conv, rc)
    sch.vectorize(sch.get_loops(init)[-1])
    # TVM refuses to vectorize a spatial loop inside the reduction loops: unrolled, LLVM's SLP
    # vectorizer packs the lanes' multiply-adds (contiguous codes and weights) into vectors.
    for loop in (ry, rx, sch.get_loops(conv)[-1]):
        sch.unroll(loop)
    for output in outputs:
        sch.reverse_compute_at(output, oo)
        _vectorize_epilogue(sch, output)
    sch.compute_inline(local)


def _schedule_elementwise(sch, target) -> None:
    blocks = _blocks(sch)
    for block in blocks[:-1]:
        sch.compute_inline(block)
    last = _blocks(sch)[-1]
    if not _vectorize_along_read(sch, last, _output_dtype_bytes(sch, last)):
        _parallel_vectorize(sch, last, _output_dtype_bytes(sch, last))


def _contiguous_read_axis(sch, block) -> int | None:
    """The block axis along which its largest input is read contiguously, when that is not
    the output's last axis (a transpose fused into the function), else None."""
    stmt = sch.get(block)
    variables = [var.var for var in stmt.iter_vars]
    reads = [r for r in stmt.reads if len(r.region) > 1]
    if not reads:
        return None
    largest = max(reads, key=lambda r: math.prod(int(d) for d in r.source.shape))
    index = largest.region[-1].min
    axis = next((k for k, var in enumerate(variables) if index.same_as(var)), None)
    return axis if axis is not None and axis != len(variables) - 1 else None


def _vectorize_along_read(sch, block, dtype_bytes: int) -> bool:
    """Schedule a fused transpose (the input quantize: NCHW float -> NHWC codes) with the
    loop that reads its input contiguously innermost and vectorized, the stores strided.

    Fused in the output's order, the innermost loop ran over three channels: ResNet-18's
    input quantize was a scalar loop of 21 instructions per element on AArch64, a division
    and a modulo by 3 included (1.2 M of 79 M modeled cycles on the Cortex-A76, 2026-12-07).
    """
    axis = _contiguous_read_axis(sch, block)
    loops = sch.get_loops(block)
    if axis is None or len(loops) != len(sch.get(block).iter_vars):
        return False
    extent = loop_extent(sch, loops[axis]) or 0
    lanes = max([1, *_divisors(extent, max(1, VECTOR_BYTES // dtype_bytes))])
    if lanes < 4:
        return False
    inner = loops[axis]
    others = [loop for k, loop in enumerate(loops) if k != axis]
    sch.reorder(*others, inner)
    outer = sch.fuse(*others) if len(others) > 1 else others[0]
    _rows, vector = sch.split(inner, factors=[None, lanes])
    sch.vectorize(vector)
    total = (loop_extent(sch, outer) or 0) * extent
    if total >= PARALLEL_MIN_ELEMENTS:
        sch.parallel(outer)
    return True


def _schedule_spatial_outer(sch, target) -> None:
    for block in _blocks(sch):
        loops = sch.get_loops(block)
        spatial = [
            loop
            for loop, var in zip(loops, sch.get(block).iter_vars, strict=False)
            if int(var.iter_type) == 0
        ]
        if len(spatial) >= 2 and loops[: len(spatial)] == spatial:
            sch.parallel(sch.fuse(*spatial[:2]))


SCHEDULE_RULES.add(
    "blocked_conv",
    ScheduleRule("blocked_conv", is_blocked_conv, schedule_blocked_conv),
)
SCHEDULE_RULES.add(
    "bitserial_conv",
    ScheduleRule("bitserial_conv", is_bitserial_conv, schedule_bitserial_conv),
)
SCHEDULE_RULES.add(
    "grouped_conv",
    ScheduleRule("grouped_conv", is_grouped_conv, schedule_grouped_conv),
)
SCHEDULE_RULES.add(
    "elementwise",
    ScheduleRule(
        "elementwise",
        lambda sch: all(_is_spatial(sch, block) for block in _blocks(sch)),
        _schedule_elementwise,
    ),
)
SCHEDULE_RULES.add(
    "spatial_outer", ScheduleRule("spatial_outer", lambda sch: True, _schedule_spatial_outer)
)


def rule_for(sch) -> ScheduleRule:
    return next(
        SCHEDULE_RULES.get(name) for name in RULE_ORDER if SCHEDULE_RULES.get(name).applies(sch)
    )


def kernel_key(func) -> str:
    """A name for ``func``'s computation that is the same in every process and module.

    The structural hash of the unscheduled function (shapes, bit widths, zero point, fused
    epilogue; not weight values, which are arguments), without its symbol name.
    """
    import tvm_ffi

    if func.attrs is not None and "global_symbol" in func.attrs:
        func = func.without_attr("global_symbol")
    return f"{tvm_ffi.structural_hash(func):016x}"


def schedule_function(func, target, knob_table: dict[str, ConvKnobs] | None = None):
    """``func`` scheduled by the first matching rule, or unchanged when the rule fails.

    ``knob_table`` maps ``kernel_key``s of conv kernels to pre-tuned knobs (shipped records).
    """
    from tvm import s_tir

    # Rendering a schedule error prints the whole function: only worth it when debugging.
    render = "detail" if LOG.isEnabledFor(logging.DEBUG) else "none"
    sch = s_tir.Schedule(func, error_render_level=render)
    rule = rule_for(sch)
    knobs = (knob_table or {}).get(kernel_key(func)) if rule.name == "blocked_conv" else None
    try:
        if knobs is not None:
            schedule_blocked_conv(sch, target, knobs)
        else:
            rule.apply(sch, target)
    except Exception as exc:  # any schedule error: keep the correct naive loops
        LOG.info("schedule rule %s did not apply (%s); function left unscheduled", rule.name, exc)
        return func
    return sch.mod["main"].with_attr("tirx.is_scheduled", True)


def scheduling_pass(name: str, schedule: Callable[[object], object | None]):
    """A module pass that replaces each not yet scheduled TIR function by ``schedule(func)``.

    ``schedule`` returns the scheduled function, or ``None`` to leave it as it is.
    """
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name=name)
    def _pass(mod, _ctx):
        updates = {}
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc):
                continue
            if func.attrs is not None and "tirx.is_scheduled" in func.attrs:
                continue
            scheduled = schedule(func)
            if scheduled is not None:
                updates[gvar] = scheduled
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod

    return _pass


def schedule_pass(target, knob_table: dict[str, ConvKnobs] | None = None):
    """A module pass that schedules every unscheduled TIR function for a CPU ``target``."""
    return scheduling_pass(
        "ApprenticeCPUSchedule", lambda func: schedule_function(func, target, knob_table)
    )


def fused_module(mod, target):
    """``mod`` after TVM's CPU legalization and operator fusion: the functions to schedule."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    with target:
        passes = cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
        return tvm.transform.Sequential(passes)(mod)


@dataclass
class ScheduleCount:
    """Where the compiled functions' schedules came from (filled by ``cpu_pipeline``)."""

    tuned: int = 0  # the user's tuning database (apprentice-hw tune)
    shipped: int = 0  # conv kernels with pre-tuned knobs from the shipped tables
    default: int = 0  # the default rules

    def describe(self) -> str:
        return (f"schedules: {self.tuned} from your tuning records, {self.shipped} pre-tuned "
                f"(shipped tables), {self.default} default")  # fmt: skip


def _count_sources(mod, knob_table: dict[str, ConvKnobs] | None, count: ScheduleCount) -> None:
    from tvm import tirx

    for _, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        if func.attrs is not None and "tirx.is_scheduled" in func.attrs:
            count.tuned += 1
        elif kernel_key(func) in (knob_table or {}):
            count.shipped += 1
        else:
            count.default += 1


def cpu_pipeline(target, tuned=None, knob_table: dict[str, ConvKnobs] | None = None,
                 count: ScheduleCount | None = None):  # fmt: skip
    """TVM's CPU pipeline with ``schedule_pass`` after operator fusion.

    ``tuned`` (module -> module), when given, runs first on the fused module: it applies tuning
    records, and the functions it schedules are left alone by the default rules.
    ``knob_table`` gives pre-tuned knobs for the conv kernels it names (shipped records).
    ``count``, when given, is filled with where each function's schedule came from.
    """
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu

    @tvm.transform.module_pass(opt_level=0, name="ApprenticeCPUPipeline")
    def _pipeline(mod, _ctx):
        mod = fused_module(mod, target)
        if tuned is not None:
            mod = tuned(mod)
        if count is not None:
            _count_sources(mod, knob_table, count)
        with target:
            passes = [
                schedule_pass(target, knob_table),
                *cpu.dataflow_lower_passes(target),
                *cpu.finalize_passes(target),
            ]
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
