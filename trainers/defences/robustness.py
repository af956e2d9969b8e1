"""Input purifiers a hospital could run on every incoming image, and CA/BA under each at a sweep of
strengths.

A countermeasure is ``apply(images, strength, generator) -> images`` on a batch in [0, 1] pixel
space (the space triggers live in, before the backbone's normalisation). Strength 0 returns the
input tensor itself, so the unpurified evaluation is literally the run's own. Strengths are listed
from off to strongest; for JPEG and bit depth the number is the quality or the bits kept (0: off).

``sweep`` evaluates a rebuilt run through ``BackdoorTrainer.evaluate`` with the purifier put in front
of the image tower: the countermeasure reaches clean and triggered images alike, after the trigger,
in the run's own batches and precision.
"""
import math
import zlib
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.io import decode_jpeg, encode_jpeg


def jpeg(images, quality, generator=None):
    """Re-encode as 8-bit JPEG at ``quality`` (1-100) and decode."""
    if not quality:
        return images
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    decoded = decode_jpeg(encode_jpeg(list(pixels), quality=int(quality)))
    return (torch.stack(decoded).to(images.device, torch.float32) / 255).to(images.dtype)


def blur(images, sigma, generator=None):
    """Gaussian blur of standard deviation ``sigma`` pixels (kernel +-3 sigma)."""
    if not sigma:
        return images
    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(images, [size, size], [float(sigma), float(sigma)])


def resize(images, reduction, generator=None):
    """Downscale to ``1 - reduction`` of the side (antialiased) and back up (bilinear)."""
    if not reduction:
        return images
    height, width = images.shape[-2:]
    small = (max(1, round(height * (1 - reduction))), max(1, round(width * (1 - reduction))))
    down = F.interpolate(images, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(down, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)


def gaussian_noise(images, std_255, generator=None):
    """Add Gaussian noise of standard deviation ``std_255``/255, clipped to [0, 1]."""
    if not std_255:
        return images
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    return (images + noise * (std_255 / 255)).clamp(0, 1)


def bit_depth(images, bits, generator=None):
    """Quantise every channel to ``bits`` bits."""
    if not bits:
        return images
    levels = 2 ** int(bits) - 1
    return torch.round(images * levels) / levels


def random_crop(images, fraction, generator=None):
    """Per image, a random window of side ``1 - fraction`` (a random shift of up to ``fraction``),
    resized back to the full size: one vectorised affine resampling."""
    if not fraction:
        return images
    n = images.shape[0]
    scale = 1 - fraction
    shift = (torch.rand((n, 2), generator=generator) * 2 - 1) * fraction  # window centre, normalised coords
    theta = torch.zeros((n, 2, 3))
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def window(images, clipped, generator=None):
    """Narrow the intensity window: the darkest and brightest ``clipped``/2 of the range are clipped
    and the rest stretched to [0, 1] (a radiologist's window/contrast change)."""
    if not clipped:
        return images
    low = clipped / 2
    return ((images - low) / (1 - clipped)).clamp(0, 1)


@dataclass(frozen=True)
class Countermeasure:
    name: str
    apply: callable
    parameter: str  # what a strength means, for tables and plot axes
    strengths: tuple  # from off (0) to strongest
    quick: tuple  # a short sweep for smoke tests
    modalities: tuple = ("xray", "histology")


COUNTERMEASURES = {c.name: c for c in (
    Countermeasure("jpeg", jpeg, "JPEG quality", (0, 95, 85, 75, 50, 30), (0, 50)),
    Countermeasure("blur", blur, "Gaussian sigma (px)", (0, 0.5, 1, 2, 3), (0, 2)),
    Countermeasure("resize", resize, "size reduction (fraction)", (0, 0.25, 0.5, 0.75), (0, 0.5)),
    Countermeasure("noise", gaussian_noise, "noise std (/255)", (0, 2, 4, 8, 16, 32), (0, 16)),
    Countermeasure("bit_depth", bit_depth, "bits kept", (0, 6, 5, 4, 3, 2), (0, 3)),
    Countermeasure("crop", random_crop, "crop/shift (fraction of side)", (0, 0.05, 0.1, 0.2, 0.3), (0, 0.2)),
    Countermeasure("window", window, "intensity range clipped (fraction)", (0, 0.1, 0.2, 0.3, 0.4), (0, 0.3),
                   modalities=("xray",)),
)}


def countermeasures_for(modality):
    """The countermeasures that apply to a dataset's modality (windowing: X-rays only)."""
    return [c for c in COUNTERMEASURES.values() if modality in c.modalities]


class _PurifiedModel:
    """A classifier whose image tower sees ``purify(images)``; everything else is the wrapped model's."""

    def __init__(self, model, purify):
        self._model, self._purify = model, purify

    def eval_context(self):
        return self._model.eval_context()

    def eval_logits(self, images, context):
        return self._model.eval_logits(self._purify(images), context)


@contextmanager
def purified(trainer, purify):
    """Within the block, ``trainer.evaluate()`` runs every image (clean and triggered) through ``purify``."""
    model = trainer.model
    trainer.model = _PurifiedModel(model, purify)
    try:
        yield trainer
    finally:
        trainer.model = model


@contextmanager
def test_set_in_memory(trainer, max_bytes=2 ** 30):
    """Within the block, the test loader is replaced by the list of its batches (read once), when they
    fit in ``max_bytes``: repeated evaluations then skip decoding and resizing. The batches are the
    loader's own (its test transform is deterministic), in its order."""
    loader = trainer.test_loader
    height, width = trainer.cfg.INPUT.SIZE
    if len(loader.dataset) * 3 * height * width * 4 > max_bytes:
        yield trainer
        return
    trainer.test_loader = list(loader)
    try:
        yield trainer
    finally:
        trainer.test_loader = loader


def summary(metrics):
    """CA, BA and non-target ASR of ``BackdoorTrainer.evaluate``'s result (BA None without a trigger)."""
    backdoor = metrics["backdoor"] or {}
    return {"clean_accuracy": metrics["clean"]["accuracy"], "backdoor_accuracy": backdoor.get("accuracy"),
            "asr_non_target": backdoor.get("asr_non_target")}


def evaluate_quietly(trainer, log):
    with redirect_stdout(log):
        return summary(trainer.evaluate("test"))


def sweep(trainer, countermeasures, quick=False, seed=0, log=None):
    """(unpurified CA/BA, {name: {"parameter", "points": [{"strength", CA, BA, ASR}, ...]}}). Strength 0
    is evaluated without any wrapper (the run's own computation), once, and shared by every
    countermeasure."""
    with test_set_in_memory(trainer):
        unpurified = evaluate_quietly(trainer, log)
        out = {}
        for countermeasure in countermeasures:
            points = []
            for strength in countermeasure.quick if quick else countermeasure.strengths:
                if strength == 0:
                    points.append({"strength": 0, **unpurified})
                    continue
                # Random purifiers draw from a generator seeded by name: the same draws whatever else is swept.
                generator = torch.Generator().manual_seed(seed * 2**32 + zlib.crc32(countermeasure.name.encode()))
                with purified(trainer, lambda x: countermeasure.apply(x, strength, generator)):
                    points.append({"strength": strength, **evaluate_quietly(trainer, log)})
            out[countermeasure.name] = {"parameter": countermeasure.parameter, "points": points}
    return unpurified, out
