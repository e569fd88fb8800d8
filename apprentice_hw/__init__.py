"""apprentice-hw: distil low-precision students (Apprentice, ICLR 2018) and ship them with TVM.

The public API (``apprentice_hw.api``), re-exported here::

    import apprentice_hw as ahw

    result = ahw.build("arm-a72", bits=2)     # train, distil, export, compile, check, report
    compiled = ahw.compile("model.onnx", "x86-host")
    check = ahw.verify(result.out)

The names load on first use, so ``import apprentice_hw`` (and the command line, whose modules
live in this package) stays fast: torch, ONNX and TVM load when a function needs them.
"""

from __future__ import annotations

import importlib
import sys
import types

from apprentice_hw.version import __version__

# Public name -> the module that defines it.
_EXPORTS = {
    **dict.fromkeys(
        ("BuildReport", "BuildResult", "TrainResult", "build", "build_from", "build_options",
         "compare", "compile", "deploy", "distill", "emulated_pi", "export", "fpga_options",
         "load_recipe_with_overrides", "report", "size_model", "train", "tune", "verify"),
        "apprentice_hw.api",
    ),
    "DistillationLoss": "apprentice_hw.distill.loss",
    "UserError": "apprentice_hw.errors",
    "BuildOptions": "apprentice_hw.options",
    "FpgaOptions": "apprentice_hw.options",
    "Progress": "apprentice_hw.progress",
    "FloatLayers": "apprentice_hw.quant",
    "QuantLayers": "apprentice_hw.quant",
    "Report": "apprentice_hw.report_model",
}  # fmt: skip

__all__ = [*sorted(_EXPORTS), "__version__"]


class _Package(types.ModuleType):
    """The package, whose public names always mean the API's.

    ``report``, ``verify``, ``deploy`` and ``distill`` are also the names of subpackages and
    modules, and Python sets ``apprentice_hw.<name>`` to a submodule when it is first imported;
    looking the public names up here first keeps them the functions whatever was imported
    (submodules are still imported by their dotted names: ``apprentice_hw.report.writer``).
    """

    def __getattribute__(self, name: str):
        if name in _EXPORTS:
            return getattr(importlib.import_module(_EXPORTS[name]), name)
        return super().__getattribute__(name)

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(_EXPORTS))


sys.modules[__name__].__class__ = _Package
