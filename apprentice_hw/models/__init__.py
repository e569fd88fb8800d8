"""The model zoo: registered builders that take a layer factory and the data's shape."""

from apprentice_hw.models import resnet_imagenet as _resnet_imagenet  # noqa: F401 (registers)
from apprentice_hw.models import resnet_small as _resnet_small  # noqa: F401  (registers models)
from apprentice_hw.models.base import MODELS, ModelSpec, build_model, check_options

__all__ = ["MODELS", "ModelSpec", "build_model", "check_options"]
