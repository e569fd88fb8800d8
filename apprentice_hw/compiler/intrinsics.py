# ruff: noqa: N803, N812 - TVMScript buffers are named A, B, C and its module T by convention
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


@cache
def register_vnni() -> str:
    """Register the VNNI 16x4 uint8 x int8 -> int32 intrinsic once; returns its name.

    The accumulator ``C`` is a ``local`` buffer: the conv schedule keeps a tile of accumulators
    there so LLVM holds them in registers for the whole reduction.
    """
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def vnni_desc(
        A: T.Buffer((4,), "uint8", offset_factor=1),
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

    TensorIntrin.register(VNNI_16X4, vnni_desc, vnni_impl)
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


@cache
def register_avx2_int16() -> tuple[str, str]:
    """Register AVX2's int16 dot product and its widening; returns (product, widen) names.

    ``product``: 16 x 4 uint8 x int8 products added into 16 x 2 int16 lanes (output channel,
    pair of input channels), two ``vpmaddubsw`` and two ``vpaddw``. ``vpmaddubsw`` saturates,
    so this equals the description only where no lane leaves int16: the lowering proves that
    per layer (``lowering/int16_sums.py``) before it asks for these kernels.
    ``widen``: the pairs of 16 int16 lanes added into 16 int32 accumulators, ``vpmaddwd`` by
    ones and ``vpaddd``. Weights are in VNNI's 16x4 order, which is the order ``vpmaddubsw``
    needs: output channel ``o``'s four inputs are bytes 4o..4o+3, so pairs land in lanes 2o and
    2o + 1.
    """
    from tvm.s_tir import TensorIntrin
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
