"""FPGA builds: hls4ml C simulation against ONNX Runtime, and the analytic estimates.

Real hls4ml (Vitis backend, io_stream) generating the HLS project and compiling its C++ with
g++; the reference is ONNX Runtime on the QCDQ export. The pooling head runs on the host (see
apprentice_hw/fpga/hls.py). No Vivado/Vitis: resources and latency are estimates, checked here
against a hand computation.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_schema import assert_report_unchanged

from apprentice_hw.errors import UserError
from apprentice_hw.fpga.estimate import (
    FpgaSpec,
    choose_reuse,
    estimate_design,
    estimate_layer,
)
from apprentice_hw.hardware import get_target
from apprentice_hw.report.layers import LayerCost

TINY = Path(__file__).parent / "data" / "tiny.toml"


@pytest.fixture(scope="module")
def fpga_build(tmp_path_factory) -> Path:
    """The tiny digits recipe (residual blocks, pooling head), W4A8 power-of-two, on a ZCU104."""
    import apprentice_hw

    out = tmp_path_factory.mktemp("fpga") / "zcu104"
    result = apprentice_hw.build("zcu104", TINY, bits=4, quant="po2", out=out)
    assert result.module_path is None and (out / "hls").is_dir()
    return out


def test_c_simulation_equals_onnxruntime_exactly_on_100_images(fpga_build):
    assert_report_unchanged(fpga_build / "report.json", "build-fpga")
    report = json.loads((fpga_build / "report.json").read_text())
    check = report["checks"]["hls_csim_vs_onnxruntime"]
    assert check["samples"] == 100 and check["exact"] and check["max_diff_steps"] == 0.0
    assert check["identical_samples"] == 100
    # The residual blocks are on the FPGA (an hls4ml project of C++ that compiled), the head
    # on the host.
    config = (fpga_build / "hls" / "hls4ml_config.yml").read_text()
    assert "Add" in config and "GlobalAveragePool" not in config
    assert (fpga_build / "hls" / "firmware" / "myproject.cpp").exists()
    strategies = {row["name"]: row["strategy"] for row in report["layers"]}
    assert strategies.pop("/fc/Gemm") == "host (ONNX Runtime)"
    assert set(strategies.values()) == {"hls4ml (FPGA fabric)"}
    assert not (fpga_build / "bundle").exists()


def test_fpga_report_uses_the_build_report_format(fpga_build):
    from apprentice_hw.report.layers import layer_costs
    from apprentice_hw.verify import load_onnx

    report = json.loads((fpga_build / "report.json").read_text())
    estimate = report["fpga"]["estimate"]
    assert estimate["kind"] == "estimated" and report["latency_estimate"]["kind"] == "estimated"
    assert report["latency_estimate"]["ms"] == estimate["latency_ms"]
    assert report["latency"]["kind"] == "not measured"
    # The report holds exactly the estimate of the FPGA layers at the chosen reuse factor.
    costs = [
        c for c in layer_costs(load_onnx(fpga_build / "model.qcdq.onnx")) if c.name != "/fc/Gemm"
    ]
    spec = FpgaSpec.from_target(get_target("zcu104"))
    assert estimate == estimate_design(costs, spec, estimate["reuse_factor"]).to_dict()
    assert estimate["fits"] and estimate["reuse_factor"] == 1  # the fastest design that fits
    markdown = (fpga_build / "report.md").read_text()
    assert "## FPGA: xczu7ev-ffvc1156-2-e (estimated)" in markdown
    assert "| dsps | " in markdown
    page = (fpga_build / "report.html").read_text()
    assert f'data-key="fpga.estimate.totals.dsps" data-value="{estimate["totals"]["dsps"]}"' in page
    assert (fpga_build / "footprint.png").stat().st_size > 10_000


def _conv(weight_bits: int, act_bits: int) -> LayerCost:
    # 3x3 conv, 4 -> 8 channels on 8x8 (same padding)
    return LayerCost("conv", "conv2d", (4, 8, 8), (8, 8, 8), 288, 288 * 64, weight_bits,
                     act_bits, act_bits)  # fmt: skip


DENSE = LayerCost("fc", "dense", (32,), (10,), 320, 320, 8, 8, 8)
SPEC = FpgaSpec("test-part", 200.0, luts=100_000, ffs=200_000, dsps=500, bram_18k=100)


def test_estimates_match_a_hand_computation():
    conv = estimate_layer(_conv(4, 4), reuse=4)
    # 288 weights / R 4 = 72 multipliers; 4+4 bits <= 10: LUT products, 4*4 LUTs each;
    # accumulators 4+4+ceil(log2(36)) = 14 bits; weights in ceil(72*4/36) = 8 BRAM banks;
    # line buffer 2 rows x 8 x 4 channels x 4 bits = 256 bits: 1 BRAM; 64 pixels x 4 cycles.
    # Registers: 8 accumulators of 14 bits, 72 product registers of 8 bits, a 3x3x4 window of
    # 4-bit activations.
    assert (conv.multipliers, conv.dsps, conv.luts, conv.ffs, conv.bram_18k, conv.cycles) == (
        72, 0, 72 * 16 + 72 * 14, 8 * 14 + 72 * 8 + 9 * 4 * 4, 8 + 1, 256)  # fmt: skip
    dense = estimate_layer(DENSE, reuse=4)
    # 80 multipliers of 8x8 bits: DSPs (their products stay in the DSP); accumulators 8+8+5 =
    # 21 bits, 10 of them; ceil(80*8/36) = 18 banks.
    assert (dense.multipliers, dense.dsps, dense.luts, dense.ffs, dense.bram_18k, dense.cycles) == (
        80, 80, 80 * 21, 10 * 21, 18, 4)  # fmt: skip
    ternary = estimate_layer(_conv(2, 8), reuse=1)
    # No multipliers for ternary weights: an 8-bit add/subtract each; weights in logic (R = 1).
    assert (ternary.dsps, ternary.luts, ternary.bram_18k, ternary.cycles) == (
        0, 288 * 8 + 288 * 16, 1, 64)  # fmt: skip
    design = estimate_design([_conv(4, 4), DENSE], SPEC, reuse=4).to_dict()
    assert design["totals"] == {"dsps": 80, "luts": 2160 + 1680, "ffs": 832 + 210,
                                "bram_18k": 27}  # fmt: skip
    assert design["latency_cycles"] == 260 and design["interval_cycles"] == 256
    assert design["latency_ms"] == pytest.approx(260 / 200_000)
    assert design["images_per_second"] == pytest.approx(200e6 / 256)


def test_reuse_factor_is_chosen_to_fit_or_to_reach_a_frame_rate():
    small = FpgaSpec("small", 100.0, luts=6000, ffs=10_000, dsps=10, bram_18k=100)
    layer = [_conv(4, 4)]
    # R = 1 needs 8,640 LUTs (over 80% of 6,000); R = 2 needs 4,320.
    assert choose_reuse(layer, small).reuse_factor == 2
    # 300,000 images/s at 100 MHz leaves 333 cycles per image: R = 4 (256 cycles) is the
    # slowest design that makes it.
    assert choose_reuse(layer, small, fps=300_000).reuse_factor == 4
    assert choose_reuse(layer, small, reuse=64).reuse_factor == 64
    with pytest.raises(UserError, match="out of reach"):
        choose_reuse(layer, small, fps=1_000_000)
    with pytest.raises(UserError, match="does not fit"):
        choose_reuse(layer, FpgaSpec("tiny", 100.0, luts=10, ffs=10, dsps=0, bram_18k=0))


FPGA_BAD_INPUTS = [
    (["-t", "x86-host", "--reuse", "4"], "--reuse, --fps and --synthesize apply to FPGA"),
    (["-t", "zcu104", "--synthesize"], "--synthesize needs vitis_hls on PATH"),
    (["-t", "zcu104", "--reuse", "4", "--fps", "100"], "give --reuse or --fps, not both"),
]


@pytest.mark.parametrize(("args", "message"), FPGA_BAD_INPUTS)
def test_fpga_options_are_checked_before_training(args, message, tmp_path, run_cli):
    result = run_cli("build", *args, "-r", TINY, "-o", tmp_path / "out")
    assert result.code == 2 and message in result.err
    assert not (tmp_path / "out").exists()


def test_an_fpga_target_needs_its_part_description(tmp_path, run_cli):
    text = (Path(__file__).parents[1] / "targets" / "zcu104.toml").read_text()
    broken = tmp_path / "zcu104.toml"
    broken.write_text(text.replace("dsps = 1728\n", ""))
    result = run_cli("build", "-t", broken, "-r", TINY, "-o", tmp_path / "out")
    assert result.code == 2 and "[fpga]: missing or invalid field 'dsps'" in result.err


@pytest.mark.slow  # a second FPGA build (25 s); the warning's text is checked without one
def test_non_power_of_two_scales_build_with_a_warning(tmp_path, run_cli):
    result = run_cli("build", "-t", "pynq-z2", "--bits", "4", "--quant", "float", "-r", TINY,
                     "-o", tmp_path / "float")  # fmt: skip
    assert result.code == 0, result.err
    assert "warning: quantizer family 'float' has non-power-of-two scales" in result.err
    report = json.loads((tmp_path / "float" / "report.json").read_text())
    assert report["fpga"]["exactness_warning"].startswith("warning: quantizer family 'float'")
    assert report["checks"]["hls_csim_vs_onnxruntime"]["samples"] == 100


CSYNTH = """<?xml version="1.0" encoding="UTF-8"?>
<!-- The layout of a Vitis HLS csynth.xml (values made up for the parser test). -->
<profile>
  <UserAssignments><TargetClockPeriod>5.00</TargetClockPeriod></UserAssignments>
  <PerformanceEstimates>
    <SummaryOfTimingAnalysis><EstimatedClockPeriod>4.20</EstimatedClockPeriod></SummaryOfTimingAnalysis>
    <SummaryOfOverallLatency>
      <Best-caseLatency>3800</Best-caseLatency><Worst-caseLatency>3900</Worst-caseLatency>
      <Interval-min>1025</Interval-min><Interval-max>1030</Interval-max>
    </SummaryOfOverallLatency>
  </PerformanceEstimates>
  <AreaEstimates>
    <Resources><BRAM_18K>120</BRAM_18K><DSP>900</DSP><FF>31000</FF><LUT>45000</LUT></Resources>
    <AvailableResources><BRAM_18K>624</BRAM_18K><DSP>1728</DSP><FF>460800</FF><LUT>230400</LUT>
    </AvailableResources>
  </AreaEstimates>
