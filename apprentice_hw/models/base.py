"""Model registry interface."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from apprentice_hw.errors import UserError
from apprentice_hw.quant.layers import LayerFactory
from apprentice_hw.registry import Registry


@dataclass(frozen=True)
class ModelSpec:
    """A zoo name plus keyword options (e.g. width), as written in a recipe."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


ModelBuilder = Callable[..., nn.Module]
MODELS: Registry[ModelBuilder] = Registry("model")
# Arguments every builder takes from the data, not from the recipe's options.
DATA_ARGUMENTS = ("layers", "in_channels", "num_classes")
# Bounds of the zoo's integer options (widths, block counts): beyond them a model would not
# fit in memory or would be a typo, and either way is better refused before training.
MAX_OPTION_VALUE = 4096
MAX_OPTION_ITEMS = 16


def check_options(spec: ModelSpec) -> None:
    """Refuse unknown options and values of the wrong type or range, before anything is built.

    The zoo's options are positive integers (``width``) or lists of them (``blocks``); a
    builder's defaults say which is which.
    """
    parameters = inspect.signature(MODELS.get(spec.name)).parameters
    known = [name for name in parameters if name not in DATA_ARGUMENTS]
    for key, value in spec.options.items():
        if key not in known:
            shown = ", ".join(known) or "none"
            raise UserError(f"model '{spec.name}' has no option '{key}'; its options: {shown}")
        default = parameters[key].default
        items = value if isinstance(default, list | tuple) else [value]
        ok = isinstance(value, list) if isinstance(default, list | tuple) else True
        ok = ok and 0 < len(items) <= MAX_OPTION_ITEMS and all(
            isinstance(item, int) and not isinstance(item, bool)
            and 1 <= item <= MAX_OPTION_VALUE for item in items
        )  # fmt: skip
        if not ok:
            listed = isinstance(default, list | tuple)
            kind = f"a list of 1 to {MAX_OPTION_ITEMS} integers" if listed else "an integer"
            raise UserError(
                f"model '{spec.name}' option '{key}' must be {kind} from 1 to "
                f"{MAX_OPTION_VALUE}, got {value!r}"
            )


def build_model(
    spec: ModelSpec, layers: LayerFactory, in_channels: int, num_classes: int
) -> nn.Module:
    """Build ``spec`` with ``layers``; unknown options are a user error naming the model."""
    builder = MODELS.get(spec.name)
    try:
        return builder(layers, in_channels=in_channels, num_classes=num_classes, **spec.options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"model '{spec.name}' got an invalid option: {exc}") from exc
