"""Shared by the dataset tests: a config for a folder dataset and small image writers."""
import os
import os.path as osp

import numpy as np
from PIL import Image

from configs.defaults import get_cfg


def dataset_cfg(root, name, num_shots=-1, seed=1, bad_files="error"):
    cfg = get_cfg()
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NAME = name
    cfg.DATASET.NUM_SHOTS = num_shots
    cfg.DATASET.BAD_FILES = bad_files
    cfg.SEED = seed
    cfg.USE_CUDA = False
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def write_png(path, value=128, size=8, mode="RGB"):
    os.makedirs(osp.dirname(path), exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    pixels = np.full((size, size, channels), value, dtype=np.uint8)
    Image.fromarray(pixels[..., 0] if channels == 1 else pixels).save(path)
    return path


def listing(dataset_dir):
    """{split: {class folder: sorted file names}} of a written dataset."""
    out = {}
    for split in ("train", "test"):
        split_dir = osp.join(dataset_dir, "images", split)
        out[split] = {folder: sorted(os.listdir(osp.join(split_dir, folder)))
                      for folder in sorted(os.listdir(split_dir))}
    return out
