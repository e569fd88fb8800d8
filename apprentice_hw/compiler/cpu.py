"""What compiling for a CPU adds to the shared TVM flow: the lowering options that follow from
the CPU's vector instructions, and the project's CPU schedules with tuned or shipped knobs.

Called by the CPU backend (``apprentice_hw.backends.cpu``); nothing here asks what kind of
device a target is.
"""

from __future__ import annotations

from apprentice_hw.hardware import Target


def fma_division(target: Target) -> bool:
    """Whether requantization divides by multiply + FMA (``float64_pass.divide_exactly``)."""
    from apprentice_hw.compiler.schedules import has_fused_multiply_add

    return has_fused_multiply_add(target.tvm_target())


def dot_order(target: Target) -> str:
    """The order of conv weight blocks ``target``'s kernels read: AVX2's int16 pairs or 16x4."""
    from apprentice_hw.compiler.schedules import _dot_product

    return "pairs" if _dot_product(target.tvm_target()) == "avx2" else "16x4"


def lowering_options(target: Target) -> dict[str, object]:
    """The lowering options that follow from ``target``'s vector instructions: int16 sums
    where proven exact (AVX2 without VNNI; NEON), one product per int16 lane where codes fit
    a signed byte (NEON's ``smlal``), SDOT for every conv layer where the CPU has it, integer
    requantization lines as ``sqdmulh`` on AArch64, and requantization proven exact."""
    from apprentice_hw.compiler.schedules import has_signed_dot, int16_product

    tvm_target = target.tvm_target()
    kind = int16_product(tvm_target)
    return {"int16_sums": kind is not None, "int16_signed_lanes": kind == "neon",
            "signed_dot": has_signed_dot(tvm_target), "high_half_multiply": kind == "neon",
            "dot_order": dot_order(target), "fma_division": fma_division(target),
            "proven_requantization": True}  # fmt: skip


def compile_cpu(mod, target: Target, use_tuning: bool = True, count=None):
    """Compile a Relax module with TVM's pipeline plus the project's CPU schedules.

    Functions the target's tuning database (``apprentice-hw tune``) has records for get their
    tuned schedule, conv kernels the shipped tables know get their pre-tuned knobs, and the
    rest the default schedules; ``use_tuning=False`` uses the defaults everywhere. ``count``
    (a ``schedules.ScheduleCount``) is filled with how many functions got each.
    """
    import tvm

    from apprentice_hw.compiler import tuning
    from apprentice_hw.compiler.schedules import cpu_pipeline

    tvm_target = target.tvm_target()
    tuned, knob_table = None, None
    if use_tuning:
        knob_table = tuning.shipped_knobs(target, tvm_target)
        if tuning.has_records(target):

            def tuned(fused):
                return tuning.apply_records(fused, target, tvm_target)

    pipeline = cpu_pipeline(tvm_target, tuned, knob_table, count)
    return tvm.compile(mod, tvm_target, relax_pipeline=pipeline)
