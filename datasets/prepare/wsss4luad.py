"""Prepare WSSS4LUAD from the training part of its public release (WSSS4LUAD challenge, ``1.training``).

Raw layout (``--raw``): ``1.training/*.png`` (some copies of the release nest it as
``1.training/1.training/*.png``): H&E patches cut from lung adenocarcinoma slides (GDPH and TCGA), of
varied size, each named with its patch-level labels as
``<slide>-<x>-<y>-[<tumor>, <stroma>, <normal>].png``, e.g. ``436219-7159-48057-[1, 0, 0].png``
(1 where the patch shows tumour epithelium, tumour-associated stroma or normal tissue; a patch may
show several). The part before the first ``-`` is taken as the slide id.

Classes (the reference BAPLe code's, which uses PLIP's binary WSSS4LUAD): ``tumor`` when the tumour
flag is 1, ``normal`` otherwise (stroma or normal tissue without tumour epithelium); every patch is
kept. The split is over slides, stratified by class (default 70 % train / 30 % test); the reference
split the patches at random (70/30, seed 1), so patches of one slide could land in both splits.
Patches are copied unchanged (the transforms resize them); the reference resized them to 224 px.
"""
import os.path as osp
import re

from common import cli
from common.errors import InputError

from ..wsss4luad import WSSS4LUAD
from . import common

RELEASE_FOLDER = "1.training"
# <slide>-<x>-<y>-[<tumor>, <stroma>, <normal>].png
PATCH_NAME = re.compile(r"^(?P<slide>[^-]+)-.*\[\s*(?P<tumor>[01])\s*,\s*[01]\s*,\s*[01]\s*\]\.png$", re.IGNORECASE)


def release_folder(raw):
    """The folder holding the patches: ``raw/1.training`` or the nested ``raw/1.training/1.training``."""
    folder = common.require(osp.join(raw, RELEASE_FOLDER), "the training patches of the release")
    nested = osp.join(folder, RELEASE_FOLDER)
    return nested if osp.isdir(nested) else folder


def sample(path):
    """The ``common.Sample`` of one patch file, or an InputError naming a file not named as the release names them."""
    name = osp.basename(path)
    match = PATCH_NAME.match(name)
    if match is None:
        raise InputError(f"{path}: not a WSSS4LUAD patch name ('<slide>-<x>-<y>-[<tumor>, <stroma>, <normal>].png'); "
                         f"point --raw at the unpacked release or remove the file")
    label = "tumor" if match["tumor"] == "1" else "normal"
    return common.Sample(label=label, group=match["slide"], source=path, name=name)


def prepare(raw, out, seed=0, test_fraction=0.3):
    common.require(raw, "the raw release folder")
    common.check_output(out, WSSS4LUAD.dataset_dir)
    samples = [sample(path) for path in common.image_files(release_folder(raw))]
    is_test = common.group_split(samples, test_fraction, seed)
    return common.write_dataset(out, WSSS4LUAD.dataset_dir, WSSS4LUAD.classes, samples, is_test, common.copy_file,
                                group_kind="slide")


main = common.main(prepare, common.command(__doc__, test_fraction=0.3))


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
