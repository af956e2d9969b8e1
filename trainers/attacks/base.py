"""The attack interface: a trigger maps a batch of images in [0, 1] pixel space (after augmentation,
before the backbone's normalisation) to triggered images, vectorised over the batch."""
import torch.nn as nn

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
