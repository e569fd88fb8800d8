# ruff: noqa: N803, N806, N812 - TVMScript buffers are named A, B, C and its module T by convention
"""Tensor intrinsics the default schedules tensorize with.

TVM 0.27 ships a VNNI 16x4 intrinsic (``dot_16x4_vnni``) whose call passes ``<16 x i32>``
operands to ``llvm.x86.avx512.vpdpbusd.512``; the LLVM that TVM 0.27 is built with declares the
intrinsic with ``<64 x i8>`` operands and rejects the module ("Call parameter type does not
match function signature"). This is the same intrinsic with the operand types LLVM expects.

Both halves are defined here: importing anything from ``tvm.s_tir.tensor_intrin`` parses
every intrinsic TVM ships (about 500 TVMScript functions for CUDA, ROCm, Arm, ...), which takes
over a minute on a small host.
"""

from __future__ import annotations

from functools import cache

VNNI_16X4 = "apprentice_hw_dot_16x4_vnni"


def _dot_16x4_description(codes: str = "uint8"):
    """16 output channels x 4 input channels, ``codes`` x int8 summed into int32 accumulators.

    The accumulator ``C`` is a ``local`` buffer: the conv schedule keeps a tile of accumulators
    there so LLVM holds them in registers for the whole reduction.
    """
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def dot_desc(
        A: T.Buffer((4,), codes, offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for i in T.serial(0, 16):
                for k in T.serial(0, 4):
                    with T.sblock("update"):
                        vi, vk = T.axis.remap("SR", [i, k])
                        C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(B[vi, vk], "int32")

    return dot_desc


@cache
def register_vnni() -> str:
    """Register the VNNI 16x4 uint8 x int8 -> int32 intrinsic once; returns its name."""
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def vnni_impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            a_word = T.reinterpret(A.vload([0], "uint8x4"), dtype="int32")
            a_bytes = T.reinterpret(T.broadcast(a_word, 16), dtype="uint8x64")
            C[T.ramp(T.int32(0), 1, 16)] = T.call_llvm_pure_intrin(
                T.llvm_lookup_intrinsic_id("llvm.x86.avx512.vpdpbusd.512"),
                C.vload([0], dtype="int32x16"),
                a_bytes,
                B.vload([0, 0], dtype="int8x64"),
                dtype="int32x16",
            )

    TensorIntrin.register(VNNI_16X4, _dot_16x4_description(), vnni_impl)
    return VNNI_16X4


AVX2_16X4 = "apprentice_hw_dot_16x4_avx2_pmaddwd"


@cache
def register_avx2() -> str:
    """Register a 16x4 uint8 x int8 -> int32 intrinsic for AVX2 (no VNNI); returns its name.

    ``vpmaddwd`` multiplies int16 pairs and adds each pair into an int32: exact for 8-bit codes
    (2 x 255 x 128 fits easily), unlike ``vpmaddubsw``, which saturates at int16. Weights come
    in pair order (2, 16, 2): [pair of input channels][output channel][channel in pair], the
    layout the conv schedule gives the decoded weight buffer, so each half of the 16 outputs is
    one contiguous load per pair.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def avx2_desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((2, 16, 2), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:2, 0:16, 0:2])
            T.writes(C[0:16])
            for p in T.serial(0, 2):
                for i in T.serial(0, 16):
                    for r in T.serial(0, 2):
                        with T.sblock("update"):
                            # One reduction variable split in two, as the schedule's split
                            # leaves it in the conv block.
                            vi = T.axis.spatial(16, i)
                            vk = T.axis.reduce(4, p * 2 + r)
                            C[vi] = C[vi] + T.cast(A[vk], "int32") * T.cast(
                                B[vk // 2, vi, vk % 2], "int32"
                            )

    @T.prim_func(s_tir=True)
    def avx2_impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((2, 16, 2), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:2, 0:16, 0:2])
            T.writes(C[0:16])
            for p in T.unroll(0, 2):
                pair = T.reinterpret(T.Cast("int16x2", A.vload([p * 2], "uint8x2")), dtype="int32")
                broadcast = T.reinterpret(T.broadcast(pair, 8), dtype="int16x16")
                for h in T.unroll(0, 2):
                    weights = T.Cast("int16x16", B.vload([p, h * 8, 0], "int8x16"))
                    C[T.ramp(h * 8, 1, 8)] = C.vload([h * 8], "int32x8") + T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                        broadcast,
                        weights,
                        dtype="int32x8",
                    )

    TensorIntrin.register(AVX2_16X4, avx2_desc, avx2_impl)
    return AVX2_16X4


AVX2_16X4_INT16 = "apprentice_hw_dot_16x4_avx2_pmaddubsw"
AVX2_WIDEN_INT16 = "apprentice_hw_widen_16x2_avx2_pmaddwd"


def _int16_descriptions():
    """What the int16 product and widening compute, whatever instructions implement them.

    ``product``: 16 x 4 uint8 x int8 products added into 16 x 2 int16 lanes (output channel,
    pair of input channels). ``widen``: each channel's two int16 lanes added into its int32
    accumulator. Weights are in VNNI's 16x4 order: output channel ``o``'s four inputs are bytes
    4o..4o+3, so pair ``p`` of channel ``o`` is lane 2o + p of the int16 vector.
    """
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def product_desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16, 2), "int16", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16, 0:2], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16, 0:2])
            for i, p, r in T.grid(16, 2, 2):
                with T.sblock("update"):
                    vi, vp, vr = T.axis.remap("SSR", [i, p, r])
                    C[vi, vp] = C[vi, vp] + T.cast(A[vp * 2 + vr], "int16") * T.cast(
                        B[vi, vp * 2 + vr], "int16"
                    )

    @T.prim_func(s_tir=True)
    def widen_desc(
        P: T.Buffer((16, 2), "int16", offset_factor=1, scope="local"),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], P[0:16, 0:2])
            T.writes(C[0:16])
            for i, p in T.grid(16, 2):
                with T.sblock("update"):
                    vi, vp = T.axis.remap("SR", [i, p])
                    C[vi] = C[vi] + T.cast(P[vi, vp], "int32")

    return product_desc, widen_desc


@cache
def register_avx2_int16() -> tuple[str, str]:
    """Register AVX2's int16 dot product and its widening; returns (product, widen) names.

    ``product`` (``_int16_descriptions``) is two ``vpmaddubsw`` and two ``vpaddw``.
    ``vpmaddubsw`` saturates, so this equals the description only where no lane leaves int16:
    the lowering proves that per layer (``lowering/int16_sums.py``) before it asks for these
    kernels. ``widen`` is ``vpmaddwd`` by ones and ``vpaddd``.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    product_desc, widen_desc = _int16_descriptions()

    @T.prim_func(s_tir=True)
    def product_impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16, 2), "int16", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16, 0:2], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16, 0:2])
            for h in T.unroll(0, 2):
                C.vstore(
                    [h * 8, 0],
                    C.vload([h * 8, 0], "int16x16")
                    + T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.ub.sw"),
                        # the four codes in every 32-bit word (no named temporary: TVMScript
                        # would make it a buffer, allocated per call)
                        T.reinterpret(
                            T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 8),
                            dtype="uint8x32",
                        ),
                        B.vload([h * 8, 0], "int8x32"),
                        dtype="int16x16",
                    ),
                )

    @T.prim_func(s_tir=True)
    def widen_impl(
        P: T.Buffer((16, 2), "int16", offset_factor=1, scope="local"),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], P[0:16, 0:2])
            T.writes(C[0:16])
            for h in T.unroll(0, 2):
                C[T.ramp(h * 8, 1, 8)] = C.vload([h * 8], "int32x8") + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.x86.avx2.pmadd.wd"),
                    P.vload([h * 8, 0], "int16x16"),
                    T.broadcast(T.int16(1), 16),
                    dtype="int32x8",
                )

    TensorIntrin.register(AVX2_16X4_INT16, product_desc, product_impl)
    TensorIntrin.register(AVX2_WIDEN_INT16, widen_desc, widen_impl)
    return AVX2_16X4_INT16, AVX2_WIDEN_INT16


