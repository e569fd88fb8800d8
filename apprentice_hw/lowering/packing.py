"""Packing of low-bit integer weights into bytes, and bit planes for bit-serial kernels.

Weights are stored at the precision they were trained at: a signed value ``v`` of ``bits`` bits is
stored as the unsigned code ``v + 2**(bits - 1)`` in a container of 2, 4 or 8 bits, several
containers per byte, lowest bits first. Offset codes (rather than two's complement) make
unpacking one shift, one mask and one subtraction, which vectorizes well on every target.

Bit-serial kernels instead want each weight as a sum of single-bit planes with coefficients; a
ternary weight is ``(+1) * [w == +1] + (-1) * [w == -1]``, any other signed value its two's
complement bits (the top plane with a negative coefficient).
"""

from __future__ import annotations

import numpy as np

CONTAINER_BITS = {1: 2, 2: 2, 3: 4, 4: 4, 5: 8, 6: 8, 7: 8, 8: 8}


def signed_bits_needed(values: np.ndarray) -> int:
    """The fewest two's-complement bits that hold every value (at least 2: sign plus magnitude)."""
    low, high = int(values.min(initial=0)), int(values.max(initial=0))
    bits = 2
    while low < -(1 << (bits - 1)) or high > (1 << (bits - 1)) - 1:
        bits += 1
    return bits


def container_bits(bits: int) -> int:
    """The storage width for ``bits``-bit values: 2, 4 or 8 (widths that divide a byte)."""
    if bits not in CONTAINER_BITS:
        raise ValueError(f"cannot pack {bits}-bit values; 1 to 8 bits are supported")
    return CONTAINER_BITS[bits]


