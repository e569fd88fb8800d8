"""TE compute definitions of the integer kernels the lowering emits.

All kernels take the quantized activation tensor as stored (uint8 or int8 codes), account for
its zero point, accumulate in int32 and return the exact integer sum; scaling back to real
values happens outside, in the requantization the compiler fuses with what follows. Padding
uses the zero point as the pad value, so padded positions contribute exactly zero, as they do
in the float graph.

Weights arrive in one of three storage forms, matching the kernel strategies:
``int8`` (one byte per weight), ``packed`` (2 or 4 bits per weight, see ``packing``), and
``bitplanes`` (single-bit planes packed along input channels, for bit-serial popcount kernels).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from apprentice_hw.lowering.packing import (
    BLOCK_IN,
    BLOCK_OUT,
    block_element,
    blocks_per_group,
    container_bits,
    packed_field,
    packed_group,
)


@dataclass(frozen=True)
class ConvGeometry:
    """Static shape parameters of a 2-D convolution (OIHW weights) and its data layout."""

    out_channels: int
    in_channels: int
    kernel: tuple[int, int]
    strides: tuple[int, int]
    padding: tuple[int, int, int, int]  # top, left, bottom, right
    dilation: tuple[int, int]
    layout: str = "NCHW"  # of the input and the output: NCHW, or NHWC (``channels_last``)
    groups: int = 1  # input and output channels split into this many independent convs

    def data_shape(self, data) -> tuple[int, int, int, int]:
        """(batch, channels, height, width) of a ``layout`` tensor."""
        shape = tuple(int(d) for d in data.shape)
        if self.layout == "NHWC":
            return shape[0], shape[3], shape[1], shape[2]
        return shape

    def read(self, data, n, c, y, x):
        """``data`` at batch ``n``, channel ``c``, row ``y``, column ``x``."""
        return data[n, y, x, c] if self.layout == "NHWC" else data[n, c, y, x]

    def output_shape(self, batch: int, out_h: int, out_w: int) -> tuple[int, int, int, int]:
        if self.layout == "NHWC":
            return batch, out_h, out_w, self.out_channels
        return batch, self.out_channels, out_h, out_w

    def output_index(self, index) -> tuple:
        """(n, o, i, j) from an output index in ``layout``."""
        if self.layout == "NHWC":
            n, i, j, o = index
            return n, o, i, j
        return tuple(index)

    @property
    def folds_columns(self) -> bool:
        """Whether the blocked integer conv reduces over (kernel column, channel) pairs.

        A layer with few input channels (an RGB stem: 3) pads every pixel's channels to a
        whole block of four, so a quarter of its products multiply zeros. In NHWC a kernel
        row's columns are adjacent pixels, so (column, channel) is one contiguous run of
        ``kw * C`` codes (dilation 1): reduced as channels of a 1-wide kernel, only that run
        is padded (ResNet-18's 7x7 stem: 6 blocks per kernel row instead of 7).
        """
        kw, channels = self.kernel[1], self.in_channels
        blocks = -(-channels * kw // BLOCK_IN)
        contiguous = self.layout == "NHWC" and self.dilation[1] == 1 and self.groups == 1
        return contiguous and kw > 1 and blocks < kw * -(-channels // BLOCK_IN)

    def folded(self) -> ConvGeometry:
        """The geometry of the folded reduction: ``kw * C`` channels, a 1-wide kernel with
        stride 1 over the output's columns (``conv2d_int_blocked`` gathers them)."""
        (kh, kw), (sh, _), (dh, _) = self.kernel, self.strides, self.dilation
        top, _, bottom, _ = self.padding
        return replace(self, in_channels=self.in_channels * kw, kernel=(kh, 1), strides=(sh, 1),
                       padding=(top, 0, bottom, 0), dilation=(dh, 1))  # fmt: skip

    def output_hw(self, height: int, width: int) -> tuple[int, int]:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel, self.strides, self.dilation
        top, left, bottom, right = self.padding
        out_h = (height + top + bottom - dh * (kh - 1) - 1) // sh + 1
        out_w = (width + left + right - dw * (kw - 1) - 1) // sw + 1
        return out_h, out_w


def _dense_weight_reader(weights, storage: str, bits: int):
    """A function (o, k) -> int32 weight reading (O, K) rows: int8, or packed by ``pack_rows``."""
    from tvm import tirx

    if storage == "int8":
        return lambda o, k: weights[o, k].astype("int32")
    width = container_bits(bits)
    per_byte, mask, offset = 8 // width, (1 << width) - 1, 1 << (width - 1)

    def read(o, k):
        byte = weights[o, tirx.indexdiv(k, per_byte)].astype("int32")
        return ((byte >> (tirx.indexmod(k, per_byte) * width)) & mask) - offset

    return read


VNNI_LANES = BLOCK_OUT  # output channels per block: one 512-bit register of int32 accumulators
VNNI_DEPTH = BLOCK_IN  # input channels per block: the four uint8 x int8 products one lane sums


def _blocked_weight_reader(weights, storage: str, bits: int, order: str):
    """(ob, cb, ky, kx, oi, ci) -> int8 weight, from conv weights stored in blocks.

    ``int8`` storage is (O/16, C/4, KH, KW, 16, 4), or (..., 2, 16, 2) in AVX2's pair order;
    ``packed`` storage is (O/16, C/4/G, KH, KW, L) bytes holding ``width``-bit fields of G
    consecutive input blocks (``packing.pack_blocked``).
    """
    from tvm import tirx

    if storage == "int8":
        if order == "pairs":
            return lambda ob, cb, y, x, oi, ci: weights[ob, cb, y, x, ci // 2, oi, ci % 2]
        return lambda ob, cb, y, x, oi, ci: weights[ob, cb, y, x, oi, ci]
    width = container_bits(bits)
    group = packed_group(int(weights.shape[-1]), bits)
    mask, offset = (1 << width) - 1, 1 << (width - 1)

    def read(ob, cb, y, x, oi, ci):
        # In bytes throughout: whole vectors per field for the kernel to unpack.
        at, field = packed_field(cb, block_element(oi, ci, order), bits, group)
        byte = weights[ob, tirx.indexdiv(cb, group), y, x, at]
        return ((byte >> (field * width).astype("uint8")) & mask).astype("int8") - tirx.const(
            offset, "int8"
        )

    return read


def column_weight_reader(weights, bits: int, columns: int, storage: str):
    """A function (o, k) -> int32 weight from (K, O) storage: for each of the K positions of
    an output's window, the weights of every output channel side by side (``columns`` = O),
    so a vector of output channels reads contiguous weights. int8 storage is the (K, O)
    array; packed storage is ``packing.pack_flat`` of it, ``container_bits(bits)`` each."""
    from tvm import tirx

    if storage == "int8":
        return lambda o, k: weights[k, o].astype("int32")
    width = container_bits(bits)
    per_byte, mask, offset = 8 // width, (1 << width) - 1, 1 << (width - 1)

    def read(o, k):
        at = k * columns + o
        byte = weights[tirx.indexdiv(at, per_byte)].astype("int32")
        return ((byte >> (tirx.indexmod(at, per_byte) * width)) & mask) - offset

    return read


def window_sums(data, geometry: ConvGeometry | None, zero_point: int):
    """int32 sum of (data - zero_point) over each output's inputs: (N, OH, OW, 1) / (N, 1, OH,
    OW) for a conv (padding adds zero), (N, 1) for a dense layer (``geometry`` None).

    What a weight offset multiplies: sum(x * (w + c)) = sum(x * w) + c * sum(x), so 9-bit
    weights (uint8 codes minus a zero point) run as int8 ones plus this, with no weights."""
    from tvm import te, tirx

    zero = tirx.const(zero_point, "int32")
    if geometry is None:
        rk = te.reduce_axis((0, int(data.shape[1])), name="rk")
        return te.compute((int(data.shape[0]), 1), lambda n, _o: te.sum(
            data[n, rk].astype("int32") - zero, axis=rk), name="window_sums")  # fmt: skip
    batch, channels, height, width = geometry.data_shape(data)
    out_h, out_w = geometry.output_hw(height, width)
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.strides, geometry.dilation
    top, left, _, _ = geometry.padding
    rc = te.reduce_axis((0, channels), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def total(*index):
        n, _o, i, j = geometry.output_index(index)
        y, x = i * sh + ry * dh - top, j * sw + rx * dw - left
        inside = tirx.all(y >= 0, y < height, x >= 0, x < width)
        code = geometry.read(data, n, rc, tirx.max(tirx.min(y, height - 1), 0),
                             tirx.max(tirx.min(x, width - 1), 0))  # fmt: skip
        value = tirx.if_then_else(inside, code.astype("int32") - zero, tirx.const(0, "int32"))
        return te.sum(value, axis=[rc, ry, rx])

    shape = (batch, out_h, out_w, 1) if geometry.layout == "NHWC" else (batch, 1, out_h, out_w)
    return te.compute(shape, total, name="window_sums")


def conv2d_int_grouped(data, weights, geometry: ConvGeometry, zero_point: int, storage: str,
                       bits: int):  # fmt: skip
    """Integer grouped (and depthwise) conv2d: int32 sum of (data - zero_point) * weight over
    the channels of the output channel's group and the kernel window.

    The blocked kernels reduce over blocks of four input channels shared by sixteen output
    channels; a depthwise conv has one input channel per output channel, so it is a plain
    loop nest instead: ``pad_grouped`` (the codes padded with the zero point, so padded
    positions add exactly zero) and ``conv2d_grouped``. Weights are read from (K, O) columns,
    K = C/groups x KH x KW (``column_weight_reader``): the CPU schedule vectorizes over the
    output channels.
    """
    from tvm import te, tirx

    batch, channels, height, width = geometry.data_shape(data)
    out_h, out_w = geometry.output_hw(height, width)
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.strides, geometry.dilation
    top, left, bottom, right = geometry.padding
    per_group_in = channels // geometry.groups
    per_group_out = geometry.out_channels // geometry.groups
    weight = column_weight_reader(weights, bits, geometry.out_channels, storage)
    zero = tirx.const(zero_point, "int32")

    def pad_value(*index):
        n, c, y, x = geometry.output_index(index)
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        value = geometry.read(data, n, c, y - top, x - left).astype("int32")
        return tirx.if_then_else(inside, value, zero)

    rows, columns = height + top + bottom, width + left + right
    shape = (batch, rows, columns, channels) if geometry.layout == "NHWC" else (
        batch, channels, rows, columns)  # fmt: skip
    padded = te.compute(
        shape, pad_value, name="pad_grouped", attrs={"layout": geometry.layout}
    )  # what the CPU schedule reads
    rc = te.reduce_axis((0, per_group_in), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def conv(*index):
        n, o, i, j = geometry.output_index(index)
        c = tirx.indexdiv(o, per_group_out) * per_group_in + rc
        code = geometry.read(padded, n, c, i * sh + ry * dh, j * sw + rx * dw)
        return te.sum((code - zero) * weight(o, (rc * kh + ry) * kw + rx), axis=[rc, ry, rx])

    return te.compute(
        geometry.output_shape(batch, out_h, out_w), conv, name="conv2d_grouped",
        tag=f"conv2d_int_grouped_{storage}",
    )  # fmt: skip


def conv2d_int_blocked(data, weights, geometry: ConvGeometry, zero_point: int, storage: str,
                       bits: int, weight_sums=None, order: str = "16x4",
                       int16_chunk: int = 0, lane_inputs: int = 2,
                       signed_codes: bool = False, code_shift: int | None = None,
                       wide_pairs: bool = False):  # fmt: skip
    """Integer conv2d: int32 sum of (data - zero_point) * weight over (c, ky, kx).

    Computed in the blocked layout of int8 dot-product instructions (VNNI, vpmaddwd, SDOT), as
    stages the CPU schedules can vectorize:

    * ``pad_blocked``: activation codes as unsigned bytes, (N, C/4, H+pad, W+pad, 4), or
      (N, H+pad, W+pad, C/4, 4) for NHWC data (a copy of whole pixels), padded with the zero
      point (int8 codes are shifted by 128 first, zero point with them);
    * ``weight_blocked``: one block of weights (16 output x 4 input channels) as int8, read
      from storage already laid out in blocks (``packing.blocked_conv_weights``; padded
      channels hold zero weights): for ``int8`` storage a plain read the schedules inline, for
      ``packed`` a shift and a mask that they compute in registers next to the dot products;
    * ``conv_blocked``: the uint8 x int8 -> int32 sum over (c/4, ky, kx, 4) for 16 output
      channels at once, then ``conv2d_int`` subtracts zero point x sum(weights) per channel
      (the padding was filled with the zero point, so this is exact everywhere), in the data's
      layout (NHWC: each pixel's sixteen channels are one contiguous vector).

    Where the geometry folds kernel columns into channels (``ConvGeometry.folds_columns``:
    NHWC, few input channels), ``pad_blocked`` is (N, H+pad, OW, (KW*C)/4, 4): for each output
    column the codes its kernel row covers, column by column, gathered from ``pad_rows`` (the
    zero-point-padded input), and the products are summed over a 1-wide kernel (weights from
    ``QuantLayer.kernel_weights``).

    ``order`` is the order of each block's 64 weights in storage (``packing.DOT_ORDERS``):
    VNNI's ``16x4`` or AVX2's ``pairs``.

    With ``int16_chunk`` Q > 0 (proven safe by ``int16_sums``; 16x4 order), ``conv_blocked``
    is computed in two stages, as AVX2's ``vpmaddubsw`` does it: ``conv_int16`` sums the
    products of Q input blocks in int16, per output channel and pair of input channels
    (``vpmaddubsw`` adds each pair into one lane), and ``conv_blocked`` adds those partial sums
    in int32 (``vpmaddwd`` by ones). ``lane_inputs`` is the input channels of a block whose
    products share one int16 lane: 2 (the pairs above; NEON's 16-bit ``mla``) or 1 (NEON's
    ``smlal``, one product per lane).

    With ``wide_pairs`` (signed codes), the same two stages sum pairs of products in int32
    lanes instead, over the whole reduction (one chunk): NEON's ``smull`` makes eight exact
    int16 products of signed bytes and ``sadalp`` adds them pairwise into int32 lanes, exact
    for every 8-bit layer where int16 sums are not proven.

    With ``signed_codes``, ``pad_blocked`` holds signed bytes for signed-byte instructions
    (SDOT, ``smlal``): the codes plus ``code_shift`` (-128 where uint8 codes exceed 127, so
    they fit; the zero point x weight sums correction takes the shift back out). It becomes
    an attribute of that block, which the schedules read; it is left out otherwise, so other
    kernels keep their structural hash (the key of shipped tuning tables). Without it, codes
    are unsigned bytes: int8 codes shifted by 128 (``code_shift`` None: that default).
    """
    from tvm import te, tirx

    batch, channels, height, width = geometry.data_shape(data)
    out_h, out_w = geometry.output_hw(height, width)
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.strides, geometry.dilation
    top, left, bottom, right = geometry.padding
    fold = geometry.folds_columns
    reduced = geometry.folded() if fold else geometry  # what the products are summed over
    blocks_in = -(-reduced.in_channels // VNNI_DEPTH)
    if storage == "packed":  # whole groups of blocks (``packing.pack_blocked``)
        group = blocks_per_group(bits, blocks_in)
        blocks_in = -(-blocks_in // group) * group
    blocks_out = -(-geometry.out_channels // VNNI_LANES)
    shift = code_shift if code_shift is not None else (128 if data.dtype == "int8" else 0)
    zero = zero_point + shift
    operand = "int8" if signed_codes else "uint8"
    rows, columns = height + top + bottom, width + left + right
    nhwc = geometry.layout == "NHWC"
    signed = {"signed_codes": 1} if signed_codes else {}

    def pad_value(n, cb, y, x, ci):
        c = cb * VNNI_DEPTH + ci
        inside = tirx.all(c < channels, y >= top, y < height + top, x >= left, x < width + left)
        value = geometry.read(data, n, tirx.min(c, channels - 1), y - top, x - left)
        return tirx.if_then_else(inside, value.astype("int32") + shift, zero).astype(operand)

    if fold:
        padded = _folded_padding(data, geometry, blocks_in, shift, zero, operand, signed)

        def padded_at(n, cb, y, x, ci):
            return padded[n, y, x, cb, ci]
    elif nhwc:
        padded = te.compute(
            (batch, rows, columns, blocks_in, VNNI_DEPTH),
            lambda n, y, x, cb, ci: pad_value(n, cb, y, x, ci), name="pad_blocked",
            attrs={"layout": "NHWC", **signed},  # what the schedules read
        )  # fmt: skip

        def padded_at(n, cb, y, x, ci):
            return padded[n, y, x, cb, ci]
    else:
        padded = te.compute(
            (batch, blocks_in, rows, columns, VNNI_DEPTH), pad_value, name="pad_blocked",
            **({"attrs": signed} if signed else {}),
        )  # fmt: skip

        def padded_at(n, cb, y, x, ci):
            return padded[n, cb, y, x, ci]

    (kh, kw), (sh, sw), (dh, dw) = reduced.kernel, reduced.strides, reduced.dilation
    decoded = te.compute(
        (blocks_out, blocks_in, kh, kw, VNNI_LANES, VNNI_DEPTH),
        _blocked_weight_reader(weights, storage, bits, order), name="weight_blocked",
    )  # fmt: skip
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    if wide_pairs:
        accumulated = _int16_chunked_sums(padded_at, decoded, reduced, (batch, out_h, out_w),
                                          blocks_in, blocks_in, 2, lane_dtype="int32")  # fmt: skip
        return _unblocked(accumulated, geometry, zero, weight_sums, storage)
    if int16_chunk:
        if blocks_in % int16_chunk:  # int16_sums chooses chunks that divide the blocks
            raise ValueError(f"an int16 chunk of {int16_chunk} blocks does not divide {blocks_in}")
        accumulated = _int16_chunked_sums(padded_at, decoded, reduced, (batch, out_h, out_w),
                                          blocks_in, int16_chunk, lane_inputs)  # fmt: skip
        return _unblocked(accumulated, geometry, zero, weight_sums, storage)
    rc = te.reduce_axis((0, blocks_in), name="rc")
    ri = te.reduce_axis((0, VNNI_DEPTH), name="ri")
    accumulated = te.compute(
        (batch, blocks_out, out_h, out_w, VNNI_LANES),
        lambda n, ob, i, j, oi: te.sum(
            padded_at(n, rc, i * sh + ry * dh, j * sw + rx * dw, ri).astype("int32")
            * decoded[ob, rc, ry, rx, oi, ri].astype("int32"),
            axis=[rc, ry, rx, ri],
        ),
        name="conv_blocked",
    )
    return _unblocked(accumulated, geometry, zero, weight_sums, storage)


def _folded_padding(data, geometry: ConvGeometry, blocks_in: int, shift: int, zero: int,
                    operand: str, signed: dict):  # fmt: skip
    """``pad_blocked`` of a conv that folds kernel columns into channels (NHWC, dilation 1):
    for each output column, the ``blocks_in * 4`` codes from its first kernel column on.

    Two stages, so that both run as plain copies: ``pad_rows`` pads the input with the zero
    point (rows, columns and enough columns on the right for the last output column's
    whole blocks); ``pad_blocked`` reads one contiguous run of it per output column. Codes
    past the kernel's ``kw * C`` are whatever follows: their weights are zero. (Padding
    and gathering in one stage was a scalar loop with a division per code: 3.5 M modeled
    cycles for ResNet-18's stem on the Cortex-A72, as much as the fold saved.)
    """
    from tvm import te, tirx

    batch, channels, height, width = geometry.data_shape(data)
    _, out_w = geometry.output_hw(height, width)
    top, left, bottom, right = geometry.padding
    step = geometry.strides[1] * channels  # codes from one output column's window to the next
    run = blocks_in * VNNI_DEPTH
    columns = max(width + left + right, -(-((out_w - 1) * step + run) // channels))

    def pad_value(n, y, x, c):
        inside = tirx.all(y >= top, y < height + top, x >= left, x < width + left)
        value = geometry.read(data, n, c, y - top, x - left)
        return tirx.if_then_else(inside, value.astype("int32") + shift, zero).astype(operand)

    rows = te.compute((batch, height + top + bottom, columns, channels), pad_value,
                      name="pad_rows")  # fmt: skip

    def gather(n, y, x, cb, ci):
        at = x * step + cb * VNNI_DEPTH + ci  # in the padded row; flattened, a plain offset
        return rows[n, y, tirx.indexdiv(at, channels), tirx.indexmod(at, channels)]

    return te.compute(
        (batch, height + top + bottom, out_w, blocks_in, VNNI_DEPTH), gather,
        name="pad_blocked", attrs={"layout": "NHWC", **signed},
    )  # fmt: skip


def _int16_chunked_sums(padded_at, decoded, geometry: ConvGeometry, out: tuple[int, int, int],
                        blocks_in: int, chunk: int, lane_inputs: int,
                        lane_dtype: str = "int16"):  # fmt: skip
    """``conv_blocked`` from int16 partial sums over chunks of ``chunk`` input blocks, one
    int16 lane per output channel and ``lane_inputs`` adjacent input channels (``lane_dtype``
    int32: the wide pairs' lanes)."""
    from tvm import te

    batch, out_h, out_w = out
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.strides, geometry.dilation
    blocks_out = int(decoded.shape[0])
    rq = te.reduce_axis((0, chunk), name="rq")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rr = te.reduce_axis((0, lane_inputs), name="rr")

    def product(n, q, y, x, ob, oi, ci):
        cb = q * chunk + rq
        code = padded_at(n, cb, y * sh + ry * dh, x * sw + rx * dw, ci).astype(lane_dtype)
        return code * decoded[ob, cb, ry, rx, oi, ci].astype(lane_dtype)

    partial = te.compute(
        (batch, blocks_out, out_h, out_w, blocks_in // chunk, VNNI_LANES,
         VNNI_DEPTH // lane_inputs),
        lambda n, ob, i, j, q, oi, p: te.sum(
            product(n, q, i, j, ob, oi, p * lane_inputs + rr), axis=[rq, ry, rx, rr]
        ),
        name="conv_int16",
    )  # fmt: skip
    rc = te.reduce_axis((0, blocks_in // chunk), name="rc")
    rp = te.reduce_axis((0, VNNI_DEPTH // lane_inputs), name="rp")
    return te.compute(
        (batch, blocks_out, out_h, out_w, VNNI_LANES),
        lambda n, ob, i, j, oi: te.sum(
            partial[n, ob, i, j, rc, oi, rp].astype("int32"), axis=[rc, rp]
        ),
        name="conv_blocked",
    )  # fmt: skip


def _unblocked(accumulated, geometry: ConvGeometry, zero: int, weight_sums, storage: str):
    """``conv2d_int``: the blocked sums in the data's layout, zero point x weight sums off."""
    from tvm import te, tirx

    batch, _, out_h, out_w, _ = (int(d) for d in accumulated.shape)

    def unblock(*index):
        n, o, i, j = geometry.output_index(index)
        value = accumulated[n, tirx.indexdiv(o, VNNI_LANES), i, j, tirx.indexmod(o, VNNI_LANES)]
        return value if weight_sums is None else value - zero * weight_sums[o]

    return te.compute(
        geometry.output_shape(batch, out_h, out_w), unblock, name="conv2d_int",
        tag=f"conv2d_int_blocked_{storage}",
    )  # fmt: skip


def dense_int(data, weights, out_features: int, in_features: int, zero_point: int,
              storage: str, bits: int):  # fmt: skip
    """Integer dense: out[n, o] = sum_k (data[n, k] - zero_point) * W[o, k], in int32."""
    from tvm import te

    weight = _dense_weight_reader(weights, storage, bits)
    rk = te.reduce_axis((0, in_features), name="rk")
    batch = int(data.shape[0])
    return te.compute(
        (batch, out_features),
        lambda n, o: te.sum((data[n, rk].astype("int32") - zero_point) * weight(o, rk), axis=rk),
        name="dense_int" if storage == "int8" else "dense_int_packed",
        tag=f"dense_int_{storage}",
    )


def conv2d_bitserial(data, planes, coefficients: tuple[int, ...], geometry: ConvGeometry,
                     act_bits: int, out_dtype: str = "int32"):  # fmt: skip
    """Bit-serial conv2d for unsigned ``act_bits``-bit activations (zero point 0).

    Each output is sum_p coef_p * sum_b 2^b * popcount(activation plane b & weight plane p),
    over input channels and kernel positions: exact, since a code is sum_b 2^b x bit b and a
    weight sum_p coef_p x mask p (``packing.weight_planes``). As stages the schedules read:

    * ``code_bits``: bit b of each code, padded with 0 (the zero point), channels to a
      multiple of 16;
    * ``bitpack_data``: the bit planes, (N, H+pad, W+pad, C/16, B, 2) (a 1x1 kernel without
      padding: (N, OH, OW, C/16, B, 2), the pixels it reads): for each pixel,
      block of 16 input channels and bit b, two bytes, channel 8t+i in bit i of byte t;
    * ``conv_bits``: per (pixel, block of 8 output channels, bit b, weight plane p) the 16-bit
      count of set bits of plane b AND plane p over (C/16, KH, KW, 2): one NEON ``and`` + ``cnt``
      + ``uadalp`` per block, plane pair and kernel position, the two activation bytes
      broadcast to the eight channels' pairs of weight bytes (``planes``, laid out by
      ``packing.bitserial_conv_weights``);
    * ``conv2d_bitserial``: the weighted sum of the counts in int32, in the data's layout.

    Counts stay below 2^16: at most C x KH x KW per lane (``strategies`` refuses more).
    """
    from tvm import te, tirx

    from apprentice_hw.lowering.packing import BITSERIAL_IN, BITSERIAL_OUT

    batch, channels, height, width = geometry.data_shape(data)
    blocks_in = -(-channels // BITSERIAL_IN)
    blocks_out = int(planes.shape[0])
    out_h, out_w = geometry.output_hw(height, width)
    (kh, kw), (sh, sw), (dh, dw) = geometry.kernel, geometry.strides, geometry.dilation
    top, left, bottom, right = geometry.padding
    one = tirx.const(1, "uint8")
    rows, columns = height + top + bottom, width + left + right
    # A 1x1 kernel without padding reads every sh-th row and sw-th column only: the planes
    # hold just those pixels (ResNet-18's stride-2 downsample convs gathered four times the
    # pixels they read, 10 modeled cycles per cnt on the Cortex-A72 against 1.8 elsewhere).
    step_h, step_w = 1, 1
    if kh == kw == 1 and not any(geometry.padding):
        (step_h, step_w), rows, columns = (sh, sw), out_h, out_w

    def code(n, y, x, c):
        """The activation code at padded position (y, x); 0 (the zero point) outside."""
        inside = tirx.all(c < channels, y >= top, y < height + top, x >= left, x < width + left)
        value = geometry.read(data, n, tirx.min(c, channels - 1), y - top, x - left)
        return tirx.if_then_else(inside, value.astype("uint8"), tirx.const(0, "uint8"))

    # Each code's bits first (16 channels as one vector), then each plane byte sums eight
    # consecutive ones: a form the schedules compute as one 64-bit multiply per byte.
    code_bits = te.compute(
        (batch, rows, columns, blocks_in, act_bits, BITSERIAL_IN),
        lambda n, y, x, cb, b, k: (
            code(n, y * step_h, x * step_w, cb * BITSERIAL_IN + k) >> b.astype("uint8")
        ) & one,
        name="code_bits",
    )  # fmt: skip

    def pack(n, y, x, cb, b, t):
        word = code_bits[n, y, x, cb, b, t * 8]
        for i in range(1, 8):  # disjoint bits
            word = word + (code_bits[n, y, x, cb, b, t * 8 + i] << tirx.const(i, "uint8"))
        return word

    packed = te.compute((batch, rows, columns, blocks_in, act_bits, 2), pack, name="bitpack_data")
    rc = te.reduce_axis((0, blocks_in), name="rc")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rt = te.reduce_axis((0, 2), name="rt")
    counts = te.compute(
        (batch, out_h, out_w, blocks_out, act_bits, len(coefficients), BITSERIAL_OUT),
        lambda n, i, j, ob, b, p, oi: te.sum(
            tirx.popcount(
                packed[n, i * (sh // step_h) + ry * dh, j * (sw // step_w) + rx * dw, rc, b, rt]
                & planes[ob, rc, ry, rx, p, oi, rt]
            ).astype("uint16"),
            axis=[rc, ry, rx, rt],
        ),
        name="conv_bits",
    )  # fmt: skip

    # int16 sums (``out_dtype``, where the caller proved the result fits) are added as uint16,
    # whose wrap-around is defined: partial sums may leave int16, the total does not.
    work = "uint16" if out_dtype == "int16" else out_dtype

    def combine(*index):
        n, o, i, j = geometry.output_index(index)
        ob, oi = tirx.indexdiv(o, BITSERIAL_OUT), tirx.indexmod(o, BITSERIAL_OUT)
        total = None
        for p, coefficient in enumerate(coefficients):
            for b in range(act_bits):
                factor = (coefficient << b) & 0xFFFF if work == "uint16" else coefficient << b
                term = counts[n, i, j, ob, b, p, oi].astype(work) * tirx.const(factor, work)
                total = term if total is None else total + term
        return total.astype(out_dtype)

    return te.compute(
        geometry.output_shape(batch, out_h, out_w), combine, name="conv2d_bitserial",
        tag="conv2d_bitserial", attrs={"layout": geometry.layout},  # what the schedule reads
    )  # fmt: skip
