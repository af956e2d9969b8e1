"""What the defences read besides the run itself: the overrides a defended run is rebuilt with
(``trainers.run.Run.build_trainer``), the defender's trusted clean images and a test subset.

A run without a trigger (clean CoOp, zero-shot) can be tested with another run's trigger
(``trigger_from``), its target class with it.
"""
import os
import os.path as osp
from contextlib import redirect_stdout

import torch
from torch.utils.data import DataLoader

import datasets  # noqa: F401  (registers the datasets)
from common.errors import InputError
from dassl_compat import DATASET_REGISTRY, build_transform
from datasets.wrapper import ImageDataset

from ..run import Run


def rebuild_opts(run, trigger_from="", data_root=""):
    """``Run.build_trainer`` overrides of a defended run: ``trigger_from`` (a finished run with a
    trigger) lends its trigger and target class to a run without one; ``data_root`` replaces
    ``DATASET.ROOT`` (moved data)."""
    opts = []
    if run.results["backdoor"] is None and trigger_from:
        lender = Run.open(trigger_from, what="--trigger-from")
        if lender.results["backdoor"] is None:
            raise InputError(f"--trigger-from {trigger_from}: that run has no trigger either; give a BAPLe or "
                             "poisoned-baseline run folder")
        opts += ["BACKDOOR.EVAL_TRIGGER", lender.path, "BACKDOOR.TARGET_CLASS", lender.results["target_class"]]
    if data_root:
        opts += ["DATASET.ROOT", data_root]
    return opts


def modality(cfg):
    return getattr(DATASET_REGISTRY.get(cfg.DATASET.NAME), "modality", "")


def trusted_images(cfg, shots, seed, log):
    """The defender's trusted clean set: ``shots`` training images per class drawn with ``seed`` (the
    dataset's own seeded few-shot sampler), through the test transform. Returns (images, labels)."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASET.NUM_SHOTS, cfg.SEED = shots, seed
    with redirect_stdout(log):
        items = DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg).train_x
    return _stacked(ImageDataset(cfg, items, transform=build_transform(cfg, is_train=False)),
                    cfg.DATALOADER.TEST.BATCH_SIZE)


def test_subset(trainer, count, seed):
    """(images, labels) of ``count`` test images drawn with ``seed`` (all when ``count`` >= the test set)."""
    dataset = trainer.test_loader.dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count].tolist()
    return _stacked(torch.utils.data.Subset(dataset, sorted(order)), trainer.cfg.DATALOADER.TEST.BATCH_SIZE)


def _stacked(dataset, batch_size):
    """(images, labels) of a whole dataset of ``{"img", "label"}`` items, in order."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    images, labels = zip(*((batch["img"], batch["label"]) for batch in loader))
    return torch.cat(images), torch.cat(labels)


def open_log(path):
    os.makedirs(osp.dirname(path), exist_ok=True)
    return open(path, "a", encoding="utf-8")
