"""Training-time augmentation on in-memory batches, driven by the trainer's seeded generator.

Policies are registered by name; each dataset names its standard one (random shifts for digit
images, pad-and-crop plus horizontal flips for natural images). Using the trainer's generator
makes augmentation part of the reproducible, resumable random stream.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as functional

from apprentice_hw.registry import Registry

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
AUGMENTATIONS: Registry[Augment] = Registry("augmentation")


def random_crop(x: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``pad`` and crop back to the original size at a random offset per image."""
    height, width = x.shape[-2:]
    padded = functional.pad(x, (pad, pad, pad, pad))
    offsets = torch.randint(0, 2 * pad + 1, (len(x), 2), generator=generator)
    crops = [
        padded[i, :, dy : dy + height, dx : dx + width]
        for i, (dy, dx) in enumerate(offsets.tolist())
    ]
    return torch.stack(crops)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the images horizontally."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


AUGMENTATIONS.add("none", lambda x, g: x)
AUGMENTATIONS.add("shift1", lambda x, g: random_crop(x, 1, g))
AUGMENTATIONS.add("crop2", lambda x, g: random_crop(x, 2, g))
AUGMENTATIONS.add("crop4-flip", lambda x, g: random_flip(random_crop(x, 4, g), g))