NEON_16X4_INT16 = "apprentice_hw_dot_16x4_int16_mla"
NEON_WIDEN_INT16 = "apprentice_hw_widen_16x2_int16_add"


@cache
def register_neon_int16() -> tuple[str, str]:
    """Register the int16 dot product and widening for CPUs without AVX2 (NEON); their names.

    Plain vector arithmetic that LLVM turns into 16-bit multiply-accumulates (``mla .8h`` on
    AArch64: 8 products per instruction, against the scalar ``madd`` per product that the
    unrolled int32 kernel became). The 64 weight bytes are read as 32 int16 lanes, one per
    (channel, pair): the low byte is the pair's first weight, sign-extended by shifting left
    and arithmetically right by 8, the high byte its second, by the right shift alone. The four
    codes are broadcast as one 32-bit word, so lane 2o + p holds codes 2p and 2p + 1 in its two
    bytes. Wrapping int16 arithmetic equals the description wherever the true sums fit int16,
    which ``lowering/int16_sums.py`` proves per layer.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    product_desc, widen_desc = _int16_descriptions()

    @T.prim_func(s_tir=True)
    def product_impl(
        A: T.Buffer((4,), "uint8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16, 2), "int16", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16, 0:2], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16, 0:2])
            C.vstore(
                [0, 0],
                C.vload([0, 0], "int16x32")
                + T.bitwise_and(
                    T.reinterpret(
                        T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16),
                        dtype="int16x32",
                    ),
                    T.broadcast(T.int16(255), 32),
                )
                * T.shift_right(
                    T.shift_left(
                        T.reinterpret(B.vload([0, 0], "int8x64"), dtype="int16x32"),
                        T.broadcast(T.int16(8), 32),
                    ),
                    T.broadcast(T.int16(8), 32),
                )
                + T.bitwise_and(
                    T.shift_right(
                        T.reinterpret(
                            T.broadcast(T.reinterpret(A.vload([0], "uint8x4"), dtype="int32"), 16),
                            dtype="int16x32",
                        ),
                        T.broadcast(T.int16(8), 32),
                    ),
                    T.broadcast(T.int16(255), 32),
                )
                * T.shift_right(
                    T.reinterpret(B.vload([0, 0], "int8x64"), dtype="int16x32"),
                    T.broadcast(T.int16(8), 32),
                ),
            )

    @T.prim_func(s_tir=True)
    def widen_impl(
        P: T.Buffer((16, 2), "int16", offset_factor=1, scope="local"),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], P[0:16, 0:2])
            T.writes(C[0:16])
            C[T.ramp(0, 1, 16)] = (
                C.vload([0], "int32x16")
                + T.shift_right(
                    T.shift_left(
                        T.reinterpret(P.vload([0, 0], "int16x32"), dtype="int32x16"),
                        T.broadcast(T.int32(16), 16),
                    ),
                    T.broadcast(T.int32(16), 16),
                )
                + T.shift_right(
                    T.reinterpret(P.vload([0, 0], "int16x32"), dtype="int32x16"),
                    T.broadcast(T.int32(16), 16),
                )
            )

    TensorIntrin.register(NEON_16X4_INT16, product_desc, product_impl)
    TensorIntrin.register(NEON_WIDEN_INT16, widen_desc, widen_impl)
    return NEON_16X4_INT16, NEON_WIDEN_INT16


SDOT_16X4 = "apprentice_hw_dot_16x4_sdot"


@cache
def register_sdot() -> str:
    """Register the 16x4 dot product as AArch64 ``SDOT`` (``+dotprod``) once; its name.

    Four ``sdot`` (16 products each) per block and pixel, the four codes broadcast as one
    32-bit word: the same blocked 16x4 weight order as VNNI. ``SDOT`` multiplies signed bytes:
    the kernels of layers the lowering marked ``signed_codes`` hold their codes as int8
    (shifted by -128 where they exceed 127).
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def sdot_impl(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16])
            for q in T.unroll(0, 4):
                C[T.ramp(q * 4, 1, 4)] = T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                    C.vload([q * 4], dtype="int32x4"),
                    B.vload([q * 4, 0], dtype="int8x16"),
                    T.reinterpret(
                        T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 4),
                        dtype="int8x16",
                    ),
                    dtype="int32x4",
                )

    TensorIntrin.register(SDOT_16X4, _dot_16x4_description("int8"), sdot_impl)
    return SDOT_16X4


