"""Model registry interface."""

from __future__ import annotations

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


def build_model(
    spec: ModelSpec, layers: LayerFactory, in_channels: int, num_classes: int
) -> nn.Module:
    """Build ``spec`` with ``layers``; unknown options are a user error naming the model."""
    builder = MODELS.get(spec.name)
    try:
        return builder(layers, in_channels=in_channels, num_classes=num_classes, **spec.options)
    except TypeError as exc:
        raise UserError(f"model '{spec.name}' got an invalid option: {exc}") from exc
