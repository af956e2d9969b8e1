"""Synthetic stand-ins of the seven datasets, in their folder layout and with their classes, for tests
and the offline demo:

    python -m datasets.synthetic --name kather --root ROOT [--train-per-class 32 --test-per-class 20 --size 224 --seed 0]

or ``generate("kather", ROOT, ...)``. The dataset classes read the result like a prepared dataset.

Each class has its own look, learnable but not trivial: a stripe texture whose orientation and
frequency depend on the class, a class-dependent brightness (X-ray) or stain balance (histology)
and a class shape (disc, square or ring). Every image draws its own jitter of those, its own
stripe phase, shape position and size, and pixel noise, from a generator seeded by
(seed, split, class, index), so a dataset is the same for the same arguments. X-ray datasets are
8-bit greyscale; histology datasets are RGB made from haematoxylin and eosin optical densities
(Ruifrok and Johnston's stain vectors), with class-dependent nucleus counts and sizes.
"""
import argparse
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw

from common import cli
from common.errors import InputError

from dassl_compat import DATASET_REGISTRY

from .folder import FolderDataset
from .prepare import common
SPLITS = ("train", "test")
# Optical density per unit of stain (RGB), rows haematoxylin and eosin (Ruifrok and Johnston).
STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]], dtype=np.float32)


def _noise(rng, size, channels, amplitude):
    """Uniform grain in [-amplitude, amplitude] of 2 x 2 pixel cells: cheap to draw, and PNG compresses
    it about twice as well as per-pixel noise, which keeps writing fast."""
    cells = (rng.random(((size + 1) // 2, (size + 1) // 2, channels), dtype=np.float32) - 0.5) * (2 * amplitude)
    grain = cells.repeat(2, axis=0).repeat(2, axis=1)[:size, :size]
    return grain[..., 0] if channels == 1 else grain


def _shape_mask(rng, kind, size):
    """A 0/1 float mask of one shape (0 disc, 1 square, 2 ring) at a random place and size."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = rng.uniform(0.3, 0.7, size=2) * size
    r = rng.uniform(0.12, 0.2) * size
    box = (cx - r, cy - r, cx + r, cy + r)
    if kind == 0:
        draw.ellipse(box, fill=255)
    elif kind == 1:
        draw.rectangle(box, fill=255)
    else:
        draw.ellipse(box, outline=255, width=max(2, int(r / 3)))
    return np.asarray(canvas, dtype=np.float32) / 255.0


def _stripes(rng, label, num_classes, size):
    """Class-oriented sine stripes in [-1, 1] with a per-image jitter and phase."""
    coords = np.arange(size, dtype=np.float32) / size
    angle = np.pi * label / num_classes + rng.normal(0.0, 0.05)
    frequency = (4 + 3 * (label % 3)) * rng.uniform(0.9, 1.1)
    wave = 2 * np.pi * frequency
    ramp = wave * np.cos(angle) * coords[None, :] + wave * np.sin(angle) * coords[:, None]
    return np.sin(ramp + np.float32(rng.uniform(0, 2 * np.pi)))


def render_xray(rng, label, num_classes, size):
    level = 0.3 + 0.35 * label / max(num_classes - 1, 1) + rng.normal(0.0, 0.03)
    grey = (level + 0.12 * _stripes(rng, label, num_classes, size)
            + 0.25 * _shape_mask(rng, label % 3, size) + _noise(rng, size, 1, 0.05))
    return Image.fromarray(np.rint(np.clip(grey, 0, 1) * 255).astype(np.uint8))


def render_histology(rng, label, num_classes, size):
    level = label / max(num_classes - 1, 1)
    nuclei = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(nuclei)
    radius = size / 224 * (3 + 2 * (label % 2))
    for cx, cy in rng.uniform(0, size, size=(8 + 6 * (label % 4) + rng.integers(0, 4), 2)):
        r = radius * rng.uniform(0.7, 1.3)
        draw.ellipse((cx - r, cy - r * 0.8, cx + r, cy + r * 0.8), fill=255)
    eosin = 0.25 + 0.45 * level + 0.12 * (_stripes(rng, label, num_classes, size) + 1) + rng.normal(0.0, 0.02)
    haematoxylin = (0.15 + 0.9 * np.asarray(nuclei, dtype=np.float32) / 255.0
                    + 0.35 * _shape_mask(rng, label % 3, size) + 0.2 * (1 - level))
    density = np.stack([haematoxylin, eosin], axis=-1) @ STAINS
    rgb = np.exp(-density) + _noise(rng, size, 3, 0.04)
    return Image.fromarray(np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8))


def folder_datasets():
    """{folder name: class} of every registered folder dataset (the project's six, and any added), in
    the paper's order (``report_order``)."""
    classes = [DATASET_REGISTRY.get(name) for name in DATASET_REGISTRY.registered_names()]
    classes = [cls for cls in classes if isinstance(cls, type) and issubclass(cls, FolderDataset)]
    return {cls.dataset_dir: cls for cls in sorted(classes, key=lambda cls: (cls.report_order, cls.__name__))}


def generate(name, out_root, train_per_class=32, test_per_class=20, size=224, seed=0):
    """Write the synthetic ``out_root/name`` and return its folder (refuses a non-empty one)."""
    datasets = folder_datasets()
    if name not in datasets:
        raise InputError(f"--name {name!r} is not a dataset here; choose one of {', '.join(datasets)}")
    if min(train_per_class, test_per_class) < 1 or size < 8:
        raise InputError(f"need at least 1 image per class and split and a size of 8 px or more, got "
                         f"{train_per_class}/{test_per_class} images and {size} px")
    dataset = datasets[name]
    render = render_xray if dataset.modality == "xray" else render_histology
    folders = sorted(dataset.classes)
    samples, is_test = [], []
    for split_index, (split, count) in enumerate(zip(SPLITS, (train_per_class, test_per_class))):
        for label, folder in enumerate(folders):
            for index in range(count):
                samples.append(common.Sample(label=folder, group=f"{split}/{folder}/{index}",
                                             source=(split_index, label, index), name=f"{folder}_{index:04d}.png"))
                is_test.append(split == "test")

    def write(sample, split_dir):
        split_index, label, index = sample.source
        rng = np.random.default_rng([seed, split_index, label, index])
        render(rng, label, len(folders), size).save(osp.join(split_dir, sample.label, sample.name), compress_level=1)

    return common.write_dataset(out_root, name, dataset.classes, samples, is_test, write, group_kind="image")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=cli.HelpFormatter)
    parser.add_argument("--name", required=True, choices=sorted(folder_datasets()), help="dataset folder name")
    cli.add_root(parser, required=True, help="DATASET.ROOT: the dataset is written to ROOT/<name>",
                 aliases=("--out",) + cli.ROOT_ALIASES, dest="out")
    parser.add_argument("--train-per-class", type=int, default=32)
    parser.add_argument("--test-per-class", type=int, default=20)
    parser.add_argument("--size", type=int, default=224, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    common.main(lambda out, **options: generate(out_root=out, **options), parser)(argv)



run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
