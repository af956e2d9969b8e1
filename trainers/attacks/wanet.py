"""WaNet: an imperceptible warping trigger (Nguyen & Tran, ICLR 2021).

A k x k field of random offsets in [-1, 1], normalised by its mean absolute value and upsampled
(bicubic) to H x W, displaces the identity sampling grid of ``F.grid_sample``:

    grid = clamp((identity + s * field / H) * grid_rescale, -1, 1)

(the original code's order: rescale, then clamp; the two agree at the default grid_rescale 1).
The field is drawn once from a generator seeded with ``cfg.SEED``, so a run's trigger is fixed.

Noise mode: ``cross_ratio`` x (poisoned count) further training samples are warped with
``clamp(grid + u / H, -1, 1)``, ``u`` uniform in [-1, 1] per sample and pixel, and keep their
true labels, so the model learns that only the exact warp means the target. ``u`` is drawn from
torch's global generator at every call (a training-time augmentation the checkpoint's random
state makes resumable). Which samples are noise-mode ones is ``BACKDOOR.WANET.NOISE_REDRAW``:
``fixed`` (the project's: drawn once with the poisoned ones, recorded in ``results.json``) or
``per_batch`` (the official code, which takes them afresh from every batch; here at the same rate,
see ``TriggerRows``).
"""
import torch
import torch.nn.functional as F

from common.errors import InputError

from . import register_attack
from .base import CROSS_REDRAWS, Trigger


def warp_field(k, image_size, seed):
    """[1, H, W, 2] smooth random offsets, mean absolute value 1 before upsampling."""
    generator = torch.Generator().manual_seed(seed)
    offsets = torch.rand(1, 2, k, k, generator=generator) * 2 - 1
    offsets = offsets / offsets.abs().mean()
    field = F.interpolate(offsets, size=(image_size, image_size), mode="bicubic", align_corners=True)
    return field.permute(0, 2, 3, 1)


def identity_grid(image_size):
    """[1, H, W, 2] sampling grid that ``grid_sample(align_corners=True)`` maps onto the input itself."""
    coords = torch.linspace(-1, 1, image_size)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    return torch.stack((cols, rows), dim=-1).unsqueeze(0)  # grid_sample reads (x, y) = (column, row)


class WarpTrigger(Trigger):
    def __init__(self, image_size, k=4, s=0.5, grid_rescale=1.0, cross_ratio=2.0, seed=0, cross_redraw="fixed"):
        super().__init__()
        self.image_size = image_size
        self.cross_ratio, self.cross_redraw = float(cross_ratio), cross_redraw
        grid = (identity_grid(image_size) + s * warp_field(k, image_size, seed) / image_size) * grid_rescale
        self.register_buffer("grid", grid.clamp(-1, 1))

    def _warp(self, images, grid):
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"WaNet trigger built for {self.image_size}x{self.image_size} images, "
                             f"got {tuple(images.shape[-2:])}")
        warped = F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="zeros",
                               align_corners=True)
        return warped.clamp(0, 1)  # bilinear weights are convex; the clamp only removes round-off

    def forward(self, images):
        return self._warp(images, self.grid.expand(len(images), -1, -1, -1))

    def apply_cross(self, images, partners=None):
        noise = torch.rand(len(images), self.image_size, self.image_size, 2, device=images.device) * 2 - 1
        return self._warp(images, (self.grid + noise / self.image_size).clamp(-1, 1))


@register_attack("wanet")
def build_wanet(cfg, image_size):
    """WaNet from ``BACKDOOR.WANET.{K, S, GRID_RESCALE, CROSS_RATIO, NOISE_REDRAW}``, its field seeded by ``SEED``."""
    w = cfg.BACKDOOR.WANET
    if not 1 <= w.K <= image_size:
        raise InputError(f"BACKDOOR.WANET.K {w.K} must be between 1 and the image size {image_size}")
    if w.S < 0:
        raise InputError(f"BACKDOOR.WANET.S {w.S} must be >= 0 (the warp strength; paper 0.5)")
    if w.GRID_RESCALE <= 0:
        raise InputError(f"BACKDOOR.WANET.GRID_RESCALE {w.GRID_RESCALE} must be > 0 (paper 1)")
    if w.CROSS_RATIO < 0:
        raise InputError(f"BACKDOOR.WANET.CROSS_RATIO {w.CROSS_RATIO} must be >= 0 (0 turns the noise mode off)")
    if w.NOISE_REDRAW not in CROSS_REDRAWS:
        raise InputError(f"BACKDOOR.WANET.NOISE_REDRAW {w.NOISE_REDRAW!r} is unknown; "
                         f"choose from {', '.join(CROSS_REDRAWS)}")
    return WarpTrigger(image_size, w.K, w.S, w.GRID_RESCALE, w.CROSS_RATIO, seed=max(cfg.SEED, 0),
                       cross_redraw=w.NOISE_REDRAW)
