"""A run's configuration, checked before any model or image is loaded.

``train.py`` calls ``validate_cfg`` right after the trainer and dataset names are known to exist, so
a typo costs a second, not the minutes of loading a Med-FM and a dataset. Only the config and cheap
metadata are read:

- the trainer's own config checks (``check_cfg``: precisions, prompt options, BAPLe's noise budget,
  step and options, poison percentage and count ranges, the paths the run reads from);
- the backbone name, and the input size its weights declare in their config file (the weights are
  not read; missing weights are reported here, with how to provide them);
- the trigger, built exactly as the trainer builds it (a few small tensors): the attack name,
  patch type, position and size against the image, trigger image files, WaNet and FIBA parameters;
- the dataset's ``classnames.txt`` and folder listing (no image is opened): the layout, the number
  of classes for ``BACKDOOR.TARGET_CLASS``, images per class for ``DATASET.NUM_SHOTS``, and the
  training set size for the number of poisoned samples.

Each check is the function the trainer calls again while it builds, so a library user who calls
``build_trainer`` directly gets the same one-line errors, only later.
"""
from clip_models import backbone_class
from dassl_compat import DATASET_REGISTRY, TRAINER_REGISTRY
from datasets.folder import FolderDataset

from .base import BackdoorTrainer, check_input_size
from .poisoning import check_target_class


def validate_cfg(cfg):
    """Raise ``InputError`` (one line: key, bad value, valid range or choices, fix) for the first bad
    setting of ``cfg``; return None when the run can start."""
    trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if not issubclass(trainer, BackdoorTrainer):  # another engine's trainer checks itself when built
        return
    trainer.check_cfg(cfg)
    backbone = backbone_class(cfg.MODEL.BACKBONE.NAME)
    check_input_size(cfg, backbone.name, backbone.declared_image_size(cfg.MODEL.BACKBONE.WEIGHTS))
    trigger = trainer.build_trigger(cfg, cfg.INPUT.SIZE[0])

    dataset = DATASET_REGISTRY.get(cfg.DATASET.NAME)
    if not issubclass(dataset, FolderDataset):  # no cheap metadata: checked when the dataset is built
        return
    sizes = dataset.train_class_sizes(cfg)
    check_target_class(cfg.BACKDOOR.TARGET_CLASS, len(sizes), cfg.DATASET.NAME)
    if trigger is not None:
        labels = [label for label, size in enumerate(sizes.values()) for _ in range(size)]
        trainer.make_poison_plan(cfg, labels, trigger)
