"""What every preparation command shares: its command line, the group-aware train/test split,
reading the releases' CSV files, and writing the folder layout of ``datasets/folder.py``
(into a staging folder that is renamed into place only when complete, so an interrupted run
never leaves a half-written dataset behind)."""
import argparse
import csv
import gzip
import os
import os.path as osp
import random
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass

from tqdm import tqdm

from common import cli, tables
from common.errors import InputError

from ..imageio import IMAGE_EXTENSIONS


@dataclass(frozen=True)
class Sample:
    """One unit of a raw release, written by its dataset's writer into the split it falls in."""

    label: str  # what the split is stratified on: the class folder (or a raw subset, for DigestPath)
    group: str  # patient or slide id: all samples of a group land in the same split
    source: object  # what the writer reads: a path, an (array, index) pair, ...
    name: str = ""  # output file name, for writers that write one file per sample


def check_output(out_root, name):
    """Stop before any work if ``out_root/name`` already holds something."""
    target = osp.join(out_root, name)
    if (osp.isdir(target) and os.listdir(target)) or (osp.exists(target) and not osp.isdir(target)):
        raise InputError(f"{target} already exists and is not empty; choose another --root or delete it")


def require(path, what):
    """``path``, or an error saying which part of the raw release is missing."""
    if not osp.exists(path):
        raise InputError(f"{path} not found ({what}); point --raw at the folder of the unpacked release")
    return path


def image_files(folder):
    """Name-sorted image files directly in ``folder`` (hidden files left out)."""
    return sorted(e.path for e in os.scandir(folder)
                  if e.is_file() and not e.name.startswith(".") and e.name.lower().endswith(IMAGE_EXTENSIONS))


def read_csv(path, columns):
    """Rows of a CSV (or .csv.gz) file as dicts, after checking that it has ``columns``."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path} lacks column(s) {', '.join(missing)}; use the file of the original release")
        return list(reader)


def find_csv(raw, name):
    """``raw/name`` or ``raw/name.gz``, whichever the release unpacked to."""
    for candidate in (osp.join(raw, name), osp.join(raw, name + ".gz")):
        if osp.isfile(candidate):
            return candidate
    raise InputError(f"{osp.join(raw, name)}(.gz) not found; point --raw at the folder of the unpacked release")


def group_split(samples, test_fraction, seed):
    """For each sample, whether it is a test sample. Whole groups go to one side; groups are visited
    in a seeded random order and a group joins the test side when that brings the test share of its
    labels closer to ``test_fraction`` (shares are weighed per label, so rare labels count as much as
    common ones). With one sample per group this is a stratified random split."""
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"--test-fraction {test_fraction} must lie strictly between 0 and 1")
    members = defaultdict(list)
    for index, sample in enumerate(samples):
        members[sample.group].append(index)
    order = sorted(members)
    random.Random(seed).shuffle(order)
    totals = Counter(sample.label for sample in samples)
    in_test = Counter()
    is_test = [False] * len(samples)
    for group in order:
        counts = Counter(samples[i].label for i in members[group])
        gain = sum((abs(in_test[label] - test_fraction * totals[label])
                    - abs(in_test[label] + n - test_fraction * totals[label])) / totals[label]
                   for label, n in counts.items())
        if gain > 0:
            in_test.update(counts)
            for i in members[group]:
                is_test[i] = True
    return is_test


def count_images(dataset_dir):
    """``{split: {folder: number of files}}`` of a written dataset."""
    counts = {}
    for split in ("train", "test"):
        split_dir = osp.join(dataset_dir, "images", split)
        counts[split] = {e.name: len(os.listdir(e.path)) for e in os.scandir(split_dir) if e.is_dir()}
    return counts


def print_counts(dataset_dir, classes):
    counts = count_images(dataset_dir)
    rows = [[folder, counts["train"].get(folder, 0), counts["test"].get(folder, 0)] for folder in sorted(classes)]
    rows.append(["total", sum(counts["train"].values()), sum(counts["test"].values())])
    print(f"Images per class and split in {dataset_dir}:")
    print(tables.text(rows, ("class", "train", "test"), align=("left", "right", "right")))


def write_dataset(out_root, name, classes, samples, is_test, write, group_kind="group"):
    """Write ``out_root/name``: ``classnames.txt`` from ``classes`` ({folder: class name}) and every
    sample through ``write(sample, split_dir)`` (which writes under ``split_dir/<folder>/``). Checks
    that each class has images in both splits, prints the counts and returns the dataset folder."""
    check_output(out_root, name)
    if not samples:
        raise InputError(f"no {name} images found in the raw release; point --raw at the unpacked release")
    os.makedirs(out_root, exist_ok=True)
    target = osp.join(out_root, name)
    stage = tempfile.mkdtemp(prefix=f".{name}-incomplete-", dir=out_root)
    try:
        with open(osp.join(stage, "classnames.txt"), "w", encoding="utf-8") as f:
            f.writelines(f"{folder} {classname}\n" for folder, classname in classes.items())
        for split in ("train", "test"):
            for folder in classes:
                os.makedirs(osp.join(stage, "images", split, folder))
        for sample, test in zip(tqdm(samples, desc=f"Writing {name}", disable=None), is_test):
            write(sample, osp.join(stage, "images", "test" if test else "train"))
        counts = count_images(stage)
        empty = [f"{split}/{folder}" for split in counts for folder in sorted(classes) if counts[split][folder] == 0]
        if empty:
            raise InputError(f"the prepared {name} would have no images in {', '.join(empty)} (too few "
                             f"{group_kind}s of the class to fill both splits); change --test-fraction "
                             f"or check the raw data")
        check_output(out_root, name)
        if osp.isdir(target):
            os.rmdir(target)  # empty, checked just above
        os.replace(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    print_counts(target, classes)
    train = {s.group for s, test in zip(samples, is_test) if not test}
    test = {s.group for s, test in zip(samples, is_test) if test}
    print(f"{group_kind}s: train {len(train)}, test {len(test)}, in both {len(train & test)}")
    return target


def copy_file(sample, split_dir):
    """Writer for samples whose ``source`` is a file to copy as ``split_dir/<label>/<name>``."""
    shutil.copyfile(sample.source, osp.join(split_dir, sample.label, sample.name))


def command(description, test_fraction=None):
    """The shared command line: ``--raw DIR --root ROOT`` (``--out ROOT`` as before) and, for datasets
    split here, ``--seed`` and ``--test-fraction`` (default ``test_fraction``)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=cli.HelpFormatter)
    parser.add_argument("--raw", required=True, help="folder of the unpacked raw release")
    cli.add_root(parser, required=True, help="DATASET.ROOT: the dataset is written to ROOT/<name>",
                 aliases=("--out",) + cli.ROOT_ALIASES, dest="out")
    if test_fraction is not None:
        parser.add_argument("--seed", type=int, default=0, help="seed of the train/test split (default 0)")
        parser.add_argument("--test-fraction", type=float, default=test_fraction,
                            help=f"share of each class (of each raw subset, for DigestPath) that goes to the "
                                 f"test split (default {test_fraction})")
    return parser


def main(prepare, parser):
    """The command's ``main(argv)``: parse the command line and call ``prepare(**options)``; run it
    with ``common.cli`` (an ``InputError`` ends the command with its one line and exit code 2)."""
    return lambda argv=None: prepare(**vars(parser.parse_args(argv)))

