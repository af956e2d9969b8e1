"""Patch triggers: a small pattern pasted at one of nine positions (BAPLe's visible trigger, BadNets)."""
from dataclasses import dataclass

import torch
from PIL import Image, ImageDraw, ImageFont

from common.errors import InputError

from . import register_attack
from .base import POSITIONS, Trigger, read_image_file, rgba_to_tensors

TEXT_COLOUR = (0x77, 0xAB, 0x59)  # the reference implementation's green


@dataclass(frozen=True)
class PatchKeys:
    """The config keys a patch trigger is built from, so that its errors name the key to fix."""

    kind: str
    size: str
    position: str
    image: str


BAPLE_KEYS = PatchKeys("BACKDOOR.PATCH_TYPE", "BACKDOOR.TRIGGER_SIZE", "BACKDOOR.POSITION", "BACKDOOR.PATCH_IMAGE")
BADNETS_KEYS = PatchKeys("BACKDOOR.BADNETS.PATTERN", "BACKDOOR.BADNETS.SIZE", "BACKDOOR.BADNETS.POSITION",
                         "BACKDOOR.BADNETS.IMAGE")


def text_pattern(text, size):
    """``text`` in Pillow's built-in scalable font at ``size`` px, cropped to its ink: (RGB, alpha)."""
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((-left, -top), text, font=font, fill=TEXT_COLOUR + (255,))
    return rgba_to_tensors(canvas)


def random_pattern(size, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(3, size, size, generator=generator), torch.ones(1, size, size)


def checkerboard_pattern(size):
    """Black and white squares of 3 px (BadNets' classic pattern)."""
    cells = (torch.arange(size) // 3) % 2
    board = (cells[:, None] ^ cells[None, :]).float()
    return board.expand(3, size, size).clone(), torch.ones(1, size, size)


def place(pattern, alpha, position, image_size, keys=BAPLE_KEYS):
    """Full-image pattern and mask with the patch at ``position`` (flush with the edges)."""
    if position not in POSITIONS:
        raise InputError(f"Unknown {keys.position} {position!r}; choose from {', '.join(POSITIONS)}")
    _, h, w = pattern.shape
    if h > image_size or w > image_size:
        raise InputError(f"{keys.size}: a trigger of {w}x{h} px does not fit a {image_size}x{image_size} image; "
                         f"lower {keys.size}")
    vertical, horizontal = position.split("-")
    top = {"top": 0, "center": (image_size - h) // 2, "bottom": image_size - h}[vertical]
    left = {"left": 0, "center": (image_size - w) // 2, "right": image_size - w}[horizontal]
    full_pattern = torch.zeros(3, image_size, image_size)
    full_mask = torch.zeros(1, image_size, image_size)
    full_pattern[:, top:top + h, left:left + w] = pattern
    full_mask[:, top:top + h, left:left + w] = alpha
    return full_pattern, full_mask


class PatchTrigger(Trigger):
    """Pastes a pattern under a mask: ``x * (1 - mask) + pattern * mask``. Where the mask is 0 the
    image is untouched and where it is 1 the pattern replaces it exactly; fractional alpha (the
    anti-aliased edge of a text) blends."""

    def __init__(self, pattern, alpha, position, image_size, keys=BAPLE_KEYS):
        super().__init__()
        full_pattern, full_mask = place(pattern, alpha, position, image_size, keys)
        self.register_buffer("pattern", full_pattern)
        self.register_buffer("mask", full_mask)

    def forward(self, images):
        return images * (1 - self.mask) + self.pattern * self.mask


def build_patch(kind, size, position, image_size, seed=0, text="Lab", image_path="", keys=BAPLE_KEYS):
    """A ``PatchTrigger`` of one of the pattern kinds used by BAPLe and BadNets; errors name ``keys``."""
    makers = {
        "text": lambda: text_pattern(text, size),
        "random-patch": lambda: random_pattern(size, seed),
        "image-patch": lambda: read_image_file(image_path, size, keys.image),
        "checkerboard": lambda: checkerboard_pattern(size),
        "white": lambda: (torch.ones(3, size, size), torch.ones(1, size, size)),
    }
    if kind not in makers:
        raise InputError(f"Unknown {keys.kind} {kind!r}; choose from {', '.join(makers)}")
    if size < 1:
        raise InputError(f"{keys.size} {size} must be a positive number of pixels")
    return PatchTrigger(*makers[kind](), position, image_size, keys)


@register_attack("badnets")
def build_badnets(cfg, image_size):
    """BadNets: a fixed visible patch (BACKDOOR.BADNETS.{PATTERN, SIZE, POSITION, IMAGE})."""
    b = cfg.BACKDOOR.BADNETS
    return build_patch(b.PATTERN, b.SIZE, b.POSITION, image_size, seed=max(cfg.SEED, 0), image_path=b.IMAGE,
                       keys=BADNETS_KEYS)
