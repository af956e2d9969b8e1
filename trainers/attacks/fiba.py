"""FIBA: a frequency-injection trigger (Feng et al., CVPR 2022).

Per channel, the image's centred 2-D spectrum keeps its phase; in the low-frequency square of
half-width b = floor(min(H, W) * beta) around the zero frequency its amplitude becomes
``(1 - alpha) * A_image + alpha * A_trigger``. The inverse transform's real part, clamped to
[0, 1], is the poisoned image. The square is symmetric about the zero frequency, so the blended
spectrum stays Hermitian and the imaginary part is round-off only.

The trigger image is ``BACKDOOR.FIBA.TRIGGER_IMAGE``, resized to the input size; when empty, a
built-in smooth texture (fixed seed, identical for every run, like a shipped image file) is used.

Noise mode (``BACKDOOR.FIBA.CROSS_RATIO``; the authors' code 1, the project's default 0 = off):
``cross_ratio`` x (poisoned count) further samples get the same blend with the amplitude of another
random training image instead of the trigger's and keep their true labels, so the model learns that
only the trigger image's spectrum means the target, not any low-frequency change.
"""
import math

import torch
import torch.nn.functional as F

from common.errors import InputError

from . import register_attack
from .base import Trigger, read_image_file

DEFAULT_TEXTURE_SEED = 20220619  # fixed: the built-in trigger image does not change with SEED
DEFAULT_TEXTURE_CELLS = 16  # the texture is 16 x 16 random colours, bicubic-upsampled


def default_trigger_image(image_size):
    """[3, H, W] in [0, 1]: smooth random colour texture, the same on every machine and run."""
    generator = torch.Generator().manual_seed(DEFAULT_TEXTURE_SEED)
    cells = torch.rand(1, 3, DEFAULT_TEXTURE_CELLS, DEFAULT_TEXTURE_CELLS, generator=generator)
    texture = F.interpolate(cells, size=(image_size, image_size), mode="bicubic", align_corners=False,
                            antialias=image_size < DEFAULT_TEXTURE_CELLS)
    return texture[0].clamp(0, 1)


def centred_spectrum(images):
    """Per-channel 2-D FFT with the zero frequency moved to index (H // 2, W // 2)."""
    return torch.fft.fftshift(torch.fft.fft2(images.float()), dim=(-2, -1))


def low_frequency_mask(height, width, beta):
    """[H, W] boolean: the centred square of half-width floor(min(H, W) * beta) (2b + 1 wide)."""
    b = math.floor(min(height, width) * beta)
    rows = (torch.arange(height) - height // 2).abs() <= b
    cols = (torch.arange(width) - width // 2).abs() <= b
    return rows[:, None] & cols[None, :]


class FrequencyTrigger(Trigger):
    cross_uses_partners = True

    def __init__(self, trigger_image, alpha=0.15, beta=0.1, cross_ratio=0.0):
        super().__init__()
        self.alpha, self.cross_ratio = float(alpha), float(cross_ratio)
        _, height, width = trigger_image.shape
        self.register_buffer("trigger_amplitude", centred_spectrum(trigger_image).abs())
        self.register_buffer("mask", low_frequency_mask(height, width, beta))

    def blend(self, images, amplitude):
        """``images`` with their low-frequency amplitude moved by ``alpha`` towards ``amplitude``."""
        if images.shape[-2:] != self.mask.shape:
            raise ValueError(f"FIBA trigger built for {tuple(self.mask.shape)} images, got {tuple(images.shape[-2:])}")
        spectrum = centred_spectrum(images)
        own, phase = spectrum.abs(), spectrum.angle()
        spectrum = torch.polar(own + self.alpha * self.mask * (amplitude - own), phase)
        blended = torch.fft.ifft2(torch.fft.ifftshift(spectrum, dim=(-2, -1))).real
        return blended.clamp(0, 1).to(images.dtype)

    def forward(self, images):
        return self.blend(images, self.trigger_amplitude)

    def apply_cross(self, images, partners=None):
        """The noise mode: each image blended with the amplitude of its partner (another image)."""
        if partners is None or len(partners) != len(images):
            raise ValueError("FIBA's noise mode blends each image with a partner image; give one per image")
        return self.blend(images, centred_spectrum(partners).abs())


@register_attack("fiba")
def build_fiba(cfg, image_size):
    """FIBA from ``BACKDOOR.FIBA.{ALPHA, BETA, TRIGGER_IMAGE, CROSS_RATIO}``."""
    f = cfg.BACKDOOR.FIBA
    if not 0 <= f.ALPHA <= 1:
        raise InputError(f"BACKDOOR.FIBA.ALPHA {f.ALPHA} must be in [0, 1] (the amplitude blend; paper 0.15)")
    if not 0 <= f.BETA <= 0.5:
        raise InputError(f"BACKDOOR.FIBA.BETA {f.BETA} must be in [0, 0.5] (the low-frequency square's "
                         "half-width as a share of the image size; paper 0.1)")
    if f.CROSS_RATIO < 0:
        raise InputError(f"BACKDOOR.FIBA.CROSS_RATIO {f.CROSS_RATIO} must be >= 0 (0 turns the noise mode off; "
                         "the authors' code 1)")
    image = (read_image_file(f.TRIGGER_IMAGE, image_size, "BACKDOOR.FIBA.TRIGGER_IMAGE",
                             " (or '' for the built-in texture)")[0]
             if f.TRIGGER_IMAGE else default_trigger_image(image_size))
    return FrequencyTrigger(image, f.ALPHA, f.BETA, f.CROSS_RATIO)
