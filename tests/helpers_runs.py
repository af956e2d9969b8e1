"""Small, fast trainer runs on the offline stand-ins and synthetic data."""
import os

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)
from configs.defaults import get_cfg
from dassl_compat import build_trainer, set_random_seed
from scripts.methods import method_file

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cfg(trainer, root, output_dir, weights, backbone="biomedclip", dataset="covid", **overrides):
    """The repository's dataset and method config files, scaled down to seconds on a CPU."""
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "datasets", f"{dataset}.yaml"))
    path = method_file(trainer, backbone)
    if os.path.isfile(path):
        cfg.merge_from_file(path)
    cfg.merge_from_list([
        "TRAINER.NAME", trainer, "DATASET.ROOT", root, "OUTPUT_DIR", str(output_dir), "SEED", 1,
        "USE_CUDA", False, "VERBOSE", False, "MODEL.BACKBONE.NAME", backbone, "MODEL.BACKBONE.WEIGHTS", weights,
        "DATASET.NUM_SHOTS", 8, "OPTIM.MAX_EPOCH", 2, "DATALOADER.NUM_WORKERS", 0,
        "DATALOADER.TRAIN_X.BATCH_SIZE", 8, "DATALOADER.TEST.BATCH_SIZE", 20, "TRAIN.PRINT_FREQ", 100,
        "TRAINER.COOP.N_CTX", 4,
    ] + [item for kv in overrides.items() for item in kv])
    return cfg


def build(cfg):
    set_random_seed(cfg.SEED)
    return build_trainer(cfg)


def train(cfg):
    trainer = build(cfg)
    trainer.train()
    return trainer