def pack_flat(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack every value of ``values`` (row-major) into one uint8 vector, no padding between
    rows: a depthwise conv's 3x3 rows of 2-bit weights take 2.25 bytes each, not 3."""
    return pack_rows(np.asarray(values).reshape(1, -1), bits).reshape(-1)


def values_per_byte(bits: int) -> int:
    return 8 // container_bits(bits)


def packed_row_bytes(length: int, bits: int) -> int:
    """Bytes one packed row of ``length`` values takes."""
    per_byte = values_per_byte(bits)
    return -(-length // per_byte)


def pack_rows(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack a (rows, length) integer array of signed ``bits``-bit values into uint8 rows.

    A row's tail that does not fill a byte is padded with the code of zero.
    """
    values = np.asarray(values)
    if values.ndim != 2:
        raise ValueError("pack_rows wants a 2-D (rows, length) array")
    width = container_bits(bits)
    offset = 1 << (width - 1)
    if values.size and (values.min() < -offset or values.max() > offset - 1):
        raise ValueError(f"values outside the signed {width}-bit range cannot be packed")
    per_byte = 8 // width
    rows, length = values.shape
    padded = np.zeros((rows, packed_row_bytes(length, bits) * per_byte), dtype=np.int64)
    padded[:, :length] = values
    codes = (padded + offset).astype(np.uint16).reshape(rows, -1, per_byte)
    shifts = (np.arange(per_byte, dtype=np.uint16) * width)[None, None, :]
    return np.bitwise_or.reduce(codes << shifts, axis=2).astype(np.uint8)


def unpack_rows(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Inverse of :func:`pack_rows`: int8 array of shape (rows, length)."""
    width = container_bits(bits)
    offset = 1 << (width - 1)
    per_byte = 8 // width
    shifts = (np.arange(per_byte, dtype=np.uint16) * width)[None, None, :]
    codes = (packed.astype(np.uint16)[:, :, None] >> shifts) & ((1 << width) - 1)
    values = codes.reshape(packed.shape[0], -1)[:, :length].astype(np.int16) - offset
    return values.astype(np.int8)


def weight_planes(values: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Split signed integer weights into (coefficient, 0/1 mask) planes that sum back to them."""
    values = np.asarray(values).astype(np.int64)
    if values.min(initial=0) >= -1 and values.max(initial=0) <= 1:
        return [(1, (values == 1).astype(np.uint8)), (-1, (values == -1).astype(np.uint8))]
    bits = signed_bits_needed(values)
    twos = values & ((1 << bits) - 1)
    planes = []
    for plane in range(bits):
        coefficient = -(1 << plane) if plane == bits - 1 else 1 << plane
        planes.append((coefficient, ((twos >> plane) & 1).astype(np.uint8)))
    return planes


def pack_channel_bits(masks: np.ndarray) -> np.ndarray:
    """Pack 0/1 masks of shape (O, C, KH, KW) into bytes along C: (O, ceil(C/8), KH, KW).

    Bit ``i`` of byte ``w`` holds channel ``8 * w + i``; missing channels are zero.
    """
    out_ch, in_ch, kh, kw = masks.shape
    words = -(-in_ch // 8)
    padded = np.zeros((out_ch, words * 8, kh, kw), dtype=np.uint8)
    padded[:, :in_ch] = masks
    grouped = padded.reshape(out_ch, words, 8, kh, kw).astype(np.uint16)
    shifts = np.arange(8, dtype=np.uint16)[None, None, :, None, None]
    return np.bitwise_or.reduce(grouped << shifts, axis=2).astype(np.uint8)


# -- conv weight planes in the blocks of the bit-serial kernel ---------------------------------
BITSERIAL_OUT = 8  # output channels per block: one vector of eight 16-bit counts
BITSERIAL_IN = 16  # input channels per block: two bytes of each plane, one 16-bit broadcast


def bitserial_conv_weights(weights: np.ndarray) -> tuple[tuple[int, ...], np.ndarray]:
    """Conv weights (O, C, KH, KW) as bit planes in the bit-serial kernel's blocks.

    Returns the planes' coefficients (``weight_planes``) and a uint8 array of shape
    (O/8, C/16, KH, KW, P, 8, 2): for each block of 8 output x 16 input channels, kernel
    position and plane, the 16 bytes the kernel ANDs with one broadcast pair of activation
    bytes (byte ``t`` of output channel ``oi`` holds input channels 8t..8t+7, lowest bit
    first). Padded channels are zero in every plane, so they add nothing.
    """
    planes = weight_planes(weights)
    out_ch, in_ch, kh, kw = weights.shape
    blocks_out = -(-out_ch // BITSERIAL_OUT)
    blocks_in = -(-in_ch // BITSERIAL_IN)
    stacked = []
    for _, mask in planes:
        padded = np.zeros((blocks_out * BITSERIAL_OUT, blocks_in * BITSERIAL_IN, kh, kw), np.uint8)
        padded[:out_ch, :in_ch] = mask
        stacked.append(pack_channel_bits(padded))  # (O', C'/8, KH, KW)
    grid = np.stack(stacked).reshape(len(planes), blocks_out, BITSERIAL_OUT, blocks_in, 2, kh, kw)
    blocked = grid.transpose(1, 3, 5, 6, 0, 2, 4)  # (OB, CB, KH, KW, P, 8, 2)
    return tuple(coefficient for coefficient, _ in planes), np.ascontiguousarray(blocked)


# -- conv weights in the blocked order of the int8 dot-product kernels ------------------------
BLOCK_OUT = 16  # output channels per block: one 512-bit register of int32 accumulators
BLOCK_IN = 4  # input channels per block: the four uint8 x int8 products one lane sums
BLOCK = BLOCK_OUT * BLOCK_IN  # weights per (output block, input block, ky, kx)
DOT_ORDERS = ("16x4", "pairs")


def block_element(oi: int, ci: int, order: str) -> int:
    """Where weight (output channel ``oi``, input channel ``ci``) of a block sits among its 64.

    ``16x4`` is VNNI's order (each output channel's four inputs together); ``pairs`` is the
    order of AVX2's ``vpmaddwd`` on int16 pairs: [input pair][output channel][channel in pair].
    """
    if order == "pairs":
        return (ci // 2) * 2 * BLOCK_OUT + oi * 2 + ci % 2
    return oi * BLOCK_IN + ci


def blocked_conv_weights(values: np.ndarray, order: str = "16x4") -> np.ndarray:
    """(O, C, KH, KW) signed weights as int8 blocks: (O/16, C/4, KH, KW, 64) in ``order``.

    Channel counts that are not whole blocks are padded with zero weights: the module stores
    the padding, which keeps every block one aligned vector load.
    """
    values = np.asarray(values)
    out_ch, in_ch, kh, kw = values.shape
    blocks_out, blocks_in = -(-out_ch // BLOCK_OUT), -(-in_ch // BLOCK_IN)
    padded = np.zeros((blocks_out * BLOCK_OUT, blocks_in * BLOCK_IN, kh, kw), dtype=np.int64)
    padded[:out_ch, :in_ch] = values
    # (ob, oi, cb, ci, ky, kx) -> (ob, cb, ky, kx, oi, ci)
    grouped = padded.reshape(blocks_out, BLOCK_OUT, blocks_in, BLOCK_IN, kh, kw)
    grouped = grouped.transpose(0, 2, 4, 5, 1, 3)
    blocked = np.zeros((blocks_out, blocks_in, kh, kw, BLOCK), dtype=np.int8)
    for oi in range(BLOCK_OUT):
        for ci in range(BLOCK_IN):
            blocked[..., block_element(oi, ci, order)] = grouped[..., oi, ci]
    return blocked


GROUPED_WIDTHS = (2,)  # container widths packed across input blocks (see ``pack_blocked``)


def blocks_per_group(bits: int, blocks_in: int | None = None) -> int:
    """Input-channel blocks that share the bytes of one packed group (``pack_blocked``).

    2-bit weights share 64 bytes among four blocks; a layer whose input blocks are not a
    multiple of four takes groups of two or one (16 or 32 bytes per block and field) instead
    of padding with zero blocks: a 3-channel 2-bit first conv stored four times its weights.
    """
    width = container_bits(bits)
    group = 8 // width if width in GROUPED_WIDTHS else 1
    while blocks_in is not None and group > 1 and blocks_in % group:
        group //= 2
    return group


def group_bytes(bits: int, group: int | None = None) -> int:
    """Bytes of one packed group: G blocks of 64 weights at the container width."""
    group = blocks_per_group(bits) if group is None else group
    return BLOCK * group * container_bits(bits) // 8


def packed_field(cb, element, bits: int, group: int | None = None):
    """(byte within the group, field within the byte) of ``element`` of input block ``cb``,
    in groups of ``group`` blocks (default: the widest, ``blocks_per_group(bits)``).

    Works on integers and on TVM index expressions alike.
    """
    fields = 8 // container_bits(bits)
    group = blocks_per_group(bits) if group is None else group
    parts = fields // group  # fields of one block within a byte
    length = BLOCK // parts  # bytes of a group: each holds one element of each part
    return element % length, (cb % group) * parts + element // length


def packed_group(packed_bytes: int, bits: int) -> int:
    """The blocks per group of packed storage whose groups are ``packed_bytes`` long."""
    return packed_bytes * 8 // (container_bits(bits) * BLOCK)


def pack_blocked(blocked: np.ndarray, bits: int) -> np.ndarray:
    """Pack int8 blocks (O/16, C/4, KH, KW, 64) at ``bits``: (O/16, C/4/G, KH, KW, L) uint8.

    Each byte holds ``8 / width`` fields, lowest first, as offset codes ``v + 2**(w-1)``, laid
    out so that unpacking is a shift, a mask and a subtraction on contiguous vectors:

    * 4-bit (G = 1, L = 32): byte ``l`` of a block holds its elements ``l`` and ``l + 32``;
    * 2-bit (G = 4, L = 64): four consecutive input blocks share 64 bytes, byte ``e`` holding
      element ``e`` of each, so a block unpacks into one whole 64-byte vector that the dot
      products load as it was stored (a block assembled from four 16-byte pieces stalled that
      load: ResNet-20 W2A2 1.26x -> 1.06x the W8A8 time; for 4-bit the whole-vector form was
      measured slower). Where the input blocks are not a multiple of four, groups of two
      (L = 32) or one (L = 16) block (``blocks_per_group``), so G divides the blocks.
    """
    width = container_bits(bits)
    offset = 1 << (width - 1)
    if blocked.size and (blocked.min() < -offset or blocked.max() > offset - 1):
        raise ValueError(f"values outside the signed {width}-bit range cannot be packed")
    blocks_out, blocks_in, kh, kw, _ = blocked.shape
    group = blocks_per_group(bits, blocks_in)
    groups = -(-blocks_in // group)
    codes = np.full((blocks_out, groups * group, kh, kw, BLOCK), offset, dtype=np.int64)
    codes[:, :blocks_in] = blocked.astype(np.int64) + offset
    packed = np.zeros((blocks_out, groups, kh, kw, group_bytes(bits, group)), dtype=np.int64)
    for cb in range(group):
        for element in range(BLOCK):
            byte, field = packed_field(cb, element, bits, group)
            packed[..., byte] |= codes[:, cb::group, :, :, element] << (field * width)
    return packed.astype(np.uint8)


def unpack_blocked(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_blocked`: the int8 blocks (O/16, C/4, KH, KW, 64)."""
    width = container_bits(bits)
    offset, mask = 1 << (width - 1), (1 << width) - 1
    blocks_out, groups, kh, kw, length = packed.shape
    group = packed_group(length, bits)
    blocks = np.zeros((blocks_out, groups * group, kh, kw, BLOCK), dtype=np.int16)
    for cb in range(group):
        for element in range(BLOCK):
            byte, field = packed_field(cb, element, bits, group)
            codes = (packed[..., byte].astype(np.int16) >> (field * width)) & mask
            blocks[:, cb::group, :, :, element] = codes - offset
    return blocks.astype(np.int8)
