"""Prepare Kather from the NCT-CRC-HE-100K and CRC-VAL-HE-7K releases (Zenodo record 1214456).

Raw layout (``--raw``): ``NCT-CRC-HE-100K/<CLASS>/*.tif`` and ``CRC-VAL-HE-7K/<CLASS>/*.tif`` with
the nine class folders ADI, BACK, DEB, LYM, MUC, MUS, NORM, STR, TUM (224 x 224 px tiles at
0.5 um/px). The releases fix the split: NCT-CRC-HE-100K is the train split, CRC-VAL-HE-7K (tiles
from other patients) the test split. Tiles are copied unchanged.
"""
import os.path as osp

from common import cli

from ..kather import Kather
from . import common

RELEASE_SPLITS = {"train": "NCT-CRC-HE-100K", "test": "CRC-VAL-HE-7K"}


def prepare(raw, out):
    common.require(raw, "the raw release folder")
    common.check_output(out, Kather.dataset_dir)
    samples, is_test = [], []
    for split, release in RELEASE_SPLITS.items():
        for folder in Kather.classes:
            class_dir = common.require(osp.join(raw, release, folder), f"class {folder} of {release}")
            paths = common.image_files(class_dir)
            # Tile names are unique within a release; the release prefix keeps them unique across both.
            samples += [common.Sample(label=folder, group=f"{release}/{osp.basename(path)}", source=path,
                                      name=osp.basename(path)) for path in paths]
            is_test += [split == "test"] * len(paths)
    return common.write_dataset(out, Kather.dataset_dir, Kather.classes, samples, is_test, common.copy_file,
                                group_kind="tile")


main = common.main(prepare, common.command(__doc__))


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
