"""What the integer lowering records and needs: the per-layer records (``LoweredLayer``), its
options, and the small helpers the pass's parts share (no TVM import at module level)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

INTEGER_RANGES = {"uint8": (0, 255), "int8": (-128, 127)}


@dataclass(frozen=True)
class LoweredLayer:
    """What the lowering did with one conv2d / dense layer (one row of the report)."""

    name: str
    kind: str
    weight_shape: tuple[int, ...]
    strategy: str  # kernel strategy name, or "float" when the layer was not lowered
    weight_bits: int | None = None  # signed bits the integer weights need
    storage_bits: int | None = None  # bits each weight takes in the module
    act_bits: int | None = None
    weight_bytes: int = 0  # bytes of the weight constant in the module
    scale_bytes: int = 0  # bytes of the per-layer requantization scale constant
    reason: str | None = None  # why a layer stayed float
    folded_batch_norm: bool = False  # the following BatchNorm is part of the requantization
    # how the next layer's codes are computed from the int32 sums: "float64" (the chain of
    # ``precision.py``), "affine float32" / "affine float64" (two operations, requantize.py),
    # "thresholds" (integer compares, codes of at most two bits), "integer" (a 64-bit
    # fixed-point line, where float32 is not proven) or "integer sqdmulh int16" / "... int32"
    # (the same line as AArch64's 32-bit high-half product, clipped in that type)
    requantization: str = "float64"
    # conv on AVX2 without VNNI or NEON: input blocks whose products are summed in int16 before
    # the int32 sum (``int16_sums.py``); 0 where products are int32 (vpmaddwd, VNNI, SDOT)
    int16_chunk: int = 0
    # input channels whose products share an int16 lane: 2 (vpmaddubsw, NEON's mla), 1 (smlal)
    int16_lane_inputs: int = 2

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class LoweringOptions:
    """Strategy choice: the target's preference order, and an optional forced strategy."""

    preference: tuple[str, ...]
    forced: str | None = None
    layer_names: dict[str, str] = field(default_factory=dict)  # weight digest -> ONNX node name
    dot_order: str = "16x4"  # conv weight block order the target's kernels read
    # conv kernels may add small products in int16 where ``int16_sums`` proves it exact
    # (x86 with AVX2 but no VNNI: ``vpmaddubsw``; NEON); such layers store their blocks as 16x4
    int16_sums: bool = False
    # int16 lanes hold one product each where codes fit a signed byte (NEON's ``smlal``)
    int16_signed_lanes: bool = False
    # a signed-byte dot product (SDOT): every conv layer uses it, codes shifted to signed bytes
    signed_dot: bool = False
    # requantization divides by a multiply and two FMAs (exact, cheaper on CPUs); GPUs divide
    fma_division: bool = True
    # integer-to-integer requantizations as two operations proven at compile time
    # (``requantize.py``); the proof models LLVM's CPU code (round half to even)
    proven_requantization: bool = True
    # integer lines as AArch64's ``sqdmulh`` (``HighHalfRequantization``) where they fit
    high_half_multiply: bool = False


@dataclass(frozen=True)
class Accumulator:
    """A lowered layer's int32 sums, as its requantization needs them."""

    accumulator: object  # the Relax var holding the int32 sums
    scales: np.ndarray  # exact float64 scale per output channel
    rank: int
    channel_axis: int
    layer: int  # index into the lowering's layer records
    acc_low: np.ndarray  # per output channel, the smallest and largest reachable sum
    acc_high: np.ndarray


def weight_offsets(integers: np.ndarray) -> np.ndarray | None:
    """Per output channel, an offset that takes its integer weights into int8, or None where
    a channel spans more than 256 values (9-bit weights: uint8 codes minus a zero point)."""
    rows = integers.reshape(integers.shape[0], -1)
    low, high = rows.min(axis=1), rows.max(axis=1)
    if np.any(high - low > 255):
        return None
    return np.where(high > 127, high - 127, np.where(low < -128, low + 128, 0)).astype(np.int64)


def along_out(offsets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``offsets`` (one per output channel) broadcast against (O, ...) ``weights``."""
    return offsets.reshape(-1, *([1] * (weights.ndim - 1)))


def weight_digest(values: np.ndarray) -> str:
    """A key that identifies a weight tensor by content (names do not survive the import)."""
    array = np.ascontiguousarray(values)
    return hashlib.sha1(str(array.shape).encode() + array.astype(np.int64).tobytes()).hexdigest()


def const_value(expr) -> np.ndarray | None:
    import tvm

    if isinstance(expr, tvm.ir.expr.Constant):
        return expr.value.numpy()
    return None
