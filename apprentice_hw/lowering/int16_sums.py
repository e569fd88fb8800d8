"""Proof that a conv layer's partial sums fit int16: AVX2's fast integer dot product.

Without VNNI, x86's cheapest exact int8 product is ``vpmaddwd`` on int16 pairs: four multiply
instructions per 16 x 4 weight block and pixel. ``vpmaddubsw`` multiplies unsigned bytes by
signed bytes and adds each pair into an int16 lane: 32 products per instruction, half as many
multiplies again, but it saturates, so it is exact only where no pair and no running sum
leaves int16. Low-bit students are exactly that case: with activation codes of at most
``a_max`` and weights ``w``, a lane's running sum is bounded by ``a_max * sum(|w|)`` over the
products it has added. So a layer whose every lane stays within 32767 for a chunk of ``Q``
input-channel blocks can add ``Q`` blocks of products in int16 and widen to int32 once per
chunk (``kernels.conv2d_int_blocked``'s ``int16_chunk``). The bound uses the layer's actual
weights (known at compile time), so it is a proof for this module, not a heuristic.
"""

from __future__ import annotations

import numpy as np

from apprentice_hw.lowering.packing import BLOCK_IN, BLOCK_OUT, blocked_conv_weights

INT16_MAX = 32767
PAIR = 2  # products ``vpmaddubsw`` adds into one int16 lane
# NEON's smlal multiplies signed bytes, one product per int16 lane: codes up to this value
SIGNED_CODE_MAX = 127


def lane_bounds(weights: np.ndarray, lane_inputs: int = PAIR) -> np.ndarray:
    """sum(|w|) per (output block, input block, output channel, lane), over the kernel window.

    One int16 lane of the kernel holds output channel ``oi``'s products with ``lane_inputs``
    adjacent input channels of each block (AVX2 and NEON's ``mla``: a pair; NEON's ``smlal``:
    one), summed over every kernel position: this is what it adds per input block, in units of
    the largest activation code.
    """
    blocked = blocked_conv_weights(weights, "16x4").astype(np.int64)  # (OB, CB, KH, KW, 64)
    blocks_out, blocks_in = blocked.shape[:2]
    shape = (blocks_out, blocks_in, -1, BLOCK_OUT, BLOCK_IN // lane_inputs, lane_inputs)
    return np.abs(blocked).reshape(shape).sum(axis=(2, 5))  # (OB, CB, 16, 4 / lane_inputs)


def int16_chunk(weights: np.ndarray, act_max: int, group: int = 1, lane_inputs: int = PAIR) -> int:
    """Input blocks per int16 chunk, the most that is proven exact; 0 when none is.

    ``weights`` are the signed (O, C, KH, KW) integers, ``act_max`` the largest activation
    code the kernel multiplies (after any shift to unsigned; the padding value included),
    ``group`` the packed storage's blocks per group (a chunk is a whole number of groups and
    divides the layer's input blocks, so every chunk has the same length) and ``lane_inputs``
    the input channels whose products share an int16 lane.
    """
    if act_max <= 0:
        return 0
    bounds = lane_bounds(weights, lane_inputs) * act_max
    blocks_in = bounds.shape[1]
    for chunk in range(blocks_in, 0, -1):
        if blocks_in % chunk or chunk % group:
            continue
        per_chunk = bounds.reshape(bounds.shape[0], blocks_in // chunk, chunk, *bounds.shape[2:])
        if int(per_chunk.sum(axis=2).max(initial=0)) <= INT16_MAX:
            return chunk
    return 0
