"""Requantization in two float operations on integers, proven equal at compile time.

After an integer conv, the graph computes the next layer's integer codes as

    code = clip(round(relu(acc * A + B) / s) + zp, qmin, qmax)      (``precision.py``, float64)

per output channel: a multiply and an add (scales and a folded BatchNorm), a ReLU, the division
(a multiply and two FMAs), a round, the zero point and the clip, about ten vector operations on
eight lanes per output vector, for an epilogue that on a small layer costs as much as the
convolution itself. The same codes come from

    code = clip(round((acc + c) * m), qmin', qmax)      with  m = A / s,  c = (B + zp * s) / A

(qmin' = max(qmin, zp) under the ReLU) in two float64 operations, an add and then a multiply,
which no compiler contracts into an FMA. The two are equal in exact arithmetic but round
differently, so the replacement is *proven* per layer before it is used: both are monotone
step functions of the integer ``acc`` (every operation in them is monotone), so they are equal
on the accumulator's whole reachable range exactly when every code level starts at the same
accumulator value. Those starts are found by binary search, for every channel and level at
once, evaluating both formulas in NumPy with the compiled module's float64 operations (IEEE
multiply, add and division, round half to even). The two operations are tried in float32
first (sixteen lanes per vector instead of eight), then in float64; a layer where neither
proves equal keeps the float64 chain (``None`` from ``fit_affine_requantization``).

Codes of at most two bits take neither: ``ThresholdRequantization`` compares the integer
accumulator with where each level starts (three compares and adds on integer lanes), which
is the chain itself by construction.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Requantization:
    """The float64 chain between an accumulator and the next codes, per output channel."""

    multiplier: np.ndarray  # A: float64, per channel
    offset: np.ndarray  # B: float64, per channel
    relu: bool
    scale: float  # s of the quantize
    zero_point: int
    low: int  # the output dtype's range
    high: int

    def codes(self, acc: np.ndarray) -> np.ndarray:
        """The chain as the module computes it (``acc``: int64, channels on the last axis)."""
        x = acc.astype(np.float64) * self.multiplier + self.offset
        if self.relu:
            x = np.maximum(x, 0.0)
        return np.clip(np.rint(x / self.scale) + self.zero_point, self.low, self.high)


@dataclass(frozen=True)
class AffineRequantization:
    """``clip(round((acc + offset) * multiplier), low, high)`` per output channel, computed
    in ``dtype`` (the constants rounded to it)."""

    offset: np.ndarray  # per channel (or one value)
    multiplier: np.ndarray
    low: int
    high: int
    dtype: str = "float64"

    def in_dtype(self, dtype: str) -> AffineRequantization | None:
        """The same formula computed in ``dtype``, or None where a constant does not fit."""
        with np.errstate(over="ignore"):
            offset, multiplier = self.offset.astype(dtype), self.multiplier.astype(dtype)
        if not (np.all(np.isfinite(offset)) and np.all(np.isfinite(multiplier))):
            return None
        if np.any(np.sign(multiplier) != np.sign(self.multiplier)):
            return None
        return AffineRequantization(offset, multiplier, self.low, self.high, dtype)

    def codes(self, acc: np.ndarray) -> np.ndarray:
        kind = np.dtype(self.dtype)
        x = (acc.astype(kind) + self.offset.astype(kind)) * self.multiplier.astype(kind)
        return np.clip(np.rint(x), self.low, self.high)


PRECISIONS = ("float32", "float64")  # tried in this order: the first proven one is used


def _level_starts(codes, low: np.ndarray, high: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """For an increasing ``codes(acc)`` (channels on the last axis): per (level, channel) the
    smallest acc in [low, high] whose code reaches the level, or high + 1 where none does."""
    lo = np.broadcast_to(low, (levels.size, low.size)).astype(np.int64)
    hi = np.broadcast_to(high + 1, (levels.size, low.size)).astype(np.int64)
    target = levels[:, None]
    for _ in range(int((hi - lo).max()).bit_length()):  # halves every interval each step
        mid = lo + (hi - lo) // 2
        reached = codes(mid) >= target
        hi = np.where(reached, mid, hi)
        lo = np.where(reached, lo, mid + 1)
    return lo


def _monotone_domain(chain: Requantization, acc_low: np.ndarray, acc_high: np.ndarray):
    """(lowest code, sign per channel, u_low, u_high, levels above the lowest code) of
    ``chain`` over u = sign(A) * acc, in which its codes increase; None where A is not finite
    and nonzero."""
    a = np.asarray(chain.multiplier, dtype=np.float64)
    if not np.all(np.isfinite(a)) or np.any(a == 0) or not np.isfinite(chain.scale):
        return None
    low = max(chain.low, chain.zero_point) if chain.relu else chain.low
    sign = np.where(a > 0, 1, -1).astype(np.int64)
    u_low = np.where(sign > 0, acc_low, -acc_high).astype(np.int64)
    u_high = np.where(sign > 0, acc_high, -acc_low).astype(np.int64)
    return low, sign, u_low, u_high, np.arange(low + 1, chain.high + 1, dtype=np.int64)


def fit_affine_requantization(
    chain: Requantization, acc_low: np.ndarray, acc_high: np.ndarray
) -> AffineRequantization | None:
    """The two-operation form of ``chain``, or None where it does not give the same codes for
    every accumulator value in [acc_low, acc_high] (per channel)."""
    domain = _monotone_domain(chain, acc_low, acc_high)
    if domain is None:
        return None
    low, sign, u_low, u_high, levels = domain
    a = np.asarray(chain.multiplier, dtype=np.float64)
    affine = AffineRequantization(
        offset=(chain.offset + chain.zero_point * chain.scale) / a,
        multiplier=a / chain.scale,
        low=low,
        high=chain.high,
    )
    if not (np.all(np.isfinite(affine.offset)) and np.all(np.isfinite(affine.multiplier))):
        return None
    # Both are increasing in acc where A > 0 and decreasing where A < 0: the search is over
    # u = sign(A) * acc, in which both increase.
    if levels.size == 0:
        return affine.in_dtype(PRECISIONS[0])

    def starts(formula, channels=slice(None)):
        return _level_starts(
            lambda u: formula.codes(u * sign[channels]), u_low[channels], u_high[channels], levels
        )

    expected = starts(chain)
    for dtype in PRECISIONS:
        candidate = affine.in_dtype(dtype)
        if candidate is None:
            continue
        # Both are at least ``low`` everywhere, so equal starts of every level above it make
        # them equal at every accumulator value of the range.
        found = starts(candidate)
        if np.array_equal(found, expected):
            return candidate
        nudged = _nudged(candidate, expected, found, starts)
        if nudged is not None and np.array_equal(starts(nudged), expected):
            return nudged
    return None


NUDGE_ULPS = 3  # constants tried up to this many units in the last place from the rounded ones
NUDGE_MAX_PAIRS = 4096  # (level, channel) pairs of the channels to nudge, at most
# offset and multiplier steps in ulps, nearest first ((0, 0) is the candidate itself)
_NUDGES = sorted(
    ((dc, dm) for dc in range(-NUDGE_ULPS, NUDGE_ULPS + 1)
     for dm in range(-NUDGE_ULPS, NUDGE_ULPS + 1)),
    key=lambda step: (abs(step[0]) + abs(step[1]), step),
)[1:]  # fmt: skip


def _ulps(values: np.ndarray, steps: int) -> np.ndarray:
    """``values`` moved ``steps`` representable numbers up (or down, when negative)."""
    toward = np.inf if steps > 0 else -np.inf
    for _ in range(abs(steps)):
        values = np.nextafter(values, np.array(toward, dtype=values.dtype))
    return values


def _nudged(candidate, expected, found, starts) -> AffineRequantization | None:
    """``candidate`` with the constants of the channels it gets wrong moved a few ulps, until
    each channel's level starts are the expected ones; None where a channel finds none.

    Rounded to float32, the constants put a level start one accumulator step off where the
    exact value sits within an ulp of a rounding tie: the float32 form failed this way on 11
    of ResNet-18 W2A2's 21 layers, which then ran in float64 (half the vector lanes). A
    constant an ulp or two away lands on the right side, and the proof still decides.
    """
    channels = expected.shape[1]
    offset = np.broadcast_to(candidate.offset, (channels,)).copy()
    multiplier = np.broadcast_to(candidate.multiplier, (channels,)).copy()
    wrong = np.flatnonzero(np.any(found != expected, axis=0))
    if wrong.size * expected.shape[0] > NUDGE_MAX_PAIRS:
        return None
    for dc, dm in _NUDGES:
        if wrong.size == 0:
            break
        trial = replace(
            candidate, offset=_ulps(offset[wrong], dc), multiplier=_ulps(multiplier[wrong], dm)
        )
        if np.any(np.sign(trial.multiplier) != np.sign(multiplier[wrong])):
            continue
        right = np.all(starts(trial, wrong) == expected[:, wrong], axis=0)
        offset[wrong[right]] = trial.offset[right]
        multiplier[wrong[right]] = trial.multiplier[right]
        wrong = wrong[~right]
    if wrong.size:
        return None
    return replace(candidate, offset=offset, multiplier=multiplier)


MAX_THRESHOLD_LEVELS = 3  # code levels above the lowest where thresholds beat two float ops


@dataclass(frozen=True)
class ThresholdRequantization:
    """``low + sum over levels of [sign * t >= threshold]`` per output channel: the codes of a
    monotone requantization of the integer ``t`` as integer compares (FINN's MultiThreshold).

    For codes of two bits (three levels above the lowest) this is three compares and adds on
    integer lanes against the affine form's seven float operations (convert, add, multiply,
    round, clip, convert back), and it is exact by construction: the thresholds are where
    the float64 chain's levels start.
    """

    thresholds: np.ndarray  # int32 (levels, channels): where each level above ``low`` starts
    signs: np.ndarray  # int32 (channels,): +1 where the codes increase with t, -1 where not
    low: int

    @property
    def nbytes(self) -> int:
        """Bytes of the constants the module holds: the rows, and the masks where needed."""
        rows, masks = self.kernel_constants()
        return int(sum(row.nbytes for row in rows) + (0 if masks is None else masks.nbytes))

    def codes(self, t: np.ndarray) -> np.ndarray:
        """The codes of integer ``t`` (channels on the last axis)."""
        u = t.astype(np.int64) * self.signs
        return self.low + np.sum(u[..., None, :] >= self.thresholds, axis=-2)

    def kernel_constants(self) -> tuple[list[np.ndarray], np.ndarray | None]:
        """(one threshold row per level, XOR masks or None) for ``threshold_requantize``: in
        a channel whose sign is -1, ``-t >= s`` is ``~t >= s - 1`` (``~t = -t - 1``), one
        ``eor`` instead of a multiply; None where every sign is +1."""
        negative = self.signs < 0
        if not negative.any():
            return list(self.thresholds), None
        rows = np.where(negative, self.thresholds.astype(np.int64) - 1, self.thresholds)
        masks = np.where(negative, -1, 0).astype(np.int32)
        return list(rows.astype(np.int32)), masks


def _threshold_form(
    starts: np.ndarray, signs: np.ndarray, low: int, high: int
) -> ThresholdRequantization | None:
    """Thresholds from level starts (levels x channels, in u = sign * t), None where there
    are too many levels or a start does not fit int32."""
    if high - low > MAX_THRESHOLD_LEVELS or starts.size == 0:
        return None
    info = np.iinfo(np.int32)
    if starts.min() <= info.min or starts.max() > info.max:
        return None
    return ThresholdRequantization(starts.astype(np.int32), signs.astype(np.int32), low)


def fit_thresholds(
    chain: Requantization, acc_low: np.ndarray, acc_high: np.ndarray
) -> ThresholdRequantization | None:
    """``chain`` as thresholds on the accumulator (``MAX_THRESHOLD_LEVELS`` levels at most);
    None where the chain has more levels or is not a monotone function of acc."""
    domain = _monotone_domain(chain, acc_low, acc_high)
    if domain is None:
        return None
    low, signs, u_low, u_high, levels = domain
    if not 0 < levels.size <= MAX_THRESHOLD_LEVELS:  # a constant, or the affine form's case
        return None
    starts = _level_starts(lambda u: chain.codes(u * signs), u_low, u_high, levels)
    form = _threshold_form(starts, signs, low, chain.high)
    # the chain is monotone in u, so level starts determine it; checked at the range's ends
    if form is None:
        return None
    for u in (u_low, u_high):
        if not np.array_equal(form.codes(u * signs), chain.codes(u * signs)):
            return None
    return form


def _sum_codes(
    scale: float, zero_point: int, ranges: list[tuple[int, int]], relu: bool,
    out_scale: float, out_zero_point: int, low: int, high: int,
) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """(every ``t = sum(code - zero_point)`` of ``ranges``, the float64 chain's code at each)
    for a sum of one or two code tensors, or None where the codes do not increase with t.

    The chain dequantizes each code exactly (a small integer times a float32 scale) and adds
    them exactly (one scale), so its value is ``t * scale``, a function of ``t`` alone."""
    if len(ranges) not in (1, 2) or scale <= 0 or out_scale <= 0:
        return None
    t_low = sum(lo - zero_point for lo, _ in ranges)
    t_high = sum(hi - zero_point for _, hi in ranges)
    t = np.arange(t_low, t_high + 1, dtype=np.int64)
    x = t.astype(np.float64) * scale
    if relu:
        x = np.maximum(x, 0.0)
    codes = np.clip(np.rint(x / out_scale) + out_zero_point, low, high).astype(np.int64)
    if np.any(np.diff(codes) < 0):
        return None
    return t, codes


def fit_threshold_sum(
    scale: float, zero_point: int, ranges: list[tuple[int, int]], relu: bool,
    out_scale: float, out_zero_point: int, low: int, high: int,
) -> ThresholdRequantization | None:  # fmt: skip
    """``fit_affine_sum``'s codes as thresholds on ``t = sum(code - zero_point)``, from the
    float64 chain at every ``t`` of the range (``_sum_codes``)."""
    found = _sum_codes(scale, zero_point, ranges, relu, out_scale, out_zero_point, low, high)
    if found is None:
        return None
    t, codes = found
    t_high = int(t[-1])
    bottom = int(codes[0])
    levels = np.arange(bottom + 1, high + 1)
    # where each level starts: t_high + 1 where it never does
    starts = np.array([t[codes >= level][0] if codes[-1] >= level else t_high + 1
                       for level in levels], dtype=np.int64)  # fmt: skip
    form = _threshold_form(starts[:, None], np.ones(1), bottom, high)
    if form is None or not np.array_equal(form.codes(t[:, None])[:, 0], codes):
        return None
    return form


@dataclass(frozen=True)
class IntegerRequantization:
    """``clip((t * multiplier + offset) >> shift, low, high)``: the codes of a re-quantized
    small integer ``t`` (a residual add's two codes, or one code tensor moved to another
    scale) in integer lanes, exact on every ``t`` of the range it was fitted on.

    Against the float form's widening, convert, add, multiply, clip, round and narrowing
    (about 22 vector operations per 8 codes on NEON, where four bits of ``t`` go through
    four widenings to 32-bit floats), a multiply-add and a shift on 16-bit lanes where the
    products fit (``dtype``), 32-bit lanes where not.
    """

    multiplier: int
    offset: int
    shift: int
    low: int
    high: int
    dtype: str  # int16 or int32: the lanes the products fit

    def codes(self, t: np.ndarray) -> np.ndarray:
        y = (t.astype(np.int64) * self.multiplier + self.offset) >> self.shift
        return np.clip(y, self.low, self.high)


INTEGER_MAX_SHIFT = 24  # shifts tried; the multiplier grows as 2^shift times the scale ratio


def _integer_form(t: np.ndarray, expected: np.ndarray, ratio: float, low: int, high: int):
    """The first (smallest shift) ``IntegerRequantization`` equal to ``expected`` (int64, one
    per value of ``t``), or None. For a given multiplier M and shift S the offsets B that
    work form one interval: where the code is above ``low`` it needs
    ``t*M + B >= code << S``, where below ``high`` ``t*M + B < (code + 1) << S``."""
    above, below = expected > low, expected < high
    for shift in range(INTEGER_MAX_SHIFT + 1):
        center = ratio * 2.0**shift
        for multiplier in range(int(np.floor(center)) - 1, int(np.ceil(center)) + 2):
            if multiplier <= 0:
                continue
            product = t * multiplier
            lower = (expected << shift) - product
            upper = ((expected + 1) << shift) - product - 1
            b_low = int(lower[above].max()) if above.any() else int(upper.min())
            b_high = int(upper[below].min()) if below.any() else b_low
            if b_low > b_high:
                continue
            # every value in the lanes' type: t, t * M, B, t * M + B
            largest = int(max(abs(product).max(), abs(product + b_low).max(), abs(t).max(),
                              abs(b_low)))  # fmt: skip
            dtype = "int16" if largest < 2**15 else "int32"
            if largest >= 2**31:
                return None
            form = IntegerRequantization(multiplier, b_low, shift, low, high, dtype)
            if np.array_equal(form.codes(t), expected):
                return form
    return None


ACCUMULATOR_SHIFT = 48  # fraction bits of the fixed point at most (products stay below 2^62)
INTEGER_SEARCH = (64, 1024, 8192)  # multipliers tried on either side of the exact slope


@dataclass(frozen=True)
class IntegerAccumulatorRequantization:
    """``(int64(clip(acc, low_acc, high_acc)) * multiplier + offset) >> shift`` per output
    channel: a requantization of accumulators as one 32 x 32 -> 64-bit multiply-add
    (``smlal`` on NEON) and a shift, exact on every accumulator value (checked at every
    level start and the range's ends).

    Where float32's 24-bit mantissa cannot tell an 8-bit code's level starts from the
    float64 chain's (in most channels of ResNet-20 W8A8 one level or more lands an
    accumulator step off), the chain would stay in float64: two lanes per vector, and a widening and
    two conversions of every accumulator. With the multiplier as wide as int32 allows (about
    40 fraction bits for a ResNet's 8-bit layers) the line places every level start where
    the float64 chain does.
    """

    low_acc: np.ndarray  # int32 per channel: the accumulator clipped to the levels' span
    high_acc: np.ndarray
    multiplier: np.ndarray  # int32 per channel (negative where codes fall as acc grows)
    offset: np.ndarray  # int64 per channel
    shift: int

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.kernel_constants()))

    def kernel_constants(self) -> list[np.ndarray]:
        return [self.low_acc, self.high_acc, self.multiplier, self.offset]

    def codes(self, acc: np.ndarray) -> np.ndarray:
        """The codes of int ``acc`` (channels on the last axis)."""
        clipped = np.clip(acc.astype(np.int64), self.low_acc, self.high_acc)
        return (clipped * self.multiplier + self.offset) >> self.shift


def _offset_intervals(m: np.ndarray, starts: np.ndarray, base: int, top: int, span: int,
                      shift: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For each multiplier M of ``m`` (int64, shape (n, 1)), the interval [low, high] of the
    offsets B with ``floor((d*M + B) / 2^shift)`` equal to ``base`` at d = 0, rising by one
    at every d in ``starts`` (increasing, in (0, span]) and at most ``top`` at ``span``;
    empty (low > high) where none does."""
    unit = 1 << shift
    levels = base + 1 + np.arange(starts.size, dtype=np.int64)
    # level v starts at s: s*M + B >= v << shift and (s - 1)*M + B < v << shift
    b_low = np.full(m.shape[0], base * unit, dtype=np.int64)
    b_high = np.full(m.shape[0], (top + 1) * unit - 1, dtype=np.int64) - span * m[:, 0]
    if starts.size:
        b_low = np.maximum(b_low, ((levels << shift) - starts * m).max(axis=1))
        b_high = np.minimum(b_high, ((levels << shift) - 1 - (starts - 1) * m).min(axis=1))
    return b_low, np.minimum(b_high, (base + 1) * unit - 1)  # the code at d = 0 is base


def _fit_line(starts: np.ndarray, base: int, top: int, span: int, slope: float, shift: int):
    """Integer (M, B) of ``_offset_intervals``' line; None where no M near
    ``slope * 2^shift`` works."""
    center = round(slope * (1 << shift))
    for width in INTEGER_SEARCH:
        m = np.arange(max(1, center - width), center + width + 1, dtype=np.int64)[:, None]
        b_low, b_high = _offset_intervals(m, starts, base, top, span, shift)
        fits = np.flatnonzero(b_low <= b_high)
        if fits.size:
            best = fits[np.argmin(np.abs(m[fits, 0] - center))]
            return int(m[best, 0]), int(b_low[best])
    return None


@dataclass(frozen=True)
class _LineProblem:
    """What both integer fits need of a chain: per channel, in u = sign(A) * acc (where the
    codes increase), the level starts, the span [first, last] between the first level start
    (less one) and the last, the codes there, and the slope |A| / s."""

    sign: np.ndarray
    u_low: np.ndarray
    u_high: np.ndarray
    starts: np.ndarray  # (levels, channels)
    first: np.ndarray
    last: np.ndarray
    base: np.ndarray
    top: np.ndarray
    slope: np.ndarray

    def inside(self, channel: int) -> np.ndarray:
        """The channel's level starts in (first, last], as offsets d from first."""
        starts, first = self.starts[:, channel], self.first[channel]
        return starts[(starts > first) & (starts <= self.last[channel])] - first

    def agrees(self, codes, chain: Requantization) -> bool:
        """Whether ``codes(acc)`` equals the chain at every level start, the accumulator before
        it and the range's ends: both are monotone, so then equal everywhere in between."""
        for u in (self.starts, self.starts - 1, self.u_low[None, :], self.u_high[None, :]):
            acc = np.clip(u, self.u_low, self.u_high) * self.sign
            if not np.array_equal(codes(acc), chain.codes(acc)):
                return False
        return True


def _line_problem(chain: Requantization, acc_low: np.ndarray, acc_high: np.ndarray):
    """``_LineProblem`` of ``chain`` over the accumulator range, or None where the chain's A
    is not finite and nonzero or no level starts in the range."""
    domain = _monotone_domain(chain, acc_low, acc_high)
    if domain is None:
        return None
    _, sign, u_low, u_high, levels = domain
    if levels.size == 0:
        return None
    starts = _level_starts(lambda u: chain.codes(u * sign), u_low, u_high, levels)
    # per channel, u clipped to [first - 1, last]: below it the code is the lowest, above it
    # the highest it reaches
    first = np.maximum(starts[0] - 1, u_low)
    last = np.minimum(starts[-1], u_high)
    return _LineProblem(
        sign, u_low, u_high, starts, first, last,
        base=chain.codes(first * sign).astype(np.int64),
        top=chain.codes(last * sign).astype(np.int64),
        slope=np.abs(np.asarray(chain.multiplier, dtype=np.float64)) / chain.scale,
    )  # fmt: skip


def fit_integer_requantization(
    chain: Requantization, acc_low: np.ndarray, acc_high: np.ndarray
) -> IntegerAccumulatorRequantization | None:
    """``chain`` as ``IntegerAccumulatorRequantization``, or None where a channel has no
    such line or a constant would not fit int32."""
    line = _line_problem(chain, acc_low, acc_high)
    if line is None:
        return None
    # as many fraction bits as the largest multiplier, about slope x 2^shift, leaves in int32
    shift = min(ACCUMULATOR_SHIFT, int(np.floor(np.log2(2**30 / line.slope.max()))))
    if shift < 16:
        return None
    first, last, sign = line.first, line.last, line.sign
    channels = line.starts.shape[1]
    multiplier = np.zeros(channels, dtype=np.int64)
    offset = np.zeros(channels, dtype=np.int64)
    for c in range(channels):
        found = _fit_line(line.inside(c), int(line.base[c]), int(line.top[c]),
                          int(last[c] - first[c]), float(line.slope[c]), shift)  # fmt: skip
        if found is None:
            return None
        multiplier[c], offset[c] = found
    low_acc = np.where(sign > 0, first, -last)
    high_acc = np.where(sign > 0, last, -first)
    # d = sign * acc - first, so d * M + B = acc * (sign * M) + (B - first * M): one
    # sign-extended 32 x 32-bit product (``smull``) and a 64-bit offset
    constants = (low_acc, high_acc, sign * multiplier)
    offset = offset - first * multiplier
    info = np.iinfo(np.int32)
    if any(a.min() < info.min or a.max() > info.max for a in constants):
        return None
    if np.abs(offset).max() >= 2**62 or np.abs((last - first) * multiplier).max() >= 2**62:
        return None
    form = IntegerAccumulatorRequantization(
        *(np.ascontiguousarray(a, dtype=np.int32) for a in constants),
        offset=np.ascontiguousarray(offset, dtype=np.int64),
        shift=shift,
    )
    return form if line.agrees(form.codes, chain) else None


HIGH_HALF_STAGE = "high_half"  # the TE stage with the intrinsic: the CPU schedule keeps it
HIGH_HALF_BITS = 31  # sqdmulh(x, M) = floor(2*x*M / 2^32) = floor(x*M / 2^31)
HIGH_HALF_TRIES = 16  # multipliers whose offset interval is searched for a small offset
HIGH_HALF_CANDIDATES = 1 << 22  # offsets enumerated per multiplier at most


@dataclass(frozen=True)
class HighHalfRequantization:
    """``clip((sqdmulh(acc + offset, multiplier) >> shift) + zero, low, high)`` per output
    channel: AArch64's fixed-point requantization, exact on every accumulator value.

    ``IntegerAccumulatorRequantization`` clips the accumulator, widens it and multiplies in
    64-bit lanes (``smlal`` / ``smlal2``, two lanes per vector, plus a copy of the offset
    into every product register and two shifts): about ten vector operations per four
    codes, 18% of ResNet-20 W8A8 on the Cortex-A76 model. ``sqdmulh`` keeps four int32 lanes:
    the high half of ``2 * x * M`` is ``floor(x * M / 2^31)``, and an arithmetic shift right by
    ``shift`` more gives ``floor(x * M / 2^(31 + shift))`` (floors of divisions by powers of
    two compose). The line ``floor((acc * M + B) / 2^K)`` of the 64-bit form becomes this one
    where ``B = offset * M + zero * 2^K`` for a small ``offset``: the fit searches the
    offsets that work for each multiplier (an interval of B, as for the 64-bit form) for one
    that keeps ``acc + offset`` in int32. The clip moves after the product (on codes), which
    is exact where the chain's codes below the first level start and above the last are the
    clip bounds themselves. The shifted high half and the zero are added and clipped in
    int16 (eight lanes per vector) where every value of the range fits it, else in int32.
    """

    offset: np.ndarray  # int32 per channel, added to the accumulator
    multiplier: np.ndarray  # int32 per channel, positive
    zero: np.ndarray  # per channel, added to the shifted high half, both in ``zero.dtype``
    shift: int
    low: int  # the codes' clip, as in the chain (under ReLU: its floor)
    high: int

    @property
    def dtype(self) -> str:
        """Where the zero is added and the codes clipped: int16 (eight lanes) or int32."""
        return str(self.zero.dtype)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.kernel_constants()))

    def kernel_constants(self) -> list[np.ndarray]:
        return [self.offset, self.multiplier, self.zero]

    def codes(self, acc: np.ndarray) -> np.ndarray:
        """The codes of int ``acc`` (channels on the last axis), as ``sqdmulh`` computes them."""
        x = acc.astype(np.int64) + self.offset
        high_half = (x * self.multiplier) >> HIGH_HALF_BITS
        return np.clip((high_half >> self.shift) + self.zero.astype(np.int64), self.low, self.high)


