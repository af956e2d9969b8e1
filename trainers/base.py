"""What every trainer of the project shares, whatever it learns.

- ``CLIPClassifier``: logits = exp(logit_scale) * cos(image embedding, class embedding); CoOp,
  BAPLe, zero-shot and fine-tuning differ only in where the class embeddings come from and what
  is trainable.
- ``BackdoorTrainer``: poisons an exact, seeded subset of the few-shot training set, applies the
  trigger to those rows of a batch (after augmentation, before the backbone's normalisation),
  evaluates clean and triggered test images in one pass and writes ``OUTPUT_DIR/results.json``;
  every ``TEST.EVAL_FREQ`` epochs and at the end it logs CA, BA, ASR and the trigger to TensorBoard.
"""
import os.path as osp
import time
from contextlib import nullcontext

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from tqdm import tqdm
from yacs.config import CfgNode

from clip_models import build_backbone
from configs.errors import InputError
from dassl_compat import DataManager, TrainerX, read_json, write_json
from dassl_compat.checkpoint import get_rng_state, set_rng_state
from datasets.wrapper import ImageDataset

from .attacks import build_attack
from .display import delta_picture, trigger_views
from .metrics import backdoor_metrics
from .poisoning import PoisonPlan, check_target_class, plan_from_cfg

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class CLIPClassifier(nn.Module):
    """A CLIP-style classifier over a backbone; subclasses provide ``class_embeddings``."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone

    def class_embeddings(self):
        """[C, D] unit-norm class embeddings."""
        raise NotImplementedError

    def image_embeddings(self, images):
        return F.normalize(self.backbone.encode_image(images), dim=-1)

    def logits(self, image_embeddings, class_embeddings):
        return self.backbone.logit_scale.exp() * image_embeddings @ class_embeddings.t()

    def eval_context(self):
        """What an evaluation computes once, before its batches: the class embeddings."""
        return self.class_embeddings()

    def eval_logits(self, images, context):
        """Logits of [0, 1] images given ``eval_context()`` (a learner whose prompts depend on the image,
        CoCoOp, overrides both)."""
        return self.logits(self.image_embeddings(images), context)

    def forward(self, images):
        return self.eval_logits(images, self.eval_context())


def freeze(module):
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class BackdoorTrainer(TrainerX):
    """Base of the project's trainers (see the module docstring)."""

    def __init__(self, cfg):
        self._created = time.time()
        self._other_run_trigger = None  # BACKDOOR.EVAL_TRIGGER's trigger, loaded on first use
        super().__init__(cfg)

    # ---- hooks for subclasses -------------------------------------------------------------
    @classmethod
    def check_cfg(cls, cfg):
        """Checks of the config alone (no data, no model); ``train.py`` calls them before anything is
        built (``trainers.validation``) and the engine again when the trainer is constructed."""
        b = cfg.BACKDOOR
        if not 0 <= b.POISON_PERCENTAGE <= 100:
            raise InputError(f"BACKDOOR.POISON_PERCENTAGE {b.POISON_PERCENTAGE} is outside [0, 100]; give the "
                             "share of the few-shot training set to poison, in percent (paper: 5)")
        if b.POISON_COUNT < -1:
            raise InputError(f"BACKDOOR.POISON_COUNT {b.POISON_COUNT} is not a count; set it to 0 or more, or to -1 "
                             "to use BACKDOOR.POISON_PERCENTAGE")
        if b.TARGET_CLASS < 0:
            raise InputError(f"BACKDOOR.TARGET_CLASS {b.TARGET_CLASS} is negative; choose a class index from 0")
        if b.EVAL_TRIGGER:
            run_results_file(b.EVAL_TRIGGER)

    @staticmethod
    def build_trigger(cfg, image_size):
        """The trigger this method trains with and evaluates (None: no backdoor)."""
        return build_attack(cfg, image_size)

    @classmethod
    def make_poison_plan(cls, cfg, labels, trigger):
        """Which training images are poisoned: an exact, seeded subset (``BACKDOOR.*``)."""
        return plan_from_cfg(cfg, labels, trigger.cross_ratio)

    # ---- data and poisoning -----------------------------------------------------------------
    def build_data_loader(self):
        dm = DataManager(self.cfg, dataset_wrapper=ImageDataset)
        self.train_loader_x, self.train_loader_u = dm.train_loader_x, dm.train_loader_u
        self.val_loader, self.test_loader = dm.val_loader, dm.test_loader
        self.num_classes, self.num_source_domains = dm.num_classes, dm.num_source_domains
        self.lab2cname, self.dm = dm.lab2cname, dm

        target = self.cfg.BACKDOOR.TARGET_CLASS
        check_target_class(target, self.num_classes, self.cfg.DATASET.NAME)
        self.target_class = target
        self.trigger = self.build_trigger(self.cfg, self.cfg.INPUT.SIZE[0])
        labels = [item.label for item in dm.dataset.train_x]
        if self.trigger is None:
            self.poison_plan = PoisonPlan(target)
        else:
            self.poison_plan = self.make_poison_plan(self.cfg, labels, self.trigger)
            print(f"Poisoned {len(self.poison_plan.poisoned)} of {len(labels)} training images "
                  f"(target class {target}: {self.lab2cname[target]})")
        self.poison_mask = torch.zeros(len(labels), dtype=torch.bool)
        self.poison_mask[self.poison_plan.poisoned] = True
        self.cross_mask = torch.zeros(len(labels), dtype=torch.bool)
        self.cross_mask[self.poison_plan.cross] = True

    def parse_batch_train(self, batch):
        """Images, labels (poisoned rows relabelled to the target), poisoned and cross row masks."""
        index = batch["index"]
        poisoned, cross = self.poison_mask[index], self.cross_mask[index]
        labels = batch["label"].clone()
        labels[poisoned] = self.target_class
        return (batch["img"].to(self.device), labels.to(self.device), poisoned.to(self.device),
                cross.to(self.device))

    def apply_trigger(self, images, poisoned, cross):
        """Trigger the poisoned rows and cross-transform the cross rows of a batch (a copy)."""
        if not (poisoned.any() or cross.any()):
            return images
        images = images.clone()
        if poisoned.any():
            images[poisoned] = self.trigger(images[poisoned])
        if cross.any():
            images[cross] = self.trigger.apply_cross(images[cross])
        return images

    # ---- model helpers ------------------------------------------------------------------------
    def build_backbone(self):
        backbone = build_backbone(self.cfg.MODEL.BACKBONE.NAME, self.cfg.MODEL.BACKBONE.WEIGHTS)
        check_input_size(self.cfg, backbone.name, backbone.image_size)
        return backbone.to(self.device)

    def autocast(self, prec):
        dtype = PRECISIONS[prec]
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def precision(self):
        return "fp32"

    def trainable_parameters(self):
        seen, total = set(), 0
        for model in self._models.values():
            for p in model.parameters():
                if p.requires_grad and id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
        return total

    # ---- evaluation ---------------------------------------------------------------------------
    def eval_trigger(self):
        """The trigger applied at test time: this run's own, unless ``BACKDOOR.EVAL_TRIGGER`` names
        another run whose trigger to use (e.g. a clean model under BAPLe's learned trigger)."""
        if self.cfg.BACKDOOR.EVAL_TRIGGER:
            if self._other_run_trigger is None:  # a finished run's trigger: read once, not per evaluation
                self._other_run_trigger = load_run_trigger(self.cfg.BACKDOOR.EVAL_TRIGGER).to(self.device)
            return self._other_run_trigger
        return self.trigger

    @torch.no_grad()
    def evaluate(self, split=None):
        """One pass over the test (or val) set: clean and triggered copies of each batch go through
        the model together. Returns {"clean": {...}, "backdoor": {...} or None} as fractions."""
        self.set_model_mode("eval")
        self.evaluator.reset()
        split = split or self.cfg.TEST.SPLIT
        loader = self.val_loader if split == "val" and self.val_loader is not None else self.test_loader
        trigger = self.eval_trigger()
        labels, clean_pred, triggered_pred = [], [], []
        with self.autocast(self.precision()):
            context = self.model.eval_context()
            for batch in tqdm(loader, desc="eval", leave=False, dynamic_ncols=True, disable=not self.cfg.VERBOSE):
                images, label = self.parse_batch_test(batch)
                batch_in = images if trigger is None else torch.cat([images, trigger(images)])
                logits = self.model.eval_logits(batch_in, context).float()
                self.evaluator.process(logits[:len(images)], label)
                labels.append(label.cpu())
                clean_pred.append(logits[:len(images)].argmax(1).cpu())
                if trigger is not None:
                    triggered_pred.append(logits[len(images):].argmax(1).cpu())
        clean = {k: v / 100.0 for k, v in self.evaluator.evaluate().items()}
        backdoor = None
        if trigger is not None:
            backdoor = backdoor_metrics(torch.cat(labels), torch.cat(clean_pred), torch.cat(triggered_pred),
                                        self.target_class)
            asr = backdoor["asr_non_target"]
            print(f"* backdoor accuracy: {100 * backdoor['accuracy']:.1f}%\n"
                  f"* backdoor asr_non_target: {'n/a' if asr is None else f'{100 * asr:.1f}%'}\n"
                  f"* backdoor macro_f1: {100 * backdoor['macro_f1']:.1f}%\n"
                  f"* clean/triggered agreement: {100 * backdoor['agreement']:.1f}%")
        return {"clean": clean, "backdoor": backdoor}

    def test(self, split=None):
        """Evaluate, write ``results.json`` (test split) and return the clean accuracy in percent (as Dassl)."""
        metrics = self.evaluate(split)
        for section, values in metrics.items():
            for key, value in (values or {}).items():
                if value is not None and np.isscalar(value):
                    self.write_scalar(f"test/{section}_{key}", value, self.epoch)
        if (split or self.cfg.TEST.SPLIT) == "test":
            self.write_results(metrics)
            self.log_evaluation(metrics, self.epoch + 1)
        return 100.0 * metrics["clean"]["accuracy"]

    def after_epoch(self):
        """The engine's checkpointing, then every ``TEST.EVAL_FREQ`` epochs an evaluation logged to
        TensorBoard (skipped after the last epoch when the final test follows: it logs the same)."""
        super().after_epoch()
        freq, done = self.cfg.TEST.EVAL_FREQ, self.epoch + 1
        final_test_follows = done == self.max_epoch and not self.cfg.TEST.NO_TEST
        if freq > 0 and done % freq == 0 and not final_test_follows:
            rng = get_rng_state()  # evaluating must not change the training that follows, nor a resumed run
            metrics = self.evaluate()
            set_rng_state(rng)
            self.log_evaluation(metrics, done)

    def log_evaluation(self, metrics, step):
        """TensorBoard ``eval/*``: CA, BA and non-target ASR at ``step`` (epochs done); ``trigger/delta``
        (the learned noise, or the trigger's effect on the first test image, amplified) and
        ``trigger/clean_triggered`` (that image without and with the trigger)."""
        if self._writer is None:
            return
        self.write_scalar("eval/clean_accuracy", metrics["clean"]["accuracy"], step)
        backdoor = metrics["backdoor"]
        if backdoor is None:
            return
        self.write_scalar("eval/backdoor_accuracy", backdoor["accuracy"], step)
        if backdoor["asr_non_target"] is not None:
            self.write_scalar("eval/backdoor_asr_non_target", backdoor["asr_non_target"], step)
        views = trigger_views(self.eval_trigger(), self.test_loader.dataset[0]["img"].to(self.device))
        self._writer.add_image("trigger/delta", delta_picture(views), step)
        self._writer.add_image("trigger/clean_triggered", torch.cat([views["clean"], views["triggered"]], dim=2), step)

    def write_results(self, metrics):
        cfg = self.cfg
        backbone = self.model.backbone
        results = {
            "trainer": cfg.TRAINER.NAME,
            "backbone": cfg.MODEL.BACKBONE.NAME,
            "dataset": cfg.DATASET.NAME,
            "seed": cfg.SEED,
            "attack": self.attack_name(),
            "target_class": self.target_class,
            "target_name": self.lab2cname[self.target_class],
            "num_classes": self.num_classes,
            "num_train": len(self.dm.dataset.train_x),
            "num_test": len(self.dm.dataset.test),
            "poison": self.poison_plan.as_dict(),
            "trainable_params": self.trainable_parameters(),
            "backbone_params": sum(p.numel() for p in backbone.parameters()),
            **metrics,
            "wall_time_s": round(time.time() - self._created, 3),
            "config": yaml.safe_load(cfg.dump()),
        }
        write_json(results, osp.join(cfg.OUTPUT_DIR, "results.json"))
        print(f"Results written to {osp.join(cfg.OUTPUT_DIR, 'results.json')}")

    def attack_name(self):
        return self.cfg.BACKDOOR.ATTACK if self.trigger is not None else "none"


