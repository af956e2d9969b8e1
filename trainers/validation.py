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

Before these, ``check_keys_read``: a key under ``BACKDOOR`` or ``TRAINER.<node>`` set away from its
default that the chosen trainer does not read (its ``CFG_KEYS``), e.g. ``BACKDOOR.ATTACK`` with BAPLe
(whose trigger is its own) or ``TRAINER.COOP.*`` with FineTune, is refused rather than ignored.

Each check is the function the trainer calls again while it builds, so a library user who calls
``build_trainer`` directly gets the same one-line errors, only later.
"""
from clip_models import backbone_class
from clip_models.registry import backbone_options
from configs.defaults import flat_keys, profile_defaults
from common.errors import InputError
from dassl_compat import DATASET_REGISTRY, TRAINER_REGISTRY
from datasets.folder import FolderDataset

from .attacks import available_attacks
from .base import BackdoorTrainer, check_input_size
from .poisoning import check_target_class


def validate_cfg(cfg):
    """Raise ``InputError`` (one line: key, bad value, valid range or choices, fix) for the first bad
    setting of ``cfg``; return None when the run can start."""
    trainer = TRAINER_REGISTRY.get(cfg.TRAINER.NAME)
    if not issubclass(trainer, BackdoorTrainer):  # another engine's trainer checks itself when built
        return
    check_keys_read(cfg)
    trainer.check_cfg(cfg)
    backbone = backbone_class(cfg.MODEL.BACKBONE.NAME)
    backbone_options(backbone.name, cfg.MODEL.BACKBONE)  # the model's own settings (MODEL.BACKBONE.*)
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


def keys_read(trainer):
    """The key prefixes ``trainer`` reads under BACKDOOR and TRAINER.<node>: its ``CFG_KEYS``, and with
    BACKDOOR.ATTACK every registered attack's own node."""
    keys = set(trainer.CFG_KEYS)
    if "BACKDOOR.ATTACK" in keys:
        keys.update(f"BACKDOOR.{name.upper()}" for name in available_attacks() if name != "none")
    return keys


def reads_key(trainer, key):
    """Whether ``trainer`` (a trainer class) reads ``key``; keys outside BACKDOOR and TRAINER.<node>
    (Dassl's, e.g. OPTIM.LR) are read by every trainer as far as this check goes."""
    if not (key.startswith("BACKDOOR.") or (key.startswith("TRAINER.") and key.count(".") >= 2)):
        return True
    return not issubclass(trainer, BackdoorTrainer) or any(key == k or key.startswith(k + ".")
                                                           for k in keys_read(trainer))


def unread_keys(cfg, trainer):
    """{key: value} of the keys under BACKDOOR and TRAINER.<node> that ``cfg`` sets away from their
    defaults (with the run's profile, ``PROFILE``, merged: see configs/defaults.py) and ``trainer`` does not
    read (keys the defaults lack, from another engine, are skipped)."""
    defaults = profile_defaults(cfg.PROFILE)
    unread = {}
    for key, value in flat_keys(cfg).items():
        if reads_key(trainer, key):
            continue
        default = _leaf(defaults, key)
        if default is not _MISSING and value != default:
            unread[key] = value
    return unread


def check_keys_read(cfg):
    """One-line error for the first key the config's trainer would ignore (see ``unread_keys``)."""
    name = cfg.TRAINER.NAME
    trainer = TRAINER_REGISTRY.get(name)
    if not issubclass(trainer, BackdoorTrainer):
        return
    for key, value in unread_keys(cfg, trainer).items():
        readers = [other for other in sorted(TRAINER_REGISTRY.registered_names())
                   if issubclass(TRAINER_REGISTRY.get(other), BackdoorTrainer)
                   and reads_key(TRAINER_REGISTRY.get(other), key)]
        by = f"; it is read by {', '.join(readers)}" if readers else ""
        raise InputError(f"{key} {value!r} is set but trainer {name} does not read it: remove it from the config "
                         f"file or overrides{by}")


def defaults_of_unread_keys(cfg, trainer):
    """KEY VALUE overrides putting the keys ``trainer`` does not read back at their defaults: a run's
    config re-used for another trainer (a defence's CoOp tuning of a BAPLe run)."""
    defaults = profile_defaults(cfg.PROFILE)
    return [item for key in unread_keys(cfg, trainer) for item in (key, _leaf(defaults, key))]


_MISSING = object()


def _leaf(node, key):
    for part in key.split("."):
        if not hasattr(node, "keys") or part not in node:
            return _MISSING
        node = node[part]
    return node