def _small_offset(low: int, high: int, multiplier: int, bits: int, limit: int):
    """Integers (c, z) with ``low <= c * multiplier + z * 2^bits <= high`` and ``|c| <= limit``;
    None where the first ``HIGH_HALF_CANDIDATES`` values of the interval give none.
    ``multiplier`` is odd, so every value v of the interval has one c modulo 2^bits
    (``v / multiplier`` in the 2-adic integers): the values are tried in growing batches,
    the smallest |c| of the first batch that has one within ``limit`` taken."""
    mask = (1 << bits) - 1
    inverse = np.uint64(pow(multiplier, -1, 1 << bits))
    total = min(high - low + 1, HIGH_HALF_CANDIDATES)
    start = 0
    for batch in (1 << 12, 1 << 16, 1 << 20, HIGH_HALF_CANDIDATES):
        count = min(batch, total) - start
        if count <= 0:
            break
        values = np.uint64((low + start) & mask) + np.arange(count, dtype=np.uint64)
        residues = ((values * inverse) & np.uint64(mask)).astype(np.int64)  # wraps mod 2^64
        centred = np.where(residues >= 1 << (bits - 1), residues - (1 << bits), residues)
        best = int(np.argmin(np.abs(centred)))
        c = int(centred[best])
        if abs(c) <= limit:
            rest = low + start + best - c * multiplier
            return c, rest >> bits  # rest is a multiple of 2^bits
        start += count
    return None


