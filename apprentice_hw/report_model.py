"""The build report as typed sections: what ``report.json`` holds, and nothing else.

Every step that contributes to a report builds its section here (``Accuracy``, ``Checks``,
``MemorySection``, ...); ``Report.to_dict()`` is ``report.json`` and ``Report.from_dict()``
reads one back (``build_dir.read_report``), so the renderers (Markdown, HTML, the figure, the
comparison, the CLI summaries) read attributes, not string keys. The JSON schema is the one
reports had before these classes existed (``tests/test_report_model.py`` holds it to the
schema recorded from those reports). Optional parts are ``None`` and left out of the JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from apprentice_hw.output_steps import OutputComparison


def _drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in data.items() if value is not None}


def _batch_key(batch: int) -> str:
    return f"batch_{batch}"


def _batch_of(key: str) -> int:
    return int(key.removeprefix("batch_"))


def _known(cls, data: dict[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of the dataclass ``cls``."""
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in data.items() if key in names}


class _Record:
    """A section whose JSON is its fields (``asdict``) and that reads back from a dict,
    ignoring keys it does not know. Sections with a JSON layout of their own override these."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        return cls(**_known(cls, data))


# -- what was built -------------------------------------------------------------------------
@dataclass(frozen=True)
class TargetSection(_Record):
    """The target as the report and the bundle manifest describe it."""

    name: str
    description: str
    device: str
    arch: str
    tvm: dict[str, Any]  # the TVM target as the target file gives it, placeholders resolved

    @classmethod
    def from_target(cls, target) -> TargetSection:
        return cls(target.name, target.description, target.device, target.arch, target.tvm)


@dataclass(frozen=True)
class TrainedModel(_Record):
    """A build's student: the recipe, data, networks, scheme and precision."""

    recipe: str
    dataset: str
    teacher: str
    student: str
    scheme: str
    quant: str
    weight_bits: int
    weight_preset: str
    act_bits: int
    first_last: str  # "8-bit", or "same as body"

    compiled: ClassVar[bool] = False


@dataclass(frozen=True)
class CompiledModel(_Record):
    """A user's quantized ONNX model that ``compile`` took."""

    source: str  # the file's name
    source_sha256: str
    format: str  # QCDQ, QONNX or QDQ
    weight_bits: list[int]  # every weight width among the lowered layers
    act_bits: list[int]
    layers: int  # conv / fully connected layers
    float_layers: int  # of which left in float
    outputs: int  # values per input

    compiled: ClassVar[bool] = True


ModelSection = TrainedModel | CompiledModel


def model_from_dict(data: dict[str, Any]) -> ModelSection:
    return CompiledModel.from_dict(data) if "source" in data else TrainedModel.from_dict(data)


# -- accuracy and agreement -----------------------------------------------------------------
@dataclass
class Accuracy:
    """Test-split top-1 of each network a build ran; a compiled model has no labels (empty).

    ``partial`` holds accuracies on part of the test split, by name (an FPGA build's C
    simulation on its first images: ``hls_csim_top1_first_100``).
    """

    labelled: bool = True
    teacher_top1: float | None = None  # None: the scheme trained no teacher
    student_top1: float | None = None
    onnxruntime_top1: float | None = None
    compiled_top1: float | None = None  # None where only part of the split was run
    partial: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        if not self.labelled:
            return {}
        return {"teacher_top1": self.teacher_top1, "student_top1": self.student_top1,
                "onnxruntime_top1": self.onnxruntime_top1,
                "compiled_top1": self.compiled_top1, **self.partial}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Accuracy:
        if not data:
            return cls(labelled=False)
        known = ("teacher_top1", "student_top1", "onnxruntime_top1", "compiled_top1")
        return cls(True, *(data.get(key) for key in known),
                   {k: v for k, v in data.items() if k not in known})  # fmt: skip


@dataclass(frozen=True)
class CsimCheck(_Record):
    """hls4ml's C simulation of an FPGA design against ONNX Runtime."""

    samples: int
    max_diff_steps: float
    identical_samples: int
    within_1_step: int
    prediction_agreement: float
    exact: bool


@dataclass(frozen=True)
class CheckedInputs:
    """What ``compile`` checked the module on, and whether it passed."""

    samples: int
    inputs: str  # the --inputs file, or "seeded uniform [0, 1)"
    tolerance_steps: float
    passed: bool


