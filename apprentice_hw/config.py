"""Recipes: the training and build configuration read from ``pipelines/*.toml``.

A recipe names the dataset, the teacher and student models, their training schedules, the
distillation scheme and its loss weights, and the default bit widths. The CLI may override the
bit widths and epochs; everything else comes from the file so a build is reproducible from its
``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apprentice_hw.errors import UserError
from apprentice_hw.models.base import ModelSpec
from apprentice_hw.resources import data_dirs

RECIPES_ENV = "APPRENTICE_HW_PIPELINES"
DEFAULT_RECIPE = "digits"
# A recipe name becomes a folder name (build/<name>-<target>-...): no separators, no dot first.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_THREADS = 1024
TOP_LEVEL_KEYS = ("name", "description", "seed", "threads", "data", "teacher", "student",
                  "distill")  # fmt: skip
DATA_KEYS = ("dataset", "path", "augment", "train_limit")


def _seed(value: Any, what: str) -> int:
    """Seeds feed numpy and scikit-learn, which take integers from 0 to 2**32 - 1."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise UserError(f"{what} must be an integer from 0 to 4294967295, got {value!r}")
    return value


def _integer(value: Any, what: str, low: int, high: int) -> int:
    """A whole number in [low, high] (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise UserError(f"{what} must be an integer from {low} to {high}, got {value!r}")
    return value


def _number(value: Any, what: str, low: float, high: float, low_open: bool = False,
            high_open: bool = False, hint: str = "") -> float:  # fmt: skip
    """A finite number in the range (brackets say which ends are included)."""
    ok = (
        isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
    )  # fmt: skip
    if not ok:
        span = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise UserError(f"{what} must be a number in {span}{hint}, got {value!r}")
    return float(value)


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{what} must be a string, got {value!r}")
    return value


@dataclass(frozen=True)
class TrainSpec:
    """One network's training schedule (SGD with momentum, cosine learning-rate decay)."""

    epochs: int = 20
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"  # a name in distill.trainer.SCHEDULES

    def __post_init__(self) -> None:
        """Ranges outside which SGD cannot train (diverges to NaN, or never moves)."""
        _integer(self.epochs, "'epochs'", 1, 100_000)
        _integer(self.batch_size, "'batch_size'", 1, 1_000_000)
        _number(self.lr, "'lr'", 0, 10, low_open=True, hint=" (SGD diverges above that)")
        _number(self.momentum, "'momentum'", 0, 1, high_open=True)
        _number(self.weight_decay, "'weight_decay'", 0, 1, high_open=True)
        _text(self.schedule, "'schedule'")


@dataclass(frozen=True)
class DistillSpec:
    """The Apprentice loss ``alpha*H(y,p_T) + beta*H(y,p_S) + gamma*H(z_T,p_S)`` and its scheme."""

    scheme: str = "B"
    student_init: str = ""  # scheme C: fp32 checkpoint of the student's architecture (optional)
    alpha: float = 1.0
    beta: float = 0.5
    gamma: float = 0.5
    tau: float = 1.0

    def __post_init__(self) -> None:
        _text(self.scheme, "'scheme'")
        _text(self.student_init, "'student_init'")
        for name in ("alpha", "beta", "gamma"):
            _number(getattr(self, name), f"'{name}'", 0, 1000)
        if self.beta == 0 and self.gamma == 0:
            raise UserError("'beta' and 'gamma' are both 0: the student would learn nothing")
        # softmax(z / tau) overflows to NaN as tau approaches 0; the paper uses tau = 1.
        _number(self.tau, "'tau'", 0.01, 100, hint=" (the paper uses 1)")


