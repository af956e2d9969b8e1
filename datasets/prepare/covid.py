"""Prepare COVID from the COVID-19 Radiography Database (Kaggle, tawsifurrahman/covid19-radiography-database).

Raw layout: ``COVID-19_Radiography_Dataset/{COVID,Normal,Lung_Opacity,Viral Pneumonia}/images/*.png``
(older releases keep the PNGs directly in the class folder); ``--raw`` is that folder or its
parent. Only COVID and Normal are used, as in the paper. The database gives no patient ids,
so the split is a per-class stratified random one over images (default 50/50).
"""
import os.path as osp

from common import cli
from common.errors import InputError

from ..covid import Covid
from . import common

RELEASE_DIR = "COVID-19_Radiography_Dataset"
RELEASE_CLASSES = {"covid": "COVID", "normal": "Normal"}  # our class folder -> release folder


def find_release(raw):
    for base in (raw, osp.join(raw, RELEASE_DIR)):
        if all(osp.isdir(osp.join(base, release)) for release in RELEASE_CLASSES.values()):
            return base
    raise InputError(f"{raw} holds neither COVID/ and Normal/ nor {RELEASE_DIR}/ with them; point --raw at the "
                     f"unpacked COVID-19 Radiography Database")


def prepare(raw, out, seed=0, test_fraction=0.5):
    common.require(raw, "the raw release folder")
    common.check_output(out, Covid.dataset_dir)
    base = find_release(raw)
    samples = []
    for folder, release in RELEASE_CLASSES.items():
        class_dir = osp.join(base, release)
        image_dir = osp.join(class_dir, "images") if osp.isdir(osp.join(class_dir, "images")) else class_dir
        samples += [common.Sample(label=folder, group=path, source=path, name=osp.basename(path))
                    for path in common.image_files(image_dir)]
    is_test = common.group_split(samples, test_fraction, seed)
    return common.write_dataset(out, Covid.dataset_dir, Covid.classes, samples, is_test, common.copy_file,
                                group_kind="image")


main = common.main(prepare, common.command(__doc__, test_fraction=0.5))


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
