"""The real Dassl (KaiyangZhou/Dassl.pytorch), with its breakages on current torch worked around.

- ``dassl.data`` calls ``logging.disable(logging.WARNING)`` process-wide at import: undone.
- Its warm-up schedulers pass ``verbose`` to torch's ``LRScheduler`` (gone in current torch) and
  pickle the successor scheduler into checkpoints: the built-in ``build_lr_scheduler`` (the same
  schedule on torch's ``SequentialLR``) is used instead.
- Its ``setup_logger`` tee closes the console it wraps when garbage-collected (``Logger.__del__``),
  so a second run in one process loses stdout: the built-in one (same file naming) is used instead.
- Its checkpoints are read with ``torch.load`` without ``weights_only`` and ``load_model`` crashes
  on ``val_result=None``: ``TrainerX`` saves, resumes and loads through the project's
  ``CheckpointingMixin`` (atomic writes, ``weights_only=True``, random state restored on resume).
"""
import logging

from dassl.config import get_cfg_default
from dassl.data import DataManager
from dassl.data.data_manager import DatasetWrapper
from dassl.data.datasets import DATASET_REGISTRY, DatasetBase, Datum, build_dataset
from dassl.data.transforms import INTERPOLATION_MODES, build_transform
from dassl.engine import TRAINER_REGISTRY, build_trainer
from dassl.engine.trainer import SimpleTrainer as _DasslSimpleTrainer
from dassl.engine.trainer import TrainerBase
from dassl.engine.trainer import TrainerX as _DasslTrainerX
from dassl.evaluation import EVALUATOR_REGISTRY, build_evaluator
from dassl.metrics import compute_accuracy
from dassl.optim import build_optimizer
from dassl.utils import (AverageMeter, MetricMeter, Registry, collect_env_info, count_num_param,
                         listdir_nohidden, mkdir_if_missing, read_image, set_random_seed)

from .builtin.optim import build_lr_scheduler
from .builtin.utils import setup_logger
from .checkpoint import CheckpointingMixin

logging.disable(logging.NOTSET)


class SimpleTrainer(CheckpointingMixin, _DasslSimpleTrainer):
    def before_train(self):
        super().before_train()
        self.restore_resume_rng_state()


class TrainerX(CheckpointingMixin, _DasslTrainerX):
    def before_train(self):
        super().before_train()
        self.restore_resume_rng_state()
