"""Analytic FPGA resource and latency estimates for an hls4ml io_stream design.

No Vivado or Vitis here, so nothing is synthesized: every number is computed from the layer
shapes, bit widths and the reuse factor R (how many cycles one multiplier is reused), and is
labelled ``estimated``. The model, per conv / dense layer with P weights:

- multipliers ``M = ceil(P / R)`` for one output position (hls4ml's dense and io_stream conv
  kernels compute one output pixel, all filters, every R cycles);
- a product of ``w + a`` <= 10 bits (weight and input activation bits) is built from LUTs,
  ``w * a`` of them; a wider one takes a DSP slice; ternary weights (w = 2) need no
  multiplier at all, only an adder of ``a`` LUTs;
- accumulation: one adder of ``B = w + a + ceil(log2(P / F))`` bits per multiplier, one LUT
  per bit, adding into one ``B``-bit accumulator register per output (F filters);
- flip-flops, the registers the design holds: the F accumulators (``F * B``); a pipeline
  register after each fabric product (``w + a`` bits, ternary ``a + 1``; a DSP keeps its
  product in its own M register); and for a conv the io_stream sliding window,
  ``k * k * C * a`` bits. So flip-flops follow the outputs and the window, LUTs the
  multipliers: the two differ by design rather than being one number twice;
- weights: in logic when R = 1, else in BRAM_18K banks 36 bits wide: ``ceil(M * w / 36)``
  banks of depth R (``ceil(R / 512)`` blocks each);
- conv line buffers: ``(k - 1)`` input rows x width x channels x ``a`` bits, in BRAM_18K;
- cycles: ``R`` per output pixel, so ``H' * W' * R`` for a conv and ``R`` for a dense layer.
  Layers stream concurrently: the design takes a new image every ``max`` layer cycles (the
  interval) and one image needs at most the ``sum`` (the latency reported).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from apprentice_hw.errors import UserError
from apprentice_hw.report.layers import LayerCost

LUT_PRODUCT_BITS = 10  # products up to this many bits (w + a) map to LUTs, wider to DSPs
BRAM_BITS = 18 * 1024
BRAM_WIDTH = 36
BRAM_DEPTH = 512
UTILIZATION = 0.8  # the share of each resource a design may use and still route
REUSE_CHOICES = tuple(2**i for i in range(13))  # 1 .. 4096


@dataclass(frozen=True)
class FpgaSpec:
    """What a target file's ``[fpga]`` table says about the part."""

    part: str
    clock_mhz: float
    luts: int
    ffs: int
    dsps: int
    bram_18k: int

    @classmethod
    def from_target(cls, target) -> FpgaSpec:
        where = f"target file {target.source} [fpga]"
        table = target.extra.get("fpga")
        if not isinstance(table, dict):
            raise UserError(
                f"{where}: an FPGA target needs an [fpga] table (see targets/zcu104.toml)"
            )
        resources = table.get("resources", {})
        try:
            spec = cls(
                part=str(table["part"]), clock_mhz=float(table["clock_mhz"]),
                luts=int(resources["luts"]), ffs=int(resources["ffs"]),
                dsps=int(resources["dsps"]), bram_18k=int(resources["bram_18k"]),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise UserError(
                f"{where}: missing or invalid field {exc}; see targets/zcu104.toml"
            ) from exc
        if not 0 < spec.clock_mhz < math.inf or min(spec.budget().values()) < 0:
            raise UserError(f"{where}: clock and resources must be positive")
        return spec

    def budget(self) -> dict[str, int]:
        return {"luts": self.luts, "ffs": self.ffs, "dsps": self.dsps, "bram_18k": self.bram_18k}


@dataclass(frozen=True)
class LayerEstimate:
    name: str
    kind: str
    reuse_factor: int
    multipliers: int
    dsps: int
    luts: int
    ffs: int
    bram_18k: int
    cycles: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_layer(cost: LayerCost, reuse: int) -> LayerEstimate:
    """One layer's resources and cycles at reuse factor ``reuse`` (see the module docstring)."""
    w, a = cost.weight_bits, cost.act_bits
    filters = cost.output_shape[0]
    fan_in = max(1, cost.parameters // filters)
    multipliers = math.ceil(cost.parameters / reuse)
    if w <= 2:  # ternary: add or subtract the activation
        dsps, product_luts, product_ffs = 0, multipliers * a, multipliers * (a + 1)
    elif w + a <= LUT_PRODUCT_BITS:
        dsps, product_luts, product_ffs = 0, multipliers * w * a, multipliers * (w + a)
    else:
        dsps, product_luts, product_ffs = multipliers, 0, 0
    accumulator_bits = w + a + math.ceil(math.log2(fan_in)) if fan_in > 1 else w + a
    luts = product_luts + multipliers * accumulator_bits
    ffs = filters * accumulator_bits + product_ffs
    bram = 0
    if reuse > 1:
        bram += math.ceil(multipliers * w / BRAM_WIDTH) * math.ceil(reuse / BRAM_DEPTH)
    if cost.kind == "conv2d":
        channels, _, width = cost.input_shape
        kernel = round(math.sqrt(fan_in / channels))
        bram += math.ceil((kernel - 1) * width * channels * a / BRAM_BITS) if kernel > 1 else 0
        ffs += kernel * kernel * channels * a  # the sliding window
        pixels = cost.output_shape[1] * cost.output_shape[2]
        cycles = pixels * reuse
    else:
        cycles = reuse
    return LayerEstimate(cost.name, cost.kind, reuse, multipliers, dsps, luts, ffs, bram, cycles)


@dataclass(frozen=True)
class DesignEstimate:
    """The whole design at one reuse factor, against a part's budget."""

    reuse_factor: int
    layers: list[LayerEstimate]
    clock_mhz: float
    budget: dict[str, int]

    @property
    def totals(self) -> dict[str, int]:
        keys = ("dsps", "luts", "ffs", "bram_18k")
        return {key: sum(getattr(layer, key) for layer in self.layers) for key in keys}

    @property
    def latency_cycles(self) -> int:
        return sum(layer.cycles for layer in self.layers)

    @property
    def interval_cycles(self) -> int:
        return max((layer.cycles for layer in self.layers), default=0)

    @property
    def fits(self) -> bool:
        return all(self.totals[k] <= UTILIZATION * self.budget[k] for k in self.budget)

    def to_dict(self) -> dict[str, Any]:
        per_ms = self.clock_mhz * 1000.0
        return {
            "kind": "estimated",
            "method": "analytic hls4ml io_stream model over layer MACs, bit widths and the "
            "reuse factor (apprentice_hw/fpga/estimate.py); not synthesized",
            "reuse_factor": self.reuse_factor,
            "clock_mhz": self.clock_mhz,
            "totals": self.totals,
            "budget": self.budget,
            "utilization": {
                k: round(self.totals[k] / self.budget[k], 4) if self.budget[k] else None
                for k in self.budget
            },
            "fits": self.fits,
            "latency_cycles": self.latency_cycles,
            "latency_ms": self.latency_cycles / per_ms,
            "interval_cycles": self.interval_cycles,
            "images_per_second": per_ms * 1000.0 / self.interval_cycles
            if self.interval_cycles
            else None,
            "layers": [layer.to_dict() for layer in self.layers],
        }


def estimate_design(costs: list[LayerCost], spec: FpgaSpec, reuse: int) -> DesignEstimate:
    layers = [estimate_layer(cost, reuse) for cost in costs]
    return DesignEstimate(reuse, layers, spec.clock_mhz, spec.budget())


def choose_reuse(
    costs: list[LayerCost], spec: FpgaSpec, reuse: int | None = None, fps: float | None = None
) -> DesignEstimate:
    """The design to build: ``reuse`` if given; else the slowest one that reaches ``fps``; else
    the fastest one that fits the part (UserError when none does, or ``fps`` cannot be met)."""
    if reuse is not None:  # --reuse and --fps were range-checked before training
        return estimate_design(costs, spec, reuse)
    designs = [estimate_design(costs, spec, r) for r in REUSE_CHOICES]
    fitting = [d for d in designs if d.fits]
    if not fitting:
        raise UserError(
            f"the model does not fit {spec.part} even at reuse factor {REUSE_CHOICES[-1]}; "
            "choose a larger part or a smaller model"
        )
    if fps is None:
        return fitting[0]
    cycles_per_image = spec.clock_mhz * 1e6 / fps
    fast_enough = [d for d in fitting if d.interval_cycles <= cycles_per_image]
    if not fast_enough:
        best = spec.clock_mhz * 1e6 / fitting[0].interval_cycles
        raise UserError(
            f"{fps:g} images/s is out of reach on {spec.part}: the fastest design that fits "
            f"makes {best:,.0f}; lower --fps"
        )
    return fast_enough[-1]