# The comparisons a report may hold, in display order; each is an OutputComparison.
COMPARISONS = (
    "onnxruntime_vs_brevitas",
    "compiled_vs_onnxruntime",
    "compiled_vs_brevitas",
    "compiled_vs_brevitas_float32",
    "compiled_vs_reference",
)


@dataclass
class Checks:
    """Differences between runtimes in output steps (``output_steps``), and what was run."""

    output_step: float
    comparisons: dict[str, OutputComparison] = field(default_factory=dict)  # see COMPARISONS
    compiled_module_checked: str | None = None  # which module the check ran
    hls_csim: CsimCheck | None = None  # FPGA builds
    inputs: CheckedInputs | None = None  # compiled models

    def comparison(self, name: str) -> OutputComparison | None:
        return self.comparisons.get(name)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"output_step": self.output_step}
        data.update({name: check.to_dict() for name, check in self.comparisons.items()})
        if self.compiled_module_checked is not None:
            data["compiled_module_checked"] = self.compiled_module_checked
        if self.hls_csim is not None:
            data["hls_csim_vs_onnxruntime"] = self.hls_csim.to_dict()
        if self.inputs is not None:
            data.update(asdict(self.inputs))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checks:
        csim = data.get("hls_csim_vs_onnxruntime")
        inputs = CheckedInputs(**_known(CheckedInputs, data)) if "samples" in data else None
        return cls(
            output_step=data["output_step"],
            comparisons={name: OutputComparison.from_dict(data[name])
                         for name in COMPARISONS if data.get(name)},
            compiled_module_checked=data.get("compiled_module_checked"),
            hls_csim=CsimCheck.from_dict(csim) if csim else None, inputs=inputs,
        )  # fmt: skip


# -- layers -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerLowering:
    """How a CPU/GPU build lowered a layer (``lowering.LoweredLayer``'s own fields)."""

    scale_bytes: int
    folded_batch_norm: bool
    requantization: str
    int16_chunk: int
    int16_lane_inputs: int


@dataclass(frozen=True)
class LayerShape:
    """A layer's shapes and costs, read from the ONNX graph (``report.layers.LayerCost``)."""

    input_shape: list[int]
    output_shape: list[int]
    macs: int
    bit_operations: int
    output_bits: int
    output_bytes_batch_1: float


@dataclass(frozen=True)
class LayerRow:
    """One conv / fully connected layer of the report."""

    name: str
    kind: str  # conv2d, dense, ...
    weight_shape: list[int]
    strategy: str  # the kernel strategy, "float", or where an FPGA build runs it
    weight_bits: int | None
    storage_bits: int | None
    act_bits: int | None
    weight_bytes: int
    reason: str | None  # why a layer stayed float
    lowering: LayerLowering | None = None
    shape: LayerShape | None = None  # None where the graph had no matching node

    @property
    def is_float(self) -> bool:
        return self.strategy == "float"

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("lowering", "shape")}  # fmt: skip
        data["weight_shape"] = list(self.weight_shape)
        if self.lowering is not None:
            data.update(asdict(self.lowering))
        if self.shape is not None:
            data.update(asdict(self.shape))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerRow:
        lowering = LayerLowering(**_known(LayerLowering, data)) if "scale_bytes" in data else None
        shape = LayerShape(**_known(LayerShape, data)) if "output_shape" in data else None
        own = {k: v for k, v in _known(cls, data).items() if k not in ("lowering", "shape")}
        return cls(**own, lowering=lowering, shape=shape)

    @classmethod
    def lowered(cls, layer, cost=None) -> LayerRow:
        """The row of a ``lowering.LoweredLayer`` with its ``LayerCost`` (or None)."""
        return cls.from_dict({**layer.to_dict(), **shape_fields(cost)})


def shape_fields(cost) -> dict[str, Any]:
    """A ``report.layers.LayerCost``'s shape columns as report keys (empty for None)."""
    if cost is None:
        return {}
    data = cost.to_dict()
    return {f.name: data[f.name] for f in fields(LayerShape)}


# -- memory -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModuleConstants:
    """The constants a compiled module (``model.so``) carries."""

    compiled_module_bytes: int
    compiled_module_tensors: int
    scale_bytes: int  # requantization constants (per-channel scales, folded BatchNorm)
    other_bytes: int  # biases, layers left in float
    quantized_vs_trained: float  # the quantized weights against parameters x bits / 8