@dataclass(frozen=True)
class Recipe:
    """A complete, validated recipe."""

    name: str
    description: str
    dataset: str
    data_path: Path | None
    augment: bool
    train_limit: int  # use a seeded random subset of this many training images (0: all)
    seed: int
    threads: int
    teacher: ModelSpec
    teacher_train: TrainSpec
    student: ModelSpec
    student_train: TrainSpec
    distill: DistillSpec
    weight_bits: int
    act_bits: int
    first_last_bits: int | None  # None: first and last layers at the body's precision
    quant: str  # quantizer family (quant.presets.QUANT_FAMILIES)
    # a trained fp32 teacher (a state dict; torchvision keys for ResNet-18/34/50) used instead of
    # training one: schemes B and C ([teacher] checkpoint, build --teacher)
    teacher_checkpoint: str = ""
    source: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Types and ranges of every field, however the recipe was made (file, CLI, JSON)."""
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            raise UserError(
                f"recipe name {self.name!r} must be 1-64 letters, digits, '.', '_' or '-' (not "
                "starting with '.'): it becomes part of the build folder's name"
            )
        _text(self.description, "'description'")
        _text(self.dataset, "[data] 'dataset'")
        if self.data_path is not None and not isinstance(self.data_path, Path):
            raise UserError(f"[data] 'path' must be a folder path, got {self.data_path!r}")
        if not isinstance(self.augment, bool):
            raise UserError(f"[data] 'augment' must be true or false, got {self.augment!r}")
        _integer(self.train_limit, "[data] 'train_limit'", 0, 2**31)
        _seed(self.seed, "'seed'")
        _integer(self.threads, "'threads'", 1, MAX_THREADS)
        for spec in (self.teacher, self.student):
            if not isinstance(spec, ModelSpec):
                raise UserError(f"a recipe's model must be a zoo model, got {spec!r}")
        # Which widths exist is the quantizer presets' call (validate_recipe); here: integers.
        for what, bits in (("weight_bits", self.weight_bits), ("act_bits", self.act_bits),
                           ("first_last_bits", self.first_last_bits or 8)):  # fmt: skip
            if isinstance(bits, bool) or not isinstance(bits, int):
                raise UserError(f"'{what}' must be an integer, got {bits!r}")
        _text(self.quant, "'quant'")
        _text(self.teacher_checkpoint, "[teacher] 'checkpoint'")

    def with_overrides(
        self,
        weight_bits: int | None = None,
        act_bits: int | None = None,
        epochs: int | None = None,
        scheme: str | None = None,
        quant: str | None = None,
        data_path: Path | None = None,
        seed: int | None = None,
        teacher: Path | None = None,
        student_init: Path | None = None,
    ) -> Recipe:
        """A copy with the CLI's overrides applied (``None`` keeps the recipe's value)."""
        recipe = self
        if teacher is not None:
            recipe = dataclasses.replace(recipe, teacher_checkpoint=str(teacher))
        if student_init is not None:
            recipe = dataclasses.replace(
                recipe, distill=dataclasses.replace(recipe.distill, student_init=str(student_init))
            )
        if scheme is not None:
            recipe = dataclasses.replace(
                recipe, distill=dataclasses.replace(recipe.distill, scheme=scheme)
            )
        if quant is not None:
            recipe = dataclasses.replace(recipe, quant=quant)
        if data_path is not None:
            recipe = dataclasses.replace(recipe, data_path=data_path)
        if seed is not None:
            recipe = dataclasses.replace(recipe, seed=_seed(seed, "--seed"))
        if weight_bits is not None:
            recipe = dataclasses.replace(recipe, weight_bits=weight_bits)
        if act_bits is not None:
            recipe = dataclasses.replace(recipe, act_bits=act_bits)
        if epochs is not None:
            if epochs < 1 or epochs > 100_000:
                raise UserError(f"--epochs must be at least 1 and at most 100000, got {epochs}")
            recipe = dataclasses.replace(
                recipe,
                teacher_train=dataclasses.replace(recipe.teacher_train, epochs=epochs),
                student_train=dataclasses.replace(recipe.student_train, epochs=epochs),
            )
        return recipe

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Recipe:
        """Inverse of :meth:`to_dict` (used to rebuild a build's student from ``recipe.json``)."""
        try:
            values = dict(data)
            for key in ("teacher", "student"):
                values[key] = ModelSpec(**values[key])
            for key in ("teacher_train", "student_train"):
                values[key] = TrainSpec(**values[key])
            values["distill"] = DistillSpec(**values["distill"])
            for key in ("data_path", "source"):
                values[key] = Path(values[key]) if values.get(key) else None
            return cls(**values)
        except (KeyError, TypeError) as exc:
            raise UserError(
                f"the recorded recipe is incomplete or from another version: {exc}"
            ) from exc

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, recorded in the manifest."""
        data = dataclasses.asdict(self)
        data["data_path"] = str(self.data_path) if self.data_path else None
        data["source"] = str(self.source) if self.source else None
        return data


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise UserError(f"{where}: [{key}] must be a table")
    return value


def _dataclass_from(cls: type, table: dict[str, Any], where: str, skip: tuple[str, ...] = ()):
    """Build ``cls`` from ``table``, rejecting unknown keys and values of the wrong type."""
    known = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, value in table.items():
        if key in skip:
            continue
        if key not in known:
            raise UserError(f"{where}: unknown field '{key}'; known: {', '.join(sorted(known))}")
        default = known[key].default
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) != isinstance(default, bool):
            raise UserError(f"{where}: '{key}' must be a {expected.__name__}, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except UserError as exc:  # a range check of the dataclass
        raise UserError(f"{where}: {exc}") from exc


def _model_spec(table: dict[str, Any], where: str) -> ModelSpec:
    name = table.get("model")
    if not isinstance(name, str):
        raise UserError(f"{where}: 'model' must name a zoo model, e.g. \"resnet-small\"")
    options = table.get("options", {})
    if not isinstance(options, dict):
        raise UserError(f"{where}: 'options' must be a table")
    return ModelSpec(name, dict(options))


def _known_keys(table: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise UserError(f"{where}: unknown field '{unknown[0]}'; known: {', '.join(known)}")


def parse_recipe(data: dict[str, Any], source: Path | None) -> Recipe:
    """Validate a recipe file's contents: every field's type and range, unknown fields refused."""
    where = f"recipe {source}" if source else "recipe"
    try:
        return _parse_recipe(data, source, where)
    except UserError as exc:
        message = str(exc)
        raise UserError(message if message.startswith(where) else f"{where}: {message}") from exc


def _parse_recipe(data: dict[str, Any], source: Path | None, where: str) -> Recipe:
    _known_keys(data, TOP_LEVEL_KEYS, where)
    data_table = _table(data, "data", where)
    _known_keys(data_table, DATA_KEYS, f"{where} [data]")
    teacher = _table(data, "teacher", where)
    student = _table(data, "student", where)
    distill = _table(data, "distill", where)
    train_keys = ("model", "options", "weight_bits", "act_bits", "first_last_bits", "quant",
                  "checkpoint")  # fmt: skip
    dataset = data_table.get("dataset")
    if not isinstance(dataset, str):
        raise UserError(f"{where}: [data] needs 'dataset', e.g. dataset = \"digits\"")
    path = data_table.get("path")
    if path is not None and (not isinstance(path, str) or not path):
        raise UserError(f"{where}: [data] 'path' must be a folder path as a string, got {path!r}")
    quant = student.get("quant", "float")
    if not isinstance(quant, str):
        raise UserError(f"{where}: [student] 'quant' must name a quantizer family, e.g. \"float\"")
    first_last = student.get("first_last_bits", 8)
    if first_last != "same" and (not isinstance(first_last, int) or isinstance(first_last, bool)):
        raise UserError(f"{where}: 'first_last_bits' must be a bit width or \"same\"")
    name = data.get("name", source.stem if source else "recipe")
    return Recipe(
        name=name if isinstance(name, str) else repr(name),
        description=data.get("description", ""),
        dataset=dataset,
        data_path=Path(path) if path else None,
        augment=data_table.get("augment", True),
        train_limit=data_table.get("train_limit", 0),
        seed=data.get("seed", 0),
        threads=data.get("threads", 2),
        teacher=_model_spec(teacher, f"{where} [teacher]"),
        teacher_train=_dataclass_from(TrainSpec, teacher, f"{where} [teacher]", train_keys),
        student=_model_spec(student, f"{where} [student]"),
        student_train=_dataclass_from(TrainSpec, student, f"{where} [student]", train_keys),
        distill=_dataclass_from(DistillSpec, distill, f"{where} [distill]"),
        weight_bits=student.get("weight_bits", 2),
        act_bits=student.get("act_bits", 8),
        first_last_bits=None if first_last == "same" else first_last,
        quant=quant,
        teacher_checkpoint=_checkpoint(teacher, f"{where} [teacher]"),
        source=source,
    )


def _checkpoint(table: dict[str, Any], where: str) -> str:
    """A table's ``checkpoint`` path (as written, like ``student_init`` and [data] ``path``)."""
    path = table.get("checkpoint", "")
    if not isinstance(path, str):
        raise UserError(f"{where}: 'checkpoint' must be a file path as a string, got {path!r}")
    return path


def recipe_files() -> dict[str, Path]:
    """Every known recipe name and its file."""
    found: dict[str, Path] = {}
    for folder in data_dirs("pipelines", RECIPES_ENV):
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)
    return found


def load_recipe(name_or_path: str = DEFAULT_RECIPE) -> Recipe:
    """Load a recipe by name (from ``pipelines/``) or from a ``.toml`` path."""
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path)
    else:
        files = recipe_files()
        if name_or_path not in files:
            choices = ", ".join(sorted(files)) or "(none found)"
            raise UserError(
                f"unknown recipe '{name_or_path}'; choose one of: {choices} "
                f"(or pass a path to a recipe .toml file)"
            )
        path = files[name_or_path]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"recipe file {path} does not exist") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"recipe file {path} is not valid TOML: {exc}") from exc
    return parse_recipe(data, path)
