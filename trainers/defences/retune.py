"""Model-side defences of a hospital that received a learned prompt: tune it again on a small trusted
clean set, and, as the clean baseline to compare with, tune a context initialised from words.

Both are CoOp trainings (the project's ``CoOp`` trainer, unpoisoned; ``CoCoOp`` for runs with CoCoOp's
learner: CoCoOp, BAPLeCoCoOp, BadCLIP) on the trusted few-shot set
(``shots`` per class, drawn with ``seed``, through CoOp's training augmentation), with the run's
prompt settings, optimiser and learning rate, no warm-up (the received context is already trained)
and a cosine schedule over ``epochs``. CA and BA, with the run's own trigger, are measured before
tuning (epoch 0) and after every epoch. Only the context is optimised: the backbone's bytes are
hashed before and after, and the result records whether they are unchanged.
"""
import hashlib
from contextlib import redirect_stdout

import torch

from dassl_compat import DATASET_REGISTRY, TRAINER_REGISTRY

from ..coop import CoOp
from ..zeroshot import DEFAULT_TEMPLATE
from .robustness import evaluate_quietly, test_set_in_memory
from .runs import build


def is_prompt_learning(cfg):
    return issubclass(TRAINER_REGISTRY.get(cfg.TRAINER.NAME), CoOp)


def backbone_digest(backbone):
    """SHA-256 of every parameter and buffer of the backbone, in state-dict order (bitwise identity)."""
    digest = hashlib.sha256()
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def init_words(cfg):
    """Words to start the context from: the run's ``CTX_INIT``, else the dataset's zero-shot prompt
    template up to the class name, else the default zero-shot template's (``a photo of a``)."""
    if cfg.TRAINER.COOP.CTX_INIT.strip():
        return cfg.TRAINER.COOP.CTX_INIT.strip()
    template = getattr(DATASET_REGISTRY.get(cfg.DATASET.NAME), "prompt_template", "{}")
    return template.split("{}")[0].strip() or DEFAULT_TEMPLATE.split("{}")[0].strip()


def defender_cfg(cfg, run_dir, own_trigger, output_dir, shots, seed, epochs, lr=None, words=None):
    """The CoOp config of the defender's tuning, from a rebuilt run's config ``cfg`` (see
    ``runs.run_cfg``); ``own_trigger``: BA is measured with the run's own trigger; ``words``: start
    from these words instead of the received context (None keeps the run's prompt layout)."""
    out = cfg.clone()
    out.defrost()
    if own_trigger and not out.BACKDOOR.EVAL_TRIGGER:
        out.BACKDOOR.EVAL_TRIGGER = run_dir  # rebuilt from the run's config and saved trigger
    out.TRAINER.NAME = TRAINER_REGISTRY.get(cfg.TRAINER.NAME).clean_learner  # CoOp, or CoCoOp for its learners
    out.BACKDOOR.ATTACK = "none"
    out.TRAINER.BAPLE.INIT = ""
    if words is not None:
        out.TRAINER.COOP.CTX_INIT = words
    out.DATASET.NUM_SHOTS, out.SEED = shots, seed
    out.OPTIM.MAX_EPOCH, out.OPTIM.WARMUP_EPOCH = epochs, 0
    if lr is not None:
        out.OPTIM.LR = lr
    out.OUTPUT_DIR = output_dir
    return out


def retune(cfg, log, load_from=None):
    """Tune the context of a CoOp trainer built from ``cfg``, started from the context in ``load_from``
    (a run folder) or, without it, from ``cfg``'s words. Returns the CA/BA of every epoch, the
    backbone check and what was tuned."""
    trainer = build(cfg, log)
    if load_from:
        with redirect_stdout(log):
            trainer.load_model(load_from)
    before = backbone_digest(trainer.model.backbone)
    with test_set_in_memory(trainer):
        epochs = [{"epoch": 0, **evaluate_quietly(trainer, log)}]
        for trainer.epoch in range(trainer.max_epoch):
            with redirect_stdout(log):
                trainer.run_epoch()
            epochs.append({"epoch": trainer.epoch + 1, **evaluate_quietly(trainer, log)})
    after = backbone_digest(trainer.model.backbone)
    return {"epochs": epochs, "trainable_params": trainer.trainable_parameters(),
            "backbone_sha256": after, "backbone_unchanged": before == after,
            "start": "received context" if load_from else f"words: {cfg.TRAINER.COOP.CTX_INIT}",
            "num_trusted": len(trainer.dm.dataset.train_x)}
