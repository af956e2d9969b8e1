"""Patch triggers: a small pattern pasted at one of nine positions (BAPLe's visible trigger, BadNets).

Two placement rules (``BACKDOOR.PATCH_PLACEMENT``):

- ``flush`` (the project's): the patch, for a text its Pillow bounding box (``font.getbbox``: the
  ink's rows, columns from the pen position), touches the chosen edges; centred positions centre it.
- ``reference`` (the authors' BAPLe code): the patch's corner, for a text Pillow's drawing origin,
  lies ``REFERENCE_INSET`` (15) px in from the chosen edges, the text counted as a square of the font
  size: 15 at the left/top, ``image - size - 15`` at the right/bottom, ``image // 2 - size // 2``
  centred. Glyphs reaching past the image are clipped, as when drawing on the image.

Two masks (``BACKDOOR.PATCH_MASK``): ``blend`` keeps the pattern's alpha, so a text's anti-aliased
edge blends with the image; ``binary`` replaces every pixel with alpha > 0 by the pattern (the
reference: every pixel the glyphs touch becomes the text colour).

A text is drawn in ``BACKDOOR.PATCH_COLOR`` and the font file ``BACKDOOR.PATCH_FONT`` at
``TRIGGER_SIZE`` px (the reference ships Arizonia Regular, a script font; give its .ttf to reproduce
its trigger exactly); without a file, Pillow's built-in scalable font.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageColor, ImageDraw, ImageFont

from common.errors import InputError

from . import register_attack
from .base import POSITIONS, Trigger, read_image_file

TEXT_COLOUR = "#77ab59"  # the reference implementation's green
REFERENCE_INSET = 15  # px between the chosen edges and the reference's drawing origin
PLACEMENTS = ("flush", "reference")
MASK_MODES = ("blend", "binary")


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


def load_font(path, size, key="BACKDOOR.PATCH_FONT"):
    """The TrueType/OpenType font file ``path`` at ``size`` px; "" gives Pillow's built-in scalable
    font (Aileron Regular, Pillow >= 10.1), the same on every machine."""
    if not path:
        return ImageFont.load_default(size=size)
    if not os.path.isfile(path):
        raise InputError(f"{key} {path!r}: font file does not exist; set {key} to a TrueType (.ttf) file, "
                         "or '' for Pillow's built-in font")
    try:
        return ImageFont.truetype(path, size)
    except OSError as e:
        raise InputError(f"{key} {path!r}: font file cannot be read ({e}); give a TrueType (.ttf) or OpenType "
                         "(.otf) file, or '' for Pillow's built-in font") from None


def parse_colour(value, key="BACKDOOR.PATCH_COLOR"):
    """An (r, g, b) tuple from a Pillow colour string (``#77ab59``, ``rgb(119,171,89)``, ``green``)."""
    try:
        return ImageColor.getcolor(value, "RGB")
    except ValueError:
        raise InputError(f"{key} {value!r} is not a colour; give a hex colour such as '#77ab59'") from None


def corner(position, extent, image_size, placement):
    """(left, top) of a box of ``extent`` (width, height) px at ``position`` under ``placement``."""
    vertical, horizontal = position.split("-")

    def offset(where, length):
        if placement == "flush":
            return {"start": 0, "center": (image_size - length) // 2, "end": image_size - length}[where]
        return {"start": REFERENCE_INSET, "center": image_size // 2 - length // 2,
                "end": image_size - length - REFERENCE_INSET}[where]

    width, height = extent
    return (offset({"left": "start", "center": "center", "right": "end"}[horizontal], width),
            offset({"top": "start", "center": "center", "bottom": "end"}[vertical], height))


def check_fits(extent, image_size, placement, keys):
    width, height = extent
    margin = 0 if placement == "flush" else 2 * REFERENCE_INSET
    if width + margin > image_size or height + margin > image_size:
        where = ("" if placement == "flush"
                 else f" {REFERENCE_INSET} px from the edges (BACKDOOR.PATCH_PLACEMENT reference)")
        raise InputError(f"{keys.size}: a trigger of {width}x{height} px{where} does not fit a "
                         f"{image_size}x{image_size} image; lower {keys.size}")


def text_origin(text, font, size, position, image_size, placement, keys=BAPLE_KEYS):
    """Pillow's drawing origin of ``text``: its ink box flush with the edges, or the reference's rule
    for a ``size`` x ``size`` square."""
    if placement == "flush":
        left, top, right, bottom = font.getbbox(text)
        check_fits((right - left, bottom - top), image_size, placement, keys)
        x, y = corner(position, (right - left, bottom - top), image_size, placement)
        return x - left, y - top
    check_fits((size, size), image_size, placement, keys)
    return corner(position, (size, size), image_size, placement)


def text_coverage(text, font, origin, image_size):
    """[1, H, W] in [0, 1]: how much of each pixel the glyphs drawn at ``origin`` cover."""
    canvas = Image.new("L", (image_size, image_size), 0)
    ImageDraw.Draw(canvas).text(origin, text, font=font, fill=255)
    return torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0)[None]


def random_pattern(size, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(3, size, size, generator=generator), torch.ones(1, size, size)


def checkerboard_pattern(size):
    """Black and white squares of 3 px (BadNets' classic pattern)."""
    cells = (torch.arange(size) // 3) % 2
    board = (cells[:, None] ^ cells[None, :]).float()
    return board.expand(3, size, size).clone(), torch.ones(1, size, size)


def place(pattern, alpha, position, image_size, placement="flush", keys=BAPLE_KEYS):
    """Full-image pattern and alpha with the patch at ``position``."""
    _, h, w = pattern.shape
    check_fits((w, h), image_size, placement, keys)
    left, top = corner(position, (w, h), image_size, placement)
    full_pattern = torch.zeros(3, image_size, image_size)
    full_alpha = torch.zeros(1, image_size, image_size)
    full_pattern[:, top:top + h, left:left + w] = pattern
    full_alpha[:, top:top + h, left:left + w] = alpha
    return full_pattern, full_alpha


class PatchTrigger(Trigger):
    """Pastes a full-image pattern under a mask: ``x * (1 - mask) + pattern * mask``. Where the mask
    is 0 the image is untouched and where it is 1 the pattern replaces it exactly; fractional values
    (the anti-aliased edge of a text, mask ``blend``) blend."""

    def __init__(self, pattern, mask):
        super().__init__()
        self.register_buffer("pattern", pattern)
        self.register_buffer("mask", mask)

    def forward(self, images):
        return images * (1 - self.mask) + self.pattern * self.mask


def build_patch(kind, size, position, image_size, seed=0, text="Lab", image_path="", keys=BAPLE_KEYS,
                placement="flush", mask_mode="blend", colour=TEXT_COLOUR, font_path=""):
    """A ``PatchTrigger`` of one of the pattern kinds used by BAPLe and BadNets; errors name ``keys``.
    ``colour`` and ``font_path`` style a text; ``placement`` and ``mask_mode`` apply to every kind."""
    makers = {
        "random-patch": lambda: random_pattern(size, seed),
        "image-patch": lambda: read_image_file(image_path, size, keys.image),
        "checkerboard": lambda: checkerboard_pattern(size),
        "white": lambda: (torch.ones(3, size, size), torch.ones(1, size, size)),
    }
    if kind not in makers and kind != "text":
        raise InputError(f"Unknown {keys.kind} {kind!r}; choose from text, {', '.join(makers)}")
    if size < 1:
        raise InputError(f"{keys.size} {size} must be a positive number of pixels")
    if position not in POSITIONS:
        raise InputError(f"Unknown {keys.position} {position!r}; choose from {', '.join(POSITIONS)}")
    if kind == "text":
        font = load_font(font_path, size)
        alpha = text_coverage(text, font, text_origin(text, font, size, position, image_size, placement, keys),
                              image_size)
        pattern = torch.tensor(parse_colour(colour), dtype=torch.float32).div(255).view(3, 1, 1) * (alpha > 0)
    else:
        pattern, alpha = place(*makers[kind](), position, image_size, placement, keys)
    mask = (alpha > 0).float() if mask_mode == "binary" else alpha
    return PatchTrigger(pattern, mask)


def build_baple_patch(cfg, image_size):
    """BAPLe's visible patch from ``BACKDOOR.{PATCH_TYPE, TRIGGER_SIZE, POSITION, PATCH_TEXT, PATCH_IMAGE,
    PATCH_PLACEMENT, PATCH_MASK, PATCH_COLOR, PATCH_FONT}``."""
    b = cfg.BACKDOOR
    for key, value, choices in (("PATCH_PLACEMENT", b.PATCH_PLACEMENT, PLACEMENTS),
                                ("PATCH_MASK", b.PATCH_MASK, MASK_MODES)):
        if value not in choices:
            raise InputError(f"BACKDOOR.{key} {value!r} is unknown; choose from {', '.join(choices)}")
    return build_patch(b.PATCH_TYPE, b.TRIGGER_SIZE, b.POSITION, image_size, seed=max(cfg.SEED, 0),
                       text=b.PATCH_TEXT, image_path=b.PATCH_IMAGE, placement=b.PATCH_PLACEMENT,
                       mask_mode=b.PATCH_MASK, colour=b.PATCH_COLOR, font_path=b.PATCH_FONT)


@register_attack("badnets")
def build_badnets(cfg, image_size):
    """BadNets: a fixed visible patch (BACKDOOR.BADNETS.{PATTERN, SIZE, POSITION, IMAGE}), flush with the edges."""
    b = cfg.BACKDOOR.BADNETS
    return build_patch(b.PATTERN, b.SIZE, b.POSITION, image_size, seed=max(cfg.SEED, 0), image_path=b.IMAGE,
                       keys=BADNETS_KEYS)
