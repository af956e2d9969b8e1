"""The attack interface: a trigger maps a batch of images in [0, 1] pixel space (before the backbone's
normalisation) to triggered images, vectorised over the batch.

Where in the training pipeline it runs is ``BACKDOOR.TRIGGER_STAGE``: ``after_augmentation`` (the
project's default, the paper's BAPLe pipeline: augment, then trigger the batch) or
``before_augmentation`` (the authors' WaNet and FIBA code: trigger the un-augmented image, then
augment; the training set's loader runs ``BeforeAugmentation``). Both call ``apply_rows``.
"""
import copy
import os

import numpy as np
import torch
import torch.nn as nn
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from common.errors import InputError

POSITIONS = ("top-left", "top-center", "top-right", "center-left", "center-center", "center-right",
             "bottom-left", "bottom-center", "bottom-right")


TRIGGER_STAGES = ("after_augmentation", "before_augmentation")
CROSS_REDRAWS = ("fixed", "per_batch")


class Trigger(nn.Module):
    """Base class of every trigger. Subclasses implement ``forward(images) -> images``.

    ``cross_ratio`` > 0 declares a "noise mode" (WaNet, FIBA): that many extra samples per poisoned one
    are transformed by ``apply_cross`` and keep their true labels. ``cross_redraw`` says whether those
    samples are fixed by the poisoning plan (``fixed``) or redrawn at every batch (``per_batch``, the
    official WaNet code); ``cross_uses_partners``: ``apply_cross`` blends in other images (FIBA).
    """

    cross_ratio = 0.0
    cross_redraw = "fixed"
    cross_uses_partners = False

    def forward(self, images):
        raise NotImplementedError

    def apply_cross(self, images, partners=None):
        raise NotImplementedError(f"{type(self).__name__} has no noise mode (cross_ratio is 0)")


class TriggerRows:
    """Which training samples (indices into the few-shot training set) a trigger touches: the
    poisoned ones, fixed by the poisoning plan, and the noise-mode (cross) ones. With ``per_batch``
    the plan's cross samples only set their rate: each time a batch is drawn, every sample that is not
    poisoned is a cross sample with probability (plan's cross count) / (samples not poisoned), drawn
    from torch's global generator (so a resumed run redraws as the uninterrupted one)."""

    def __init__(self, num_samples, poisoned, cross, redraw="fixed"):
        self.poisoned = torch.zeros(num_samples, dtype=torch.bool)
        self.poisoned[poisoned] = True
        self.fixed_cross = torch.zeros(num_samples, dtype=torch.bool)
        self.fixed_cross[cross] = True
        self.redraw = redraw
        not_poisoned = num_samples - len(poisoned)
        self.cross_probability = len(cross) / not_poisoned if not_poisoned else 0.0

    def cross(self, index):
        """[B] bool: the cross samples among the training-set indices ``index`` of one batch."""
        if self.redraw == "fixed":
            return self.fixed_cross[index]
        return ~self.poisoned[index] & (torch.rand(len(index)) < self.cross_probability)


def other_rows(rows, batch_size):
    """For each row index in ``rows``, another random row of a batch of ``batch_size`` (itself when alone)."""
    if batch_size < 2:
        return rows
    return (rows + torch.randint(1, batch_size, rows.shape, device=rows.device)) % batch_size


def apply_rows(trigger, images, poisoned, cross, partners=None):
    """A copy of the batch ``images`` with the ``poisoned`` rows triggered and the ``cross`` rows
    cross-transformed; a noise mode that blends in other images gets ``partners`` (one per cross row),
    by default other random rows of the same batch, un-triggered."""
    if not (poisoned.any() or cross.any()):
        return images
    out = images.clone()
    if poisoned.any():
        out[poisoned] = trigger(images[poisoned])
    if cross.any():
        if trigger.cross_uses_partners and partners is None:
            partners = images[other_rows(torch.nonzero(cross).flatten(), len(images))]
        out[cross] = trigger.apply_cross(images[cross], partners)
    return out


class BeforeAugmentation:
    """The training set loader's step before augmentation (``BACKDOOR.TRIGGER_STAGE before_augmentation``,
    set as ``ImageDataset.before_augmentation``): every training image is resized to the size the
    trigger is built for (the authors' loaders resize each image to the input size before their
    augmentations); a poisoned or cross one is then triggered by ``apply_rows`` (a cross one's partner:
    another random training image) and handed on as an 8-bit image, so the training augmentation treats
    it exactly as it treats a clean image. Runs on the CPU, in the loader's workers."""

    def __init__(self, trigger, rows, image_size, interpolation="bilinear"):
        self.trigger, self.rows = copy.deepcopy(trigger).cpu().eval(), rows  # the trainer's own moves to the GPU
        self.image_size, self.interpolation = image_size, InterpolationMode(interpolation)

    def resize(self, image):
        return TF.resize(image, [self.image_size, self.image_size], interpolation=self.interpolation)

    @torch.no_grad()
    def __call__(self, dataset, index, image):
        image = self.resize(image)
        rows = torch.tensor([index])
        poisoned, cross = self.rows.poisoned[rows], self.rows.cross(rows)
        if not (poisoned.any() or cross.any()):
            return image
        partners = None
        if cross.any() and self.trigger.cross_uses_partners:
            partner = int(other_rows(rows, len(dataset))[0])
            partners = TF.to_tensor(self.resize(dataset.load(partner)))[None]
        triggered = apply_rows(self.trigger, TF.to_tensor(image)[None], poisoned, cross, partners)[0]
        pixels = triggered.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
        return Image.fromarray(pixels)


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
