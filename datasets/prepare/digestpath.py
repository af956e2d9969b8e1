"""Prepare DigestPath from the DigestPath 2019 colonoscopy tissue segmentation release.

Raw layout (``--raw``): ``tissue-train-neg/*.jpg`` (benign tissue images) and
``tissue-train-pos-v1/<name>.jpg`` with ``<name>_mask.jpg`` (malignant regions white). Each
image is a tissue region cut from a whole slide; its name starts with the slide id and the scan
time, ``<slide>_<YYYY-MM-DD hh_mm_ss>-lv1-<x>-<y>-<w>-<h>.jpg``, so several images can share a
slide. ``--slide-regex`` (first group = slide id) reads the slide id; a name it does not match is
its own slide. The split is drawn over slides (stratified by neg/pos source, default 70 % train /
30 % test), so no slide has patches in both splits; the reference split patches at random.

Patches (the paper's procedure, after PLIP): each image is reduced by each factor of
``--downsamples`` (box average), cut into ``--crop-size`` squares overlapping by 10 %, and a square
is kept when at least half of it is tissue (a pixel is background when all three channels are
>= 200). From pos images a square is malignant when at least half of it lies in the mask (mask
pixels > 127 count) and benign when none does; squares in between are left out. Every kept
square of a neg image is benign.
"""
import os.path as osp
import re

import numpy as np
from PIL import Image

from common import cli
from common.errors import InputError

from ..digestpath import DigestPath
from . import common

SUBSETS = {"neg": "tissue-train-neg", "pos": "tissue-train-pos-v1"}
MASK_SUFFIX = "_mask"
SLIDE_REGEX = r"^(.+?)_\d{4}-\d{2}-\d{2}"
DOWNSAMPLES = (2, 4, 8, 16, 32)
CROP_SIZE = 224
OVERLAP = 0.1
BACKGROUND_LEVEL = 200
MIN_TISSUE = 0.5
MIN_TUMOUR = 0.5


def window_means(values, size, step):
    """Mean of ``values`` (2-D) over each ``size`` square whose corner lies on the ``step`` grid,
    as {(x, y): mean}, from a summed-area table."""
    table = np.pad(values.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    height, width = values.shape
    means = {}
    for y in range(0, height - size + 1, step):
        for x in range(0, width - size + 1, step):
            total = table[y + size, x + size] - table[y, x + size] - table[y + size, x] + table[y, x]
            means[(x, y)] = total / (size * size)
    return means


def patches(image, mask, downsamples, crop_size):
    """(class folder, downsample, x, y, RGB array) of each kept square of one image (rules in the module doc);
    ``mask`` is None for a neg image."""
    step = max(1, int(crop_size * (1 - OVERLAP)))
    for factor in downsamples:
        if min(image.size) // factor < crop_size:
            continue
        rgb = np.asarray(image.reduce(factor))
        tissue = window_means(~(rgb >= BACKGROUND_LEVEL).all(axis=-1), crop_size, step)
        tumour = window_means(np.asarray(mask.reduce(factor)) / 255.0, crop_size, step) if mask is not None else None
        for (x, y), share in tissue.items():
            if share < MIN_TISSUE:
                continue
            if tumour is None or tumour[(x, y)] == 0.0:
                folder = "benign"
            elif tumour[(x, y)] >= MIN_TUMOUR:
                folder = "malignant"
            else:
                continue
            yield folder, factor, x, y, rgb[y:y + crop_size, x:x + crop_size]


def open_image(path, mode):
    try:
        with Image.open(path) as img:
            return img.convert(mode)
    except Exception as err:  # any decoder failure means a damaged download
        raise InputError(f"{path}: cannot read image ({type(err).__name__}: {err}); re-extract the release") from err


def patch_writer(downsamples, crop_size):
    def write(sample, split_dir):
        image_path, mask_path = sample.source
        image = open_image(image_path, "RGB")
        mask = None
        if mask_path is not None:
            mask = Image.fromarray(((np.asarray(open_image(mask_path, "L")) > 127) * 255).astype(np.uint8))
            if mask.size != image.size:
                raise InputError(f"{mask_path} is {mask.size[0]}x{mask.size[1]} px but its image is "
                                 f"{image.size[0]}x{image.size[1]}; re-extract the release")
        stem = osp.splitext(osp.basename(image_path))[0]
        for folder, factor, x, y, pixels in patches(image, mask, downsamples, crop_size):
            Image.fromarray(pixels).save(osp.join(split_dir, folder, f"{stem}_ds{factor}_x{x}_y{y}.png"))
    return write


def prepare(raw, out, seed=0, test_fraction=0.3, downsamples=DOWNSAMPLES, crop_size=CROP_SIZE, slide_regex=SLIDE_REGEX):
    common.require(raw, "the raw release folder")
    common.check_output(out, DigestPath.dataset_dir)
    try:
        pattern = re.compile(slide_regex)
    except re.error as err:
        raise InputError(f"--slide-regex {slide_regex!r} is not a regular expression ({err}); fix or drop it") from err
    if pattern.groups < 1:
        raise InputError(f"--slide-regex {slide_regex!r} has no group; put the slide id part in parentheses")
    samples, unmatched = [], 0
    for subset, folder in SUBSETS.items():
        subset_dir = common.require(osp.join(raw, folder), f"the {subset} tissue images")
        for path in common.image_files(subset_dir):
            stem, ext = osp.splitext(osp.basename(path))
            if stem.endswith(MASK_SUFFIX):
                continue
            mask = None
            if subset == "pos":
                mask = common.require(osp.join(subset_dir, stem + MASK_SUFFIX + ext), f"the tumour mask of {stem}")
            match = pattern.match(stem)
            unmatched += match is None
            samples.append(common.Sample(label=subset, group=match.group(1) if match else stem, source=(path, mask)))
    slides = len({s.group for s in samples})
    print(f"{len(samples)} tissue images from {slides} slides "
          f"({unmatched} name(s) without a slide id, each taken as its own slide)")
    is_test = common.group_split(samples, test_fraction, seed)
    return common.write_dataset(out, DigestPath.dataset_dir, DigestPath.classes, samples, is_test,
                                patch_writer(tuple(downsamples), crop_size), group_kind="slide")


def command():
    parser = common.command(__doc__, test_fraction=0.3)
    parser.add_argument("--downsamples", type=int, nargs="+", default=list(DOWNSAMPLES),
                        help=f"reduction factors the patches are cut at (default {' '.join(map(str, DOWNSAMPLES))})")
    parser.add_argument("--crop-size", type=int, default=CROP_SIZE, help=f"patch side in pixels (default {CROP_SIZE})")
    parser.add_argument("--slide-regex", default=SLIDE_REGEX,
                        help="regular expression whose first group is the slide id of an image name "
                        f"(default {SLIDE_REGEX!r})")
    return parser


main = common.main(prepare, command())


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