SDOT_LANES = "apprentice_hw_dot_16x4x{groups}_sdot_lanes"


@cache
def register_sdot_lanes(groups: int) -> str:
    """Register ``groups`` consecutive 16x4 blocks of one pixel as lane-indexed ``SDOT``; its name.

    The codes of ``groups`` input blocks of a pixel are contiguous in the NHWC padded input, so
    one vector load brings them all and each block's four codes are one 32-bit lane of it:
    ``sdot v.4s, w.16b, a.4b[lane]``. The plain intrinsic above broadcasts each block's codes
    with ``ld1r``, which on the Cortex-A76 / Neoverse N1 issues on the same two vector pipes as
    ``SDOT`` itself (16 ``ld1r`` per 64 ``sdot`` in a 4-pixel tile: modeled 45 cycles per 64
    ``sdot`` where the pipes allow 32). The blocks' weights are ``groups`` 64-byte blocks at
    any stride (kernel positions lie between them in storage); their buffer keeps the kernel
    row and column as unit dimensions, because tensorize matches a region dimension by
    dimension from the last one.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    width = 4 * groups
    copies = -(-4 // groups)  # a shuffle makes at most as many lanes as its operands hold

    @T.prim_func(s_tir=True)
    def lanes_desc(a: T.handle, b: T.handle, c: T.handle) -> None:
        stride = T.int32()
        A = T.match_buffer(a, (groups, 4), "int8", offset_factor=1)
        row, column = T.int32(), T.int32()
        B = T.match_buffer(b, (groups, 1, 1, 16, 4), "int8", strides=[stride, row, column, 4, 1],
                           offset_factor=1)  # fmt: skip
        C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:groups, 0:4], B[0:groups, 0, 0, 0:16, 0:4])
            T.writes(C[0:16])
            for g in T.serial(0, groups):
                for i in T.serial(0, 16):
                    for k in T.serial(0, 4):
                        with T.sblock("update"):
                            # the conv block's order: output channel, then reductions
                            vi, vg, vk = T.axis.remap("SRR", [i, g, k])
                            C[vi] = C[vi] + T.cast(A[vg, vk], "int32") * T.cast(
                                B[vg, 0, 0, vi, vk], "int32"
                            )

    @T.prim_func(s_tir=True)
    def lanes_impl(a: T.handle, b: T.handle, c: T.handle) -> None:
        stride = T.int32()
        A = T.match_buffer(a, (groups, 4), "int8", offset_factor=1)
        row, column = T.int32(), T.int32()
        B = T.match_buffer(b, (groups, 1, 1, 16, 4), "int8", strides=[stride, row, column, 4, 1],
                           offset_factor=1)  # fmt: skip
        C = T.match_buffer(c, (16,), "int32", offset_factor=1, scope="local")
        with T.sblock("root"):
            T.reads(C[0:16], A[0:groups, 0:4], B[0:groups, 0, 0, 0:16, 0:4])
            T.writes(C[0:16])
            for g in T.unroll(0, groups):
                for q in T.unroll(0, 4):
                    C[T.ramp(q * 4, 1, 4)] = T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.sdot.v4i32.v16i8"),
                        C.vload([q * 4], dtype="int32x4"),
                        B.vload([g, 0, 0, q * 4, 0], dtype="int8x16"),
                        T.reinterpret(
                            T.Shuffle(
                                [
                                    T.reinterpret(
                                        A.vload([0, 0], f"int8x{width}"), dtype=f"int32x{groups}"
                                    )
                                ]
                                * copies,
                                [g, g, g, g],
                            ),
                            dtype="int8x16",
                        ),
                        dtype="int32x4",
                    )

    name = SDOT_LANES.format(groups=groups)
    TensorIntrin.register(name, lanes_desc, lanes_impl)
    return name


NEON_16X4_INT16_LONG = "apprentice_hw_dot_16x4_int16_smlal"
NEON_WIDEN_INT16_LONG = "apprentice_hw_widen_16x4_int16_saddlp"


@cache
def register_neon_int16_long() -> tuple[str, str]:
    """Register NEON's one-product-per-lane int16 sums and their widening; their names.

    ``product``: the 16 x 4 products of a block added into 64 int16 lanes (output channel,
    input channel), the block's weights as they are stored (16x4 order, no decoding) times the
    four codes broadcast as one 32-bit word: plain arithmetic that LLVM turns into ``smlal`` /
    ``smlal2`` (8 products per instruction that issues every cycle on a Cortex-A72, where a
    16-bit ``mla`` on a q register takes two). Signed bytes: the lowering asks for it only
    where codes are at most 127 (kept as int8), and proves that every lane's sum fits int16.
    ``widen``: each channel's four lanes added into its int32 accumulator, ``saddlp`` on
    pairs, then ``addp``.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def product_desc(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16, 4), "int16", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16, 0:4], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16, 0:4])
            for i, c in T.grid(16, 4):
                with T.sblock("update"):
                    vi, vc = T.axis.remap("SS", [i, c])
                    C[vi, vc] = C[vi, vc] + T.cast(A[vc], "int16") * T.cast(B[vi, vc], "int16")

    @T.prim_func(s_tir=True)
    def product_impl(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        C: T.Buffer((16, 4), "int16", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16, 0:4], A[0:4], B[0:16, 0:4])
            T.writes(C[0:16, 0:4])
            C.vstore(
                [0, 0],
                C.vload([0, 0], "int16x64")
                + T.cast(B.vload([0, 0], "int8x64"), "int16x64")
                * T.cast(
                    T.reinterpret(
                        T.broadcast(T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 16),
                        dtype="int8x64",
                    ),
                    "int16x64",
                ),
            )

    @T.prim_func(s_tir=True)
    def widen_desc(
        P: T.Buffer((16, 4), "int16", offset_factor=1, scope="local"),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], P[0:16, 0:4])
            T.writes(C[0:16])
            for i, c in T.grid(16, 4):
                with T.sblock("update"):
                    vi, vc = T.axis.remap("SR", [i, c])
                    C[vi] = C[vi] + T.cast(P[vi, vc], "int32")

    @T.prim_func(s_tir=True)
    def widen_impl(
        P: T.Buffer((16, 4), "int16", offset_factor=1, scope="local"),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], P[0:16, 0:4])
            T.writes(C[0:16])
            for q in T.unroll(0, 4):  # channels 4q..4q+3: two vectors of two channels x 4
                C[T.ramp(q * 4, 1, 4)] = C.vload([q * 4], "int32x4") + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"),
                    T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
                        P.vload([q * 4, 0], "int16x8"),
                        dtype="int32x4",
                    ),
                    T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
                        P.vload([q * 4 + 2, 0], "int16x8"),
                        dtype="int32x4",
                    ),
                    dtype="int32x4",
                )

    TensorIntrin.register(NEON_16X4_INT16_LONG, product_desc, product_impl)
    TensorIntrin.register(NEON_WIDEN_INT16_LONG, widen_desc, widen_impl)
    return NEON_16X4_INT16_LONG, NEON_WIDEN_INT16_LONG


