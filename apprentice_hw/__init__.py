"""apprentice-hw: distil low-precision students (Apprentice, ICLR 2018) and ship them with TVM.

The public API (``apprentice_hw.api``), re-exported here::

    import apprentice_hw as ahw

    result = ahw.build("arm-a72", bits=2)     # train, distil, export, compile, check, report
    compiled = ahw.compile("model.onnx", "x86-host")
    check = ahw.verify(result.out)
"""

# Modules whose names the API's functions take (``report``, ``verify``, ...) are loaded before
# the functions are bound: Python sets ``apprentice_hw.<name>`` to a submodule when it is first
# imported, which would otherwise replace the function the moment any code imported it.
import apprentice_hw.deploy
import apprentice_hw.distill
import apprentice_hw.report
import apprentice_hw.verify  # noqa: F401
from apprentice_hw.api import (
    BuildReport,
    BuildResult,
    TrainResult,
    build,
    build_from,
    build_options,
    compare,
    compile,
    deploy,
    distill,
    export,
    load_recipe_with_overrides,
    report,
    size_model,
    train,
    tune,
    verify,
)
from apprentice_hw.distill.loss import DistillationLoss
from apprentice_hw.errors import UserError
from apprentice_hw.options import BuildOptions, FpgaOptions
from apprentice_hw.progress import Progress
from apprentice_hw.quant import FloatLayers, QuantLayers
from apprentice_hw.report_model import Report
from apprentice_hw.version import __version__

__all__ = [
    "BuildOptions",
    "BuildReport",
    "BuildResult",
    "DistillationLoss",
    "FloatLayers",
    "FpgaOptions",
    "Progress",
    "QuantLayers",
    "Report",
    "TrainResult",
    "UserError",
    "__version__",
    "build",
    "build_from",
    "build_options",
    "compare",
    "compile",
    "deploy",
    "distill",
    "export",
    "load_recipe_with_overrides",
    "report",
    "size_model",
    "train",
    "tune",
    "verify",
]
