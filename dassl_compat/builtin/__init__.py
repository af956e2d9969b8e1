"""The built-in engine: a small re-implementation of the part of Dassl that CoOp-style plugins use."""
from .config import get_cfg_default
from .data import DATASET_REGISTRY, DataManager, DatasetBase, DatasetWrapper, Datum, build_dataset
from .evaluation import EVALUATOR_REGISTRY, build_evaluator
from .metrics import compute_accuracy
from .optim import build_lr_scheduler, build_optimizer
from .registry import Registry
from .trainer import TRAINER_REGISTRY, SimpleTrainer, TrainerBase, TrainerX, build_trainer
from .transforms import INTERPOLATION_MODES, build_transform
from .utils import (AverageMeter, MetricMeter, collect_env_info, count_num_param, listdir_nohidden,
                    mkdir_if_missing, read_image, set_random_seed, setup_logger)