def _fit_high_half_line(starts: np.ndarray, base: int, top: int, span: int, slope: float,
                        bits: int, first: int, limit: int):  # fmt: skip
    """(M, c, z) with ``floor(((acc + c) * M) / 2^bits) + z`` equal to ``_fit_line``'s line
    at every acc = first + d, M odd and below 2^31, |c| at most ``limit``; None where the
    multipliers near ``slope * 2^bits`` give none."""
    center = round(slope * (1 << bits))
    for width in INTEGER_SEARCH:
        m = np.arange(max(1, center - width), min(center + width, 2**31 - 1) + 1, dtype=np.int64)
        m = m[m % 2 == 1][:, None]
        b_low, b_high = _offset_intervals(m, starts, base, top, span, bits)
        fits = np.flatnonzero(b_low <= b_high)
        for index in fits[np.argsort(np.abs(m[fits, 0] - center))][:HIGH_HALF_TRIES]:
            mult = int(m[index, 0])
            # d * M + B with d = acc - first: acc * M + (B - first * M)
            found = _small_offset(int(b_low[index]) - first * mult,
                                  int(b_high[index]) - first * mult, mult, bits, limit)  # fmt: skip
            if found is not None:
                return mult, *found
    return None


def fit_high_half_requantization(
    chain: Requantization, acc_low: np.ndarray, acc_high: np.ndarray
) -> HighHalfRequantization | None:
    """``chain`` as ``HighHalfRequantization``, or None where a channel's codes fall as the
    accumulator grows, its line needs more than int32 offers, or the clip cannot move after
    the product."""
    line = _line_problem(chain, acc_low, acc_high)
    if line is None or np.any(line.sign < 0):
        return None
    # as many fraction bits as the largest multiplier, about slope x 2^bits, leaves below 2^31
    bits = min(ACCUMULATOR_SHIFT, int(np.floor(np.log2(2**30 / line.slope.max()))))
    if bits < HIGH_HALF_BITS:
        return None
    u_low, u_high, first, last = line.u_low, line.u_high, line.first, line.last
    floor_code = max(chain.low, chain.zero_point) if chain.relu else chain.low
    clipped_below = (first > u_low) & (line.base != floor_code)
    if np.any(clipped_below | ((last < u_high) & (line.top != chain.high))):
        return None
    limit = 2**31 - 1 - np.maximum(np.abs(u_low), np.abs(u_high))
    found = []
    for c in range(line.starts.shape[1]):
        fit = _fit_high_half_line(line.inside(c), int(line.base[c]), int(line.top[c]),
                                  int(last[c] - first[c]), float(line.slope[c]), bits,
                                  int(first[c]), int(limit[c]))  # fmt: skip
        if fit is None:
            return None
        found.append(fit)
    multiplier, offset, zero = np.array(found, dtype=np.int64).T
    # the shifted high half is monotone in acc: its ends, and the ends plus the zero, decide
    # the narrowest type that holds every value on the way
    ends = np.stack([((u + offset) * multiplier) >> bits for u in (u_low, u_high)])
    values = np.concatenate([ends.ravel(), (ends + zero).ravel(), zero])
    low_value, high_value = int(values.min()), int(values.max())
    fitting = [t for t in (np.int16, np.int32)
               if np.iinfo(t).min <= low_value and high_value <= np.iinfo(t).max]  # fmt: skip
    if not fitting:
        return None
    form = HighHalfRequantization(
        np.ascontiguousarray(offset, dtype=np.int32),
        np.ascontiguousarray(multiplier, dtype=np.int32),
        np.ascontiguousarray(zero, dtype=fitting[0]),
        shift=bits - HIGH_HALF_BITS, low=floor_code, high=chain.high,
    )  # fmt: skip
    return form if line.agrees(form.codes, chain) else None


