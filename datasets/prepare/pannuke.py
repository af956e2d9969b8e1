"""Prepare PanNuke from its three folds (Warwick TIA, fold_1.zip .. fold_3.zip).

Raw layout (``--raw``): ``Fold N/images/foldN/images.npy`` ([n, 256, 256, 3] RGB patches, 0..255
stored as floats), ``Fold N/images/foldN/types.npy`` ([n] tissue names) and
``Fold N/masks/foldN/masks.npy`` ([n, 256, 256, 6] instance maps: channels neoplastic,
inflammatory, connective/soft tissue, dead, epithelial, then background; each nucleus carries
its own non-zero id in its channel). That channel order is the one the PanNuke release notes
and PLIP's preparation code state. Folds that are present are merged (the paper uses all three).

Labels (the paper's rule, from PLIP): a patch is malignant when it has at least 10 neoplastic
nuclei and they are more than 30 % of its nuclei, benign when it has no neoplastic nucleus;
other patches, and patches without any nucleus, are left out. Nuclei are counted over the five
cell channels (the reference also counted the background channel as one cell). The release
names no patients or slides, so the split is a stratified random one over patches (default
30 % train / 70 % test, as in the paper). Patches are written as 256 px PNGs.
"""
import glob
import os.path as osp
import re

import numpy as np
from PIL import Image

from common import cli
from common.errors import InputError

from ..pannuke import PanNuke
from . import common

CELL_CHANNELS = 5  # neoplastic, inflammatory, connective, dead, epithelial; channel 5 is background
NEOPLASTIC = 0
MIN_NEOPLASTIC = 10
MIN_NEOPLASTIC_SHARE = 0.3


def nuclei_counts(mask):
    """Number of nuclei (distinct non-zero ids) in each cell channel of one [256, 256, 6] mask."""
    return [int(np.count_nonzero(np.unique(mask[..., channel]))) for channel in range(CELL_CHANNELS)]


def patch_class(counts):
    total = sum(counts)
    neoplastic = counts[NEOPLASTIC]
    if total == 0:
        return None
    if neoplastic >= MIN_NEOPLASTIC and neoplastic / total > MIN_NEOPLASTIC_SHARE:
        return "malignant"
    return "benign" if neoplastic == 0 else None


def load_fold(raw, fold):
    """Memory-mapped images, masks and types of one fold, after checking their shapes agree."""
    base = osp.join(raw, f"Fold {fold}")
    paths = {"images": osp.join(base, "images", f"fold{fold}", "images.npy"),
             "types": osp.join(base, "images", f"fold{fold}", "types.npy"),
             "masks": osp.join(base, "masks", f"fold{fold}", "masks.npy")}
    arrays = {}
    for key, path in paths.items():
        common.require(path, f"{key} of fold {fold}")
        try:
            arrays[key] = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as err:
            raise InputError(f"{path}: cannot load it without pickle ({err}); "
                             f"use the file of the original release") from err
    n = len(arrays["types"])
    expected = {"images": (n, 256, 256, 3), "masks": (n, 256, 256, 6), "types": (n,)}
    for key, shape in expected.items():
        if arrays[key].shape != shape:
            raise InputError(f"{paths[key]} has shape {arrays[key].shape}, expected {shape} for fold {fold}; "
                             f"use the files of the original release")
    return arrays


def write_png(sample, split_dir):
    images, index = sample.source
    pixels = np.clip(np.rint(images[index]), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(osp.join(split_dir, sample.label, sample.name))


def prepare(raw, out, seed=0, test_fraction=0.7):
    common.require(raw, "the raw release folder")
    common.check_output(out, PanNuke.dataset_dir)
    folds = sorted(int(m.group(1)) for d in glob.glob(osp.join(raw, "Fold *"))
                   if (m := re.fullmatch(r"Fold (\d+)", osp.basename(d))))
    if not folds:
        raise InputError(f"{raw} holds no 'Fold N' folders; point --raw at the folder where "
                         f"fold_1.zip .. fold_3.zip were unpacked")
    samples = []
    for fold in folds:
        arrays = load_fold(raw, fold)
        for index in range(len(arrays["types"])):
            label = patch_class(nuclei_counts(arrays["masks"][index]))
            if label is None:
                continue
            tissue = re.sub(r"[^a-z0-9]+", "-", str(arrays["types"][index]).lower()).strip("-")
            key = f"fold{fold}_{index:04d}"
            samples.append(common.Sample(label=label, group=key, source=(arrays["images"], index),
                                         name=f"{key}_{tissue}.png"))
    print(f"Folds {', '.join(map(str, folds))}: {len(samples)} patches labelled benign or malignant")
    is_test = common.group_split(samples, test_fraction, seed)
    return common.write_dataset(out, PanNuke.dataset_dir, PanNuke.classes, samples, is_test, write_png,
                                group_kind="patch")


main = common.main(prepare, common.command(__doc__, test_fraction=0.7))


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