@cache
def register_neon_bitserial(act_bits: int, planes: int) -> str:
    """Register the bit-serial block product for NEON once per (activation bits, weight
    planes); returns its name.

    For one pixel, one block of 8 output x 16 input channels and one kernel position
    (``kernels.conv2d_bitserial``): each activation plane's two bytes are broadcast as one
    16-bit value to all eight channels (``ld1r``), ANDed with each weight plane's 16 bytes,
    counted per byte (``cnt``) and added pairwise into the channels' eight 16-bit counts
    (``uadalp``): 3 instructions per 128 one-bit products.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    name = f"apprentice_hw_bitserial_{act_bits}x{planes}_uadalp"

    @T.prim_func(s_tir=True)
    def bits_desc(
        A: T.Buffer((act_bits, 2), "uint8", offset_factor=1),
        W: T.Buffer((planes, 8, 2), "uint8", offset_factor=1),
        C: T.Buffer((act_bits, planes, 8), "uint16", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:act_bits, 0:planes, 0:8], A[0:act_bits, 0:2], W[0:planes, 0:8, 0:2])
            T.writes(C[0:act_bits, 0:planes, 0:8])
            for b, p, o, t in T.grid(act_bits, planes, 8, 2):
                with T.sblock("update"):
                    vb, vp, vo, vt = T.axis.remap("SSSR", [b, p, o, t])
                    C[vb, vp, vo] = C[vb, vp, vo] + T.cast(
                        T.popcount(A[vb, vt] & W[vp, vo, vt]), "uint16"
                    )

    # One-bit activations: the schedule has no loop over the single bit (compute_at makes
    # none for a unit extent), so neither may the description.
    @T.prim_func(s_tir=True)
    def one_bit_desc(
        A: T.Buffer((1, 2), "uint8", offset_factor=1),
        W: T.Buffer((planes, 8, 2), "uint8", offset_factor=1),
        C: T.Buffer((1, planes, 8), "uint16", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:1, 0:planes, 0:8], A[0:1, 0:2], W[0:planes, 0:8, 0:2])
            T.writes(C[0:1, 0:planes, 0:8])
            for p, o, t in T.grid(planes, 8, 2):
                with T.sblock("update"):
                    vp, vo, vt = T.axis.remap("SSR", [p, o, t])
                    C[0, vp, vo] = C[0, vp, vo] + T.cast(
                        T.popcount(A[0, vt] & W[vp, vo, vt]), "uint16"
                    )

    @T.prim_func(s_tir=True)
    def bits_impl(
        A: T.Buffer((act_bits, 2), "uint8", offset_factor=1),
        W: T.Buffer((planes, 8, 2), "uint8", offset_factor=1),
        C: T.Buffer((act_bits, planes, 8), "uint16", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:act_bits, 0:planes, 0:8], A[0:act_bits, 0:2], W[0:planes, 0:8, 0:2])
            T.writes(C[0:act_bits, 0:planes, 0:8])
            for b in T.unroll(0, act_bits):
                for p in T.unroll(0, planes):
                    C[b, p, T.ramp(0, 1, 8)] = C.vload([b, p, 0], "uint16x8") + (
                        T.call_llvm_pure_intrin(
                            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.uaddlp.v8i16.v16i8"),
                            T.popcount(
                                T.reinterpret(
                                    T.broadcast(
                                        T.reinterpret(A.vload([b, 0], "uint8x2"), dtype="uint16"), 8
                                    ),
                                    dtype="uint8x16",
                                )
                                & W.vload([p, 0, 0], "uint8x16")
                            ),
                            dtype="uint16x8",
                        )
                    )

    TensorIntrin.register(name, bits_desc if act_bits > 1 else one_bit_desc, bits_impl)
    return name


BIT_GATHER = "apprentice_hw_bit_gather_8x2"
# x * GATHER_MULTIPLIER >> 56 moves bit 8i of x to bit i of the top byte: every partial
# product 2^(8i) x 2^(56-7j) is a distinct power of two, so nothing carries.
GATHER_MULTIPLIER = sum(1 << (56 - 7 * i) for i in range(8))


@cache
def register_bit_gather() -> str:
    """Register the bit-plane packing of 16 channels (``kernels.conv2d_bitserial``) once.

    Sixteen bytes of 0 or 1 become two bytes, bit i of byte t from byte 8t+i: each half read
    as one 64-bit word and gathered by one multiply (``GATHER_MULTIPLIER``) and shift, against
    about 20 byte loads, shifts and ors per byte that LLVM made of the sum.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def gather_desc(
        A: T.Buffer((16,), "uint8", offset_factor=1),
        P: T.Buffer((2,), "uint8", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(A[0:16])
            T.writes(P[0:2])
            for t in T.serial(0, 2):
                with T.sblock("pack"):
                    vt = T.axis.remap("S", [t])
                    P[vt] = (
                        A[vt * 8]
                        + (A[vt * 8 + 1] << T.uint8(1))
                        + (A[vt * 8 + 2] << T.uint8(2))
                        + (A[vt * 8 + 3] << T.uint8(3))
                        + (A[vt * 8 + 4] << T.uint8(4))
                        + (A[vt * 8 + 5] << T.uint8(5))
                        + (A[vt * 8 + 6] << T.uint8(6))
                        + (A[vt * 8 + 7] << T.uint8(7))
                    )

    @T.prim_func(s_tir=True)
    def gather_impl(
        A: T.Buffer((16,), "uint8", offset_factor=1),
        P: T.Buffer((2,), "uint8", offset_factor=1),
    ) -> None:
        with T.sblock("root"):
            T.reads(A[0:16])
            T.writes(P[0:2])
            for t in T.unroll(0, 2):
                P[t] = T.Cast(
                    "uint8",
                    T.shift_right(
                        T.reinterpret(A.vload([t * 8], "uint8x8"), dtype="uint64")
                        * T.uint64(GATHER_MULTIPLIER),
                        T.uint64(56),
                    ),
                )

    TensorIntrin.register(BIT_GATHER, gather_desc, gather_impl)
    return BIT_GATHER


NEON_16X4_WIDE_PAIRS = "apprentice_hw_dot_16x4_smull_sadalp"
NEON_WIDEN_WIDE_PAIRS = "apprentice_hw_widen_16x2_addp"


@cache
def register_neon_wide_pairs() -> tuple[str, str]:
    """Register NEON's 8-bit product without SDOT once: (product, widen) intrinsic names.

    ``product``: a block of 16 output x 4 input channels of signed bytes into 16 x 2 int32
    lanes (one per output channel and pair of inputs): ``smull`` / ``smull2`` make the 64
    products in int16 (exact: |code x weight| <= 128 x 128), ``sadalp`` adds each adjacent
    pair into its int32 lane. Eight of each per block, against about forty instructions of
    the 32-bit ``mla`` path with its byte extraction (2026-12-07). ``widen``: each channel's
    two lanes added into its int32 accumulator (``addp``), once per tile.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def product_desc(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        P: T.Buffer((16, 2), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(P[0:16, 0:2], A[0:4], B[0:16, 0:4])
            T.writes(P[0:16, 0:2])
            for i, p, r in T.grid(16, 2, 2):
                with T.sblock("update"):
                    vi, vp, vr = T.axis.remap("SSR", [i, p, r])
                    P[vi, vp] = P[vi, vp] + T.cast(A[vp * 2 + vr], "int32") * T.cast(
                        B[vi, vp * 2 + vr], "int32"
                    )

    @T.prim_func(s_tir=True)
    def product_impl(
        A: T.Buffer((4,), "int8", offset_factor=1),
        B: T.Buffer((16, 4), "int8", offset_factor=1),
        P: T.Buffer((16, 2), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(P[0:16, 0:2], A[0:4], B[0:16, 0:4])
            T.writes(P[0:16, 0:2])
            for h in T.unroll(0, 8):  # output channels 2h, 2h+1: eight products, four lanes
                P[h * 2, T.ramp(0, 1, 4)] = P.vload([h * 2, 0], "int32x4") + (
                    T.call_llvm_pure_intrin(
                        T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.saddlp.v4i32.v8i16"),
                        T.call_llvm_pure_intrin(
                            T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.smull.v8i16"),
                            B.vload([h * 2, 0], "int8x8"),
                            T.reinterpret(
                                T.broadcast(
                                    T.reinterpret(A.vload([0], "int8x4"), dtype="int32"), 2
                                ),
                                dtype="int8x8",
                            ),
                            dtype="int16x8",
                        ),
                        dtype="int32x4",
                    )
                )

    @T.prim_func(s_tir=True)
    def widen_desc(
        P: T.Buffer((16, 2), "int32", offset_factor=1, scope="local"),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], P[0:16, 0:2])
            T.writes(C[0:16])
            for i, p in T.grid(16, 2):
                with T.sblock("update"):
                    vi, vp = T.axis.remap("SR", [i, p])
                    C[vi] = C[vi] + P[vi, vp]

    @T.prim_func(s_tir=True)
    def widen_impl(
        P: T.Buffer((16, 2), "int32", offset_factor=1, scope="local"),
        C: T.Buffer((16,), "int32", offset_factor=1, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0:16], P[0:16, 0:2])
            T.writes(C[0:16])
            for q in T.unroll(0, 4):
                C[q * 4 : q * 4 + 4] = C.vload([q * 4], "int32x4") + T.call_llvm_pure_intrin(
                    T.llvm_lookup_intrinsic_id("llvm.aarch64.neon.addp.v4i32"),
                    P.vload([q * 4, 0], "int32x4"),
                    P.vload([q * 4 + 2, 0], "int32x4"),
                    dtype="int32x4",
                )

    TensorIntrin.register(NEON_16X4_WIDE_PAIRS, product_desc, product_impl)
    TensorIntrin.register(NEON_WIDEN_WIDE_PAIRS, widen_desc, widen_impl)
    return NEON_16X4_WIDE_PAIRS, NEON_WIDEN_WIDE_PAIRS


DP4A_U8S8 = "apprentice_hw_dp4a_u8s8_local"


@cache
def register_dp4a() -> str:
    """Register a uint8 x int8 -> int32 four-way dot product for CUDA (``dp4a``); its name.

    TVM ships ``dp4a_u8s8s32`` with both operands in shared memory and the product added to the
    accumulator after a ``dp4a`` with zero. In the GPU conv schedule the operands are registers:
    each thread decodes its four weights (from int8 or packed 2/4-bit storage) and gathers its
    four activation codes into ``local`` buffers, and the accumulator is the instruction's own
    addend, so one ``dp4a.u32.s32`` does the whole update (TVM's CUDA header defines the mixed
    signedness overload of ``__dp4a``).
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def dp4a_desc(
        A: T.Buffer((4,), "uint8", offset_factor=1, align=4, scope="local"),
        B: T.Buffer((4,), "int8", offset_factor=1, align=4, scope="local"),
        C: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0], A[0:4], B[0:4])
            T.writes(C[0])
            for k in T.serial(0, 4):
                with T.sblock("update"):
                    vk = T.axis.remap("R", [k])
                    C[0] = C[0] + T.cast(A[vk], "int32") * T.cast(B[vk], "int32")

    @T.prim_func(s_tir=True)
    def dp4a_impl(
        A: T.Buffer((4,), "uint8", offset_factor=1, align=4, scope="local"),
        B: T.Buffer((4,), "int8", offset_factor=1, align=4, scope="local"),
        C: T.Buffer((1,), "int32", offset_factor=1, align=4, scope="local"),
    ) -> None:
        with T.sblock("root"):
            T.reads(C[0], A[0:4], B[0:4])
            T.writes(C[0])
            C[0] = T.call_pure_extern(
                "__dp4a", A.vload([0], "uint8x4"), B.vload([0], "int8x4"), C[0], dtype="int32"
            )

    TensorIntrin.register(DP4A_U8S8, dp4a_desc, dp4a_impl)
    return DP4A_U8S8