def fit_integer_sum(
    scale: float, zero_point: int, ranges: list[tuple[int, int]], relu: bool,
    out_scale: float, out_zero_point: int, low: int, high: int,
) -> IntegerRequantization | None:  # fmt: skip
    """``fit_threshold_sum``'s codes as ``IntegerRequantization`` of ``t``, checked at every
    ``t`` of the range; None where no multiplier and shift up to ``INTEGER_MAX_SHIFT`` give
    them (or the codes do not increase with ``t``)."""
    found = _sum_codes(scale, zero_point, ranges, relu, out_scale, out_zero_point, low, high)
    if found is None:
        return None
    t, expected = found
    bottom = max(low, out_zero_point) if relu else low  # ReLU's floor: the clip's, not the line's
    return _integer_form(t, expected, scale / out_scale, bottom, high)


def fit_affine_sum(
    scale: float, zero_point: int, ranges: list[tuple[int, int]], relu: bool,
    out_scale: float, out_zero_point: int, low: int, high: int,
) -> AffineRequantization | None:  # fmt: skip
    """The codes of ``quantize(relu?(dequantize(a) + dequantize(b)))`` (one or two code
    tensors with one ``scale`` and ``zero_point``: a residual add, or a tensor re-quantized to
    another scale) as ``clip(round((t + c) * m))`` of the integer ``t = (a - zp) + (b - zp)``,
    or None where that differs from the float64 chain for any pair of codes in ``ranges``
    (checked on every pair: at most 256 x 256)."""
    if len(ranges) not in (1, 2) or scale <= 0 or out_scale <= 0:
        return None
    grids = np.meshgrid(*[np.arange(lo, hi + 1, dtype=np.int64) for lo, hi in ranges])
    x = (grids[0].astype(np.float64) - zero_point) * scale
    for grid in grids[1:]:
        x = x + (grid.astype(np.float64) - zero_point) * scale
    if relu:
        x = np.maximum(x, 0.0)
    expected = np.clip(np.rint(x / out_scale) + out_zero_point, low, high)
    bottom = max(low, out_zero_point) if relu else low
    affine = AffineRequantization(
        offset=np.array([out_zero_point * out_scale / scale]),
        multiplier=np.array([scale / out_scale]),
        low=bottom,
        high=high,
    )
    total = sum(grid - zero_point for grid in grids)
    for dtype in PRECISIONS:
        candidate = affine.in_dtype(dtype)
        if candidate is not None and np.array_equal(candidate.codes(total), expected):
            return candidate
    return None


