"""Dassl-compatible engine: Dassl's names and behaviour, backed by the real ``dassl`` package when it
is importable (so CoOp users keep one Dassl and one set of registries) and by the built-in engine
otherwise. ``BAPLE_ENGINE=builtin|dassl`` forces one; unset, ``dassl`` wins when importable.

Both backends share the project's checkpoint format and JSON writer (``checkpoint``, ``write_json``):
plain tensors and numbers, atomic writes, ``weights_only=True`` loading.
"""
import importlib.util
import os

from .builtin.utils import read_json, run_device, write_json
from .checkpoint import load_checkpoint, save_checkpoint

_requested = os.environ.get("BAPLE_ENGINE", "").strip().lower()
if _requested not in ("", "builtin", "dassl"):
    raise ImportError(f"BAPLE_ENGINE={_requested!r} is not a backend; use builtin or dassl (or unset it)")
if _requested == "dassl" and importlib.util.find_spec("dassl") is None:
    raise ImportError("BAPLE_ENGINE=dassl but the dassl package is not importable; install Dassl.pytorch "
                      "or set BAPLE_ENGINE=builtin")

if _requested == "dassl" or (_requested == "" and importlib.util.find_spec("dassl") is not None):
    from .upstream import (DATASET_REGISTRY, TRAINER_REGISTRY, DataManager, DatasetBase, DatasetWrapper, Datum,
                           Registry, SimpleTrainer, TrainerX, build_dataset, build_evaluator, build_lr_scheduler,
                           build_optimizer, build_trainer, build_transform, collect_env_info, compute_accuracy,
                           count_num_param, get_cfg_default, mkdir_if_missing, set_random_seed, setup_logger)
    BACKEND = "dassl"
else:
    from .builtin import (DATASET_REGISTRY, TRAINER_REGISTRY, DataManager, DatasetBase, DatasetWrapper, Datum,
                          Registry, SimpleTrainer, TrainerX, build_dataset, build_evaluator, build_lr_scheduler,
                          build_optimizer, build_trainer, build_transform, collect_env_info, compute_accuracy,
                          count_num_param, get_cfg_default, mkdir_if_missing, set_random_seed, setup_logger)
    BACKEND = "builtin"


def register_as(registry, name, force=False):
    """Decorator registering an object in a Dassl ``Registry`` under ``name``, for what is not looked
    up by its ``__name__`` (``Registry.register`` uses that): backbones (``"biomedclip"``), attacks,
    defences, the sweep's methods. The same duplicate check as ``register``."""
    def wrapper(obj):
        registry._do_register(name, obj, force=force)  # the one registration path of both engines' Registry
        return obj

    return wrapper


__all__ = [
    "BACKEND", "DATASET_REGISTRY", "DataManager", "DatasetBase", "DatasetWrapper", "Datum",
    "Registry", "SimpleTrainer", "TRAINER_REGISTRY", "TrainerX", "build_dataset", "build_evaluator", "build_lr_scheduler",
    "build_optimizer", "build_trainer", "build_transform", "collect_env_info", "compute_accuracy",
    "count_num_param", "get_cfg_default", "load_checkpoint", "mkdir_if_missing", "read_json", "register_as", "run_device", "save_checkpoint",
    "set_random_seed", "setup_logger", "write_json",
]
