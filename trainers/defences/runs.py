"""Rebuilding a finished run for defence evaluation, and the defender's trusted clean images.

A run is rebuilt from its ``results.json`` config (a full config dump) exactly as ``train.py
--eval-only`` does: seed, ``build_trainer``, ``load_model(run_dir)``. Only ``OUTPUT_DIR`` changes (to
the defence folder), so nothing in the run folder is written. A run without a trigger (clean CoOp,
zero-shot) can be tested with another run's trigger (``trigger_from``), its target class with it.
"""
import os
import os.path as osp
from contextlib import redirect_stdout

import torch
from torch.utils.data import DataLoader
from yacs.config import CfgNode

import datasets  # noqa: F401  (registers the datasets)
from configs.defaults import get_cfg, upgraded
from configs.errors import InputError
from dassl_compat import DATASET_REGISTRY, build_trainer, build_transform, read_json, set_random_seed
from datasets.wrapper import ImageDataset

from ..base import run_results_file
from ..validation import validate_cfg


def read_results(run_dir):
    return read_json(run_results_file(run_dir))


def run_cfg(run_dir, output_dir, trigger_from="", data_root=""):
    """The run's config with ``OUTPUT_DIR`` redirected; ``trigger_from`` (a finished run with a trigger)
    is used when the run has none of its own; ``data_root`` replaces ``DATASET.ROOT`` (moved data)."""
    results = read_results(run_dir)
    cfg = get_cfg()
    cfg.set_new_allowed(True)  # a config dumped by another engine or version may hold keys unknown here
    cfg.merge_from_other_cfg(CfgNode(upgraded(results["config"])))
    cfg.set_new_allowed(False)
    cfg.OUTPUT_DIR = output_dir
    if results["backdoor"] is None and trigger_from:
        trigger_results = read_results(trigger_from)
        if trigger_results["backdoor"] is None:
            raise InputError(f"--trigger-from {trigger_from}: that run has no trigger either; give a BAPLe or "
                             "poisoned-baseline run folder")
        cfg.BACKDOOR.EVAL_TRIGGER = osp.abspath(trigger_from)
        cfg.BACKDOOR.TARGET_CLASS = trigger_results["target_class"]
    if data_root:
        cfg.DATASET.ROOT = data_root
    return cfg


def build(cfg, log):
    """``build_trainer`` after the config checks and seeding, as ``train.py`` does; its console output
    goes to ``log``."""
    validate_cfg(cfg)
    with redirect_stdout(log):
        set_random_seed(cfg.SEED)
        return build_trainer(cfg)


def has_checkpoints(trainer, run_dir):
    """Whether every model the trainer registers has a checkpoint folder in ``run_dir`` (an eval-only
    folder, e.g. a clean model tested under another run's trigger, has none)."""
    return all(osp.isdir(osp.join(run_dir, name)) for name in trainer.get_model_names())


def load_run(run_dir, output_dir, log, trigger_from="", data_root=""):
    """The run's trainer with its trained weights loaded (see the module docstring)."""
    cfg = run_cfg(run_dir, output_dir, trigger_from, data_root)
    trainer = build(cfg, log)
    if not has_checkpoints(trainer, run_dir):
        raise InputError(f"{run_dir} holds no checkpoints of {', '.join(trainer.get_model_names())} (an eval-only "
                         "folder?); evaluate the folder the model was trained in, with --trigger-from for a trigger")
    with redirect_stdout(log):
        trainer.load_model(run_dir)
    return trainer


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
