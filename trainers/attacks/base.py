"""The attack interface: a trigger maps a batch of images in [0, 1] pixel space (after augmentation,
before the backbone's normalisation) to triggered images, vectorised over the batch."""
import os

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from common.errors import InputError

POSITIONS = ("top-left", "top-center", "top-right", "center-left", "center-center", "center-right",
             "bottom-left", "bottom-center", "bottom-right")


class Trigger(nn.Module):
    """Base class of every trigger. Subclasses implement ``forward(images) -> images``.

    ``cross_ratio`` > 0 declares a "noise mode" (WaNet): that many extra samples per poisoned one
    are transformed by ``apply_cross`` and keep their true labels.
    """

    cross_ratio = 0.0

    def forward(self, images):
        raise NotImplementedError

    def apply_cross(self, images):
        raise NotImplementedError(f"{type(self).__name__} has no noise mode (cross_ratio is 0)")


def read_image_file(path, size, key, hint=""):
    """An image file resized to ``size`` x ``size`` as ([3, s, s] RGB, [1, s, s] alpha) in [0, 1];
    errors name ``key``, the config key that gave ``path``, and end with ``hint``."""
    if not os.path.isfile(path):
        raise InputError(f"{key} {path!r}: trigger image does not exist; set {key} to an image file{hint}")
    try:
        with Image.open(path) as img:
            rgba = img.convert("RGBA").resize((size, size), Image.Resampling.BICUBIC)
    except OSError as e:
        raise InputError(f"{key} {path!r}: trigger image cannot be read ({e}); use a PNG or JPEG file{hint}") from None
    return rgba_to_tensors(rgba)


def rgba_to_tensors(rgba):
    """A PIL RGBA image as ([3, H, W] RGB, [1, H, W] alpha) float tensors in [0, 1]."""
    pixels = torch.from_numpy(np.asarray(rgba, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return pixels[:3].contiguous(), pixels[3:].contiguous()
