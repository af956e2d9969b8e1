"""Reading images the same way everywhere: one loader that turns any pixel format the medical
releases use into an 8-bit RGB ``PIL.Image``, and one cheap check for the bad-file policy.

Pixel formats (what ``load_image`` does with each PIL mode):

- ``RGB``: as is. ``L`` (8-bit grey), ``1`` (bilevel), ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``:
  PIL's own conversion to RGB.
- ``I;16`` family (16-bit grey PNG/TIFF, e.g. converted DICOMs): the full 16-bit range maps
  linearly onto 0..255 (``round(v / 257)``). The mapping uses the nominal bit depth, not the
  image's own min/max, so intensities stay comparable across images; a 12-bit X-ray stored
  unscaled in a 16-bit container therefore looks dark (``datasets.prepare.rsna18`` scales its
  DICOMs to the full 16-bit range for this reason).
- ``I`` (32-bit integer; older Pillow opens 16-bit PNGs this way): values within 0..65535 are
  read as 16-bit as above; anything else is stretched from its min..max onto 0..255.
- ``F`` (32-bit float): values within [0, 1] are scaled by 255; anything else is stretched.
- With transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a transparent colour, premultiplied
  ``RGBa``/``La``): composited onto black, the "no signal" value of an X-ray and of a
  normalised pixel, so transparent pixels do not leak whatever colour they happen to store.

8-bit output is deliberate: every model here takes 8-bit-derived [0, 1] inputs after
``ToTensor``, and PIL's transforms (resize, crops) need a standard mode.
"""
import os

import numpy as np
from PIL import Image

from common.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm")

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def _stretch(values):
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.rint((values - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _grey_to_8bit(img):
    """8-bit grey image from a 16-bit, 32-bit integer or float grey image (rules in the module doc)."""
    values = np.asarray(img)
    if img.mode in _SIXTEEN_BIT_MODES or (img.mode == "I" and values.min() >= 0 and values.max() <= 65535):
        grey = np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)
    elif img.mode == "F" and values.min() >= 0.0 and values.max() <= 1.0:
        grey = np.rint(values.astype(np.float64) * 255.0).astype(np.uint8)
    else:
        grey = _stretch(values.astype(np.float64))
    return Image.fromarray(grey)


def to_rgb(img):
    """8-bit RGB version of a PIL image of any mode (rules in the module doc)."""
    if img.mode == "RGB":
        return img
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        return _grey_to_8bit(img).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return img.convert("RGB")


def unreadable(path, reason):
    """The one-line error for an image that cannot be used."""
    return InputError(f"{path}: {reason}; replace or delete the file, "
                      f"or set DATASET.BAD_FILES skip to leave unreadable images out")


def load_image(path):
    """The image at ``path`` as an 8-bit RGB ``PIL.Image``; ``InputError`` naming the path if it
    is missing or cannot be decoded."""
    if not os.path.isfile(path):
        raise unreadable(path, "no such file")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    # Decoders of corrupt files raise many types (OSError, SyntaxError, ValueError, struct.error,
    # IndexError, DecompressionBombError...); each means the same thing here: not a usable image.
    except Exception as err:
        raise unreadable(path, f"cannot read image ({type(err).__name__}: {err})") from err


def _jpeg_is_complete(path):
    """A JPEG's main image ends with an end-of-image marker (FF D9) somewhere after its first
    start-of-scan marker (FF DA); compressed data never holds FF D9 (its FF bytes are stuffed), and an
    EXIF thumbnail's own FF D9 comes before the main scan. A cut-off file has none."""
    with open(path, "rb") as f:
        data = f.read()
    scan = data.find(b"\xff\xda")
    return scan >= 0 and data.find(b"\xff\xd9", scan) >= 0


def image_problem(path):
    """Why ``path`` is not a usable image, or None. Cheap: existence, size, extension, PIL's
    header/structure ``verify()`` (PNG: every chunk's checksum) and, for JPEG, whose ``verify()``
    reads only the header, the end-of-image marker; pixel data is not decoded (``load_image``
    reports what slips by)."""
    if not os.path.isfile(path):
        return "no such file"
    if os.path.getsize(path) == 0:
        return "empty file (0 bytes)"
    if not path.lower().endswith(IMAGE_EXTENSIONS):
        return f"not an image file name (expected one of {', '.join(IMAGE_EXTENSIONS)})"
    try:
        with Image.open(path) as img:
            image_format = img.format
            img.verify()
    except Exception as err:  # same reasoning as in load_image
        return f"not a readable image ({type(err).__name__}: {err})"
    if image_format == "JPEG" and not _jpeg_is_complete(path):
        return "truncated JPEG (no end-of-image marker after the image data)"
    return None