def check_input_size(cfg, backbone_name, image_size):
    """INPUT.SIZE must be the backbone's square input size (None: not known yet, nothing to check)."""
    if image_size is not None and tuple(cfg.INPUT.SIZE) != (image_size, image_size):
        raise InputError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match {backbone_name}'s "
                         f"{image_size}x{image_size} input; set INPUT.SIZE ({image_size}, {image_size})")


def run_results_file(run_dir):
    """``run_dir/results.json`` of a finished run (``BACKDOOR.EVAL_TRIGGER``), or a one-line error."""
    path = osp.join(run_dir, "results.json")
    if not osp.isfile(path):
        raise InputError(f"BACKDOOR.EVAL_TRIGGER {run_dir}: no results.json there; it must name a finished run folder")
    return path


def load_run_trigger(run_dir):
    """Rebuild the trigger of a finished run from its ``results.json`` config and, when the run
    learned it, its saved ``trigger`` checkpoint."""
    from dassl_compat import TRAINER_REGISTRY
    from dassl_compat.checkpoint import latest_checkpoint, load_checkpoint

    cfg = CfgNode(read_json(run_results_file(run_dir))["config"])
    trigger = TRAINER_REGISTRY.get(cfg.TRAINER.NAME).build_trigger(cfg, cfg.INPUT.SIZE[0])
    if trigger is None:
        raise InputError(f"The run in {run_dir} ({cfg.TRAINER.NAME}, attack none) has no trigger to evaluate with")
    checkpoint = latest_checkpoint(osp.join(run_dir, "trigger"))
    if checkpoint is not None:
        trigger.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
    return trigger.eval()