@dataclass(frozen=True)
class FpgaPlacement:
    """Where an FPGA design keeps its weights."""

    on_chip_weight_bytes: int
    host_weight_bytes: int  # the pooling head's, run on the board's processor


@dataclass(frozen=True)
class WeightMemory:
    """The weights: as stored by the device, at trained precision, and as fp32."""

    quantized_weight_bytes: int
    trained_precision_bytes: float  # quantized at their bits, the rest fp32
    trained_quantized_bytes: float  # parameters x bits / 8 of the quantized layers
    fp32_bytes: int
    parameters: int
    bits_per_layer: dict[str, int]
    module: ModuleConstants | None = None  # CPU and GPU builds
    fpga: FpgaPlacement | None = None  # FPGA builds

    @classmethod
    def from_footprint(cls, footprint, quantized_weight_bytes: int,
                       module: ModuleConstants | None = None,
                       fpga: FpgaPlacement | None = None) -> WeightMemory:  # fmt: skip
        """The one builder of the weights section: what the device stores beside the trained
        model's footprint (``report.footprint.WeightFootprint``)."""
        return cls(
            quantized_weight_bytes=quantized_weight_bytes,
            trained_precision_bytes=footprint.trained_precision_bytes,
            trained_quantized_bytes=footprint.quantized_bytes,
            fp32_bytes=footprint.fp32_bytes,
            parameters=footprint.parameters,
            bits_per_layer=footprint.bits_per_layer,
            module=module,
            fpga=fpga,
        )

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("module", "fpga")}  # fmt: skip
        for part in (self.module, self.fpga):
            if part is not None:
                data.update(asdict(part))
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightMemory:
        module = (ModuleConstants(**_known(ModuleConstants, data))
                  if "compiled_module_bytes" in data else None)  # fmt: skip
        fpga = (FpgaPlacement(**_known(FpgaPlacement, data))
                if "on_chip_weight_bytes" in data else None)  # fmt: skip
        own = {k: v for k, v in _known(cls, data).items() if k not in ("module", "fpga")}
        return cls(**own, module=module, fpga=fpga)


@dataclass(frozen=True)
class PlannedActivations(_Record):
    """TVM's memory plan of the module at one batch size (``compiler.MemoryPlan``)."""

    batch: int
    weight_bytes: int
    weight_tensors: int
    activation_bytes_unplanned: int  # every intermediate tensor, no reuse
    activation_bytes_planned: int  # storage after the static memory plan


@dataclass(frozen=True)
class ModuleFiles:
    """Memory outside the plan: kernel scratch, the module file and the runtime libraries."""

    kernel_workspace_bytes_batch_1: int
    module_file_bytes: int
    runtime_arch: str
    runtime_library_bytes: dict[str, int]  # library file -> bytes