</profile>
"""


def test_a_synthesis_report_in_the_project_joins_the_build_report(fpga_build, tmp_path, run_cli):
    import shutil

    from apprentice_hw.fpga.synthesis import REPORT

    build = tmp_path / "synthesized"
    shutil.copytree(fpga_build, build)
    (build / "hls" / REPORT).parent.mkdir(parents=True)
    (build / "hls" / REPORT).write_text(CSYNTH)
    shown = run_cli("report", build, "--format", "json")
    assert shown.code == 0, shown.err
    synthesis = json.loads(shown.out)["fpga"]["synthesis"]
    assert synthesis["kind"] == "synthesized"
    assert synthesis["resources"] == {"luts": 45000, "ffs": 31000, "dsps": 900, "bram_18k": 120}
    assert synthesis["latency_cycles_worst"] == 3900 and synthesis["interval_cycles"] == 1030
    assert synthesis["latency_ms_worst"] == pytest.approx(3900 * 4.2e-6)
    markdown = run_cli("report", build).out
    assert "Vitis HLS C synthesis" in markdown and "worst-case latency 3,900 cycles" in markdown


def test_non_power_of_two_quantizers_are_warned_about_before_any_build():
    from apprentice_hw.config import load_recipe
    from apprentice_hw.fpga.build import exactness_warning

    recipe = load_recipe(str(TINY))
    assert exactness_warning(recipe.with_overrides(quant="po2")) is None
    warning = exactness_warning(recipe.with_overrides(quant="float"))
    assert warning.startswith("warning: quantizer family 'float'") and "--quant po2" in warning