def accumulator_range(
    weights: np.ndarray, act_range: tuple[int, int], zero_point: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, the smallest and largest sum of w * (x - zero_point) over the
    reduction, with every x in ``act_range`` (weights: output channel first)."""
    rows = weights.reshape(weights.shape[0], -1).astype(np.int64)
    lo, hi = act_range[0] - zero_point, act_range[1] - zero_point
    low = np.minimum(rows * lo, rows * hi).sum(axis=1)
    high = np.maximum(rows * lo, rows * hi).sum(axis=1)
    return low, high


def threshold_requantize(terms, rows, low: int, out_dtype: str, channel_axis: int,
                         zero_point: int = 0, masks=None):  # fmt: skip
    """TE: ``low + sum_l [u >= rows[l]]`` as ``out_dtype``, per channel, where ``u`` is the
    int32 sum ``t`` of ``terms`` minus ``zero_point`` each, or ``t ^ masks`` where given
    (``ThresholdRequantization.kernel_constants``: ``~t`` in channels whose codes fall as
    ``t`` grows). ``rows`` and ``masks``: int32, one per channel or one for all; one 1-D
    tensor per level: a read indexed by the channel alone is what lets TVM fuse the compares
    into the conv as a broadcast (a (level, channel) table is not fused)."""
    from tvm import te, tirx

    def at(values, channel):
        return values[0] if int(values.shape[0]) == 1 else values[channel]

    dtype = str(rows[0].dtype)  # int16 where the sums fit (eight lanes), else int32

    def code(*index):
        channel = index[channel_axis]
        u = terms[0](*index).astype(dtype) - tirx.const(zero_point, dtype)
        for term in terms[1:]:
            u = u + (term(*index).astype(dtype) - tirx.const(zero_point, dtype))
        if masks is not None:
            u = tirx.bitwise_xor(u, at(masks, channel))
        count = tirx.const(low, dtype)
        for row in rows:
            count = count + (u >= at(row, channel)).astype(dtype)
        return count.astype(out_dtype)

    return te.compute(terms[0].shape, code, name="requantize")


# 1.5 x 2^(mantissa bits): adding it rounds any |x| < 2^(mantissa bits - 1) to the nearest
# integer, ties to even (the spacing of floats there is exactly 1), and leaves that integer
# in the low bits of the sum's representation.
ROUNDING_MAGIC = {"float32": (1.5 * 2.0**23, "int32"), "float64": (1.5 * 2.0**52, "int64")}


def _rounded_bits(x):
    """``rint(x)`` for |x| <= 255 (a clipped code) in the low bits of an integer: one float add
    and a reinterpret, where ``round`` then a float-to-int conversion take two conversions
    (``frinti`` + ``fcvtzs`` on NEON, which the Cortex-A76 issues on one pipe of its two).
    A cast to 8 or 16 bits keeps exactly the code. The add must not be contracted with the
    multiply before it into an FMA: the clip between them prevents that."""
    from tvm import tirx

    dtype = str(x.ty.dtype)
    magic, bits = ROUNDING_MAGIC[dtype]
    return tirx.reinterpret(bits, x + tirx.const(magic, dtype))


def integer_requantize(terms, form: IntegerRequantization, out_dtype: str, zero_point: int = 0):
    """TE: ``IntegerRequantization`` of ``t = sum(term - zero_point)``, in ``form.dtype``."""
    from tvm import te, tirx

    dtype = form.dtype

    def code(*index):
        t = terms[0](*index).astype(dtype) - tirx.const(zero_point, dtype)
        for term in terms[1:]:
            t = t + (term(*index).astype(dtype) - tirx.const(zero_point, dtype))
        y = tirx.shift_right(
            t * tirx.const(form.multiplier, dtype) + tirx.const(form.offset, dtype),
            tirx.const(form.shift, dtype),
        )
        clipped = tirx.max(tirx.min(y, tirx.const(form.high, dtype)), tirx.const(form.low, dtype))
        return clipped.astype(out_dtype)

    return te.compute(terms[0].shape, code, name="requantize")


def integer_accumulator_requantize(acc, constants, shift: int, out_dtype: str,
                                   channel_axis: int):  # fmt: skip
    """TE: ``IntegerAccumulatorRequantization`` of the accumulator ``acc`` (``constants``:
    its ``kernel_constants``, 1-D tensors indexed by the channel: int32 clip bounds and
    multipliers, int64 offsets). The clip in int32 comes before the widening: without it
    LLVM widens the accumulator's own terms and multiplies in scalar 64-bit registers."""
    from tvm import te, tirx

    low_acc, high_acc, multiplier, offset = constants

    def code(*index):
        c = index[channel_axis]
        clipped = tirx.max(tirx.min(acc(*index).astype("int32"), high_acc[c]), low_acc[c])
        y = clipped.astype("int64") * multiplier[c].astype("int64") + offset[c]
        return tirx.shift_right(y, tirx.const(shift, "int64")).astype(out_dtype)

    return te.compute(acc.shape, code, name="requantize")


def high_half_requantize(acc, constants, shift: int, low: int, high: int, out_dtype: str,
                         channel_axis: int, dtype: str = "int16"):  # fmt: skip
    """TE: ``HighHalfRequantization`` of the accumulator ``acc`` (``constants``: its
    ``kernel_constants``, int32 per channel), ``sqdmulh`` as AArch64's intrinsic (LLVM does
    not form it from a widening multiply and a shift).

    Two stages: ``high_half`` (the shifted high halves, narrowed to ``dtype``: int16 where
    ``fit_high_half_requantization`` found every value fits), which the CPU schedule keeps as
    a stage of four-lane vectors (LLVM cannot split a wider call of the intrinsic), and the
    zero, the clip and the narrowing in ``dtype``, which go into the epilogue's sixteen-lane
    vectors."""
    from tvm import te, tirx

    offset, multiplier, zero = constants

    def fixed_point(*index):
        c = index[channel_axis]
        x = acc(*index).astype("int32") + offset[c]
        high_half = tirx.call_llvm_pure_intrin(
            "int32", "llvm.aarch64.neon.sqdmulh", x, multiplier[c]
        )
        return tirx.shift_right(high_half, tirx.const(shift, "int32")).astype(dtype)

    shifted = te.compute(acc.shape, fixed_point, name=HIGH_HALF_STAGE)

    def code(*index):
        q = shifted(*index) + zero[index[channel_axis]]
        q = tirx.max(tirx.min(q, tirx.const(high, dtype)), tirx.const(low, dtype))
        return q.astype(out_dtype)

    return te.compute(acc.shape, code, name="requantize")


def requantize_accumulator(terms, offset, multiplier, low: int, high: int, out_dtype: str,
                           channel_axis: int, zero_point: int = 0):  # fmt: skip
    """TE: ``clip(round((float(t) + offset) * multiplier), low, high)`` as ``out_dtype``, in
    the constants' float type,
    where ``t`` is the int32 sum of ``terms`` minus ``zero_point`` each (one accumulator with
    zero point 0, or the code tensors of ``fit_affine_sum``).

    ``offset`` and ``multiplier`` are 1-D float32 or float64 tensors, one value per channel
    or one for all. The add comes before the multiply so that LLVM cannot contract the two
    into an FMA, which would round once instead of twice and break what the fit proved.
    """
    from tvm import te, tirx

    def at(values, channel):
        return values[0] if int(values.shape[0]) == 1 else values[channel]

    def code(*index):
        channel = index[channel_axis]
        total = terms[0](*index).astype("int32") - zero_point
        for term in terms[1:]:
            total = total + (term(*index).astype("int32") - zero_point)
        x = (total.astype(offset.dtype) + at(offset, channel)) * at(multiplier, channel)
        clipped = tirx.max(tirx.min(x, float(high)), float(low))
        return _rounded_bits(clipped).astype(out_dtype)

    return te.compute(terms[0].shape, code, name="requantize")