@dataclass(frozen=True)
class MemorySection:
    weights: WeightMemory
    activations: dict[int, PlannedActivations]  # by batch size; empty for FPGA (streamed)
    paper_activation_bytes: dict[int, float]  # conv/FC outputs at their bits, by batch size
    files: ModuleFiles | None = None  # CPU and GPU builds

    def planned(self, batch: int) -> int | None:
        plan = self.activations.get(batch)
        return plan.activation_bytes_planned if plan is not None else None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "weights": self.weights.to_dict(),
            "activations": {_batch_key(b): asdict(p) for b, p in self.activations.items()},
        }
        if self.files is not None:
            data["kernel_workspace_bytes_batch_1"] = self.files.kernel_workspace_bytes_batch_1
            data["module_file_bytes"] = self.files.module_file_bytes
            data["runtime_library_bytes"] = {"arch": self.files.runtime_arch,
                                             **self.files.runtime_library_bytes}  # fmt: skip
        data["paper_activation_bytes"] = {
            _batch_key(b): value for b, value in self.paper_activation_bytes.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemorySection:
        files = None
        if "kernel_workspace_bytes_batch_1" in data:
            libraries = dict(data["runtime_library_bytes"])
            files = ModuleFiles(data["kernel_workspace_bytes_batch_1"], data["module_file_bytes"],
                                libraries.pop("arch"), libraries)  # fmt: skip
        return cls(
            weights=WeightMemory.from_dict(data["weights"]),
            activations={_batch_of(k): PlannedActivations(**v)
                         for k, v in data["activations"].items()},
            paper_activation_bytes={_batch_of(k): v
                                    for k, v in data.get("paper_activation_bytes", {}).items()},
            files=files,
        )  # fmt: skip


# -- latency ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Latency(_Record):
    """Batch-1 latency measured here (``kind`` "measured"), or why it was not."""

    kind: str  # "measured" or "not measured"
    median_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    stdev_ms: float | None = None
    repeats: int | None = None
    number: int | None = None  # calls per timed run
    reason: str | None = None  # why not measured
    threads: int | None = None  # TVM worker threads it ran with (reports before: not recorded)

    @property
    def measured(self) -> bool:
        return self.kind == "measured"

    @classmethod
    def not_measured(cls, reason: str) -> Latency:
        return cls("not measured", reason=reason)

    def to_dict(self) -> dict[str, Any]:
        data = _drop_none(asdict(self))
        kind = data.pop("kind")  # where the JSON has always had it: last, or first
        return {**data, "kind": kind} if self.measured else {"kind": kind, **data}


@dataclass(frozen=True)
class LatencyEstimate(_Record):
    """A latency the report estimates (never measured): a roofline or an FPGA schedule."""

    ms: float
    method: str
    kind: str = "estimated"
    batch: int | None = None  # roofline estimates
    compute_bound_layers: int | None = None
    memory_bound_layers: int | None = None

    @property
    def is_roofline(self) -> bool:
        return self.compute_bound_layers is not None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(asdict(self))


# -- device sections --------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceCode(_Record):
    """The GPU code inside a CUDA build's module."""

    format: str
    archs: list[str]
    cubins: int
    bytes: int
    compiler: str
    description: str


@dataclass(frozen=True)
class FpgaSection(_Record):
    """An FPGA build's design: the part, the HLS project and the estimates."""

    part: str
    hls_project: str
    backend: str
    io_type: str
    precision: str
    head: str  # what runs on the host
    exactness_warning: str | None
    estimate: dict[str, Any]  # fpga.estimate's design estimate (totals, budget, layers, ...)
    synthesis: dict[str, Any] | None = None  # Vitis HLS's own report, where it ran

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.synthesis is None:
            del data["synthesis"]
        return data


@dataclass(frozen=True)
class DeploySection(_Record):
    """What ``apprentice-hw deploy`` measured on a board (``deploy.remote_run``)."""

    board: str
    samples: int
    identical: bool
    max_diff_steps: float
    tolerance_steps: float  # 0 for CPUs (bit-exact), 1 for GPUs
    top1_agreement: float
    latency_median_ms: float
    latency_min_ms: float
    latency_max_ms: float
    latency_stdev_ms: float
    repeats: int
    number: int
    upload_seconds: float
    module_bytes: int
    when: str
    kind: str = "measured on the board with TVM's RPC time evaluator (batch 1)"
    threads: int | None = None  # the board's TVM worker threads (its RPC server's pool)

    @property
    def passed(self) -> bool:
        return self.identical or self.max_diff_steps <= self.tolerance_steps

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(asdict(self))


# -- the report -------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainingEpoch(_Record):
    """One epoch of one training phase, as ``train_log.jsonl`` holds it: the loss terms and
    each network's test top-1 (``student``, ``teacher``, ``fp32-student``)."""

    phase: str
    epoch: int
    lr: float
    train_loss: float
    test_top1: dict[str, float]
    test_top5: dict[str, float] = field(default_factory=dict)
    terms: dict[str, float] = field(default_factory=dict)


@dataclass
class Report:
    """Everything ``report.json`` holds, section by section."""

    model: ModelSection
    target: TargetSection
    accuracy: Accuracy
    checks: Checks
    memory: MemorySection
    latency: Latency
    execution: str  # one sentence on how the model runs
    layers: list[LayerRow] = field(default_factory=list)
    latency_estimate: LatencyEstimate | None = None
    device_code: DeviceCode | None = None
    fpga: FpgaSection | None = None
    deploy: DeploySection | None = None
    training: list[TrainingEpoch] = field(default_factory=list)  # empty: no training (compile)
    # Top-level sections this version does not know (a newer apprentice-hw's), kept as they
    # are so rewriting the report (``deploy``) loses nothing.
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_compiled(self) -> bool:
        """Made by ``compile`` (a user's ONNX model) rather than ``build``."""
        return self.model.compiled

    @property
    def float_layers(self) -> list[LayerRow]:
        return [layer for layer in self.layers if layer.is_float]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "model": self.model.to_dict(),
            "target": self.target.to_dict(),
            "accuracy": self.accuracy.to_dict(),
            "checks": self.checks.to_dict(),
        }
        if self.device_code is not None:
            data["device_code"] = asdict(self.device_code)
        if self.latency_estimate is not None:
            data["latency_estimate"] = self.latency_estimate.to_dict()
        data["layers"] = [layer.to_dict() for layer in self.layers]
        data["memory"] = self.memory.to_dict()
        if self.fpga is not None:
            data["fpga"] = self.fpga.to_dict()
        data["latency"] = self.latency.to_dict()
        data["execution"] = self.execution
        if self.deploy is not None:
            data["deploy"] = self.deploy.to_dict()
        if self.training:
            data["training"] = [epoch.to_dict() for epoch in self.training]
        data.update(self.extra)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        """Read ``report.json``; a missing or mistyped field raises KeyError or TypeError."""

        def optional(key: str, section):
            return section.from_dict(data[key]) if data.get(key) else None

        return cls(
            model=model_from_dict(data["model"]),
            target=TargetSection.from_dict(data["target"]),
            accuracy=Accuracy.from_dict(data["accuracy"]),
            checks=Checks.from_dict(data["checks"]),
            memory=MemorySection.from_dict(data["memory"]),
            latency=Latency.from_dict(data["latency"]),
            execution=data["execution"],
            layers=[LayerRow.from_dict(layer) for layer in data.get("layers", [])],
            latency_estimate=optional("latency_estimate", LatencyEstimate),
            device_code=optional("device_code", DeviceCode),
            fpga=optional("fpga", FpgaSection),
            deploy=optional("deploy", DeploySection),
            training=[TrainingEpoch.from_dict(epoch) for epoch in data.get("training", [])],
            extra={key: value for key, value in data.items() if key not in REPORT_KEYS},
        )


REPORT_KEYS = frozenset({
    "model", "target", "accuracy", "checks", "device_code", "latency_estimate", "layers",
    "memory", "fpga", "latency", "execution", "deploy", "training",
})  # fmt: skip


@dataclass
class ReportParts:
    """The sections a build's steps have produced so far; saved with an interrupted build's
    progress so ``--resume`` continues with them."""

    accuracy: Accuracy = field(default_factory=Accuracy)
    checks: Checks | None = None
    layers: list[LayerRow] = field(default_factory=list)
    memory: MemorySection | None = None
    latency: Latency | None = None
    latency_estimate: LatencyEstimate | None = None
    device_code: DeviceCode | None = None
    fpga: FpgaSection | None = None
    training: list[TrainingEpoch] = field(default_factory=list)

    def report(self, model: ModelSection, target: TargetSection, execution: str) -> Report:
        """The finished report; every step that fills a required section has run."""
        missing = [name for name in ("checks", "memory", "latency") if getattr(self, name) is None]
        if missing:
            raise ValueError(f"the report lacks {', '.join(missing)}: a step did not run")
        return Report(
            model=model, target=target, accuracy=self.accuracy, checks=self.checks,
            memory=self.memory, latency=self.latency, execution=execution, layers=self.layers,
            latency_estimate=self.latency_estimate, device_code=self.device_code,
            fpga=self.fpga, training=self.training,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "accuracy": self.accuracy.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
            "training": [epoch.to_dict() for epoch in self.training],
        }
        for name in ("checks", "memory", "latency", "latency_estimate", "fpga"):
            part = getattr(self, name)
            if part is not None:
                data[name] = part.to_dict()
        if self.device_code is not None:
            data["device_code"] = asdict(self.device_code)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ReportParts:
        def optional(key: str, section):
            return section.from_dict(data[key]) if data.get(key) else None

        return cls(
            accuracy=Accuracy.from_dict(data.get("accuracy", {"student_top1": None})),
            checks=optional("checks", Checks),
            layers=[LayerRow.from_dict(layer) for layer in data.get("layers", [])],
            memory=optional("memory", MemorySection),
            latency=optional("latency", Latency),
            latency_estimate=optional("latency_estimate", LatencyEstimate),
            device_code=optional("device_code", DeviceCode),
            fpga=optional("fpga", FpgaSection),
            training=[TrainingEpoch.from_dict(epoch) for epoch in data.get("training", [])],
        )
