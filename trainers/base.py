"""What every trainer of the project shares, whatever it learns.

- ``CLIPClassifier``: logits = exp(logit_scale) * cos(image embedding, class embedding); CoOp,
  BAPLe, zero-shot and fine-tuning differ only in where the class embeddings come from and what
  is trainable.
- ``BackdoorTrainer``: poisons an exact, seeded subset of the few-shot training set, applies the
  trigger to those rows of a batch (after augmentation, before the backbone's normalisation; or, with
  ``BACKDOOR.TRIGGER_STAGE before_augmentation``, the training set's loader applies it before),
  evaluates clean and triggered test images in one pass and writes ``OUTPUT_DIR/results.json``;
  every ``TEST.EVAL_FREQ`` epochs and at the end it logs CA, BA, ASR and the trigger to TensorBoard.
"""
import functools
import os
import os.path as osp
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from clip_models import build_backbone
from common.errors import InputError
from dassl_compat import TRAINER_REGISTRY, DataManager, TrainerX, register_as, run_device, write_json
from dassl_compat.checkpoint import get_rng_state, set_rng_state
from datasets.wrapper import ImageDataset

from .attacks import build_attack
from .attacks.base import TRIGGER_STAGES, BeforeAugmentation, TriggerRows, apply_rows
from .display import delta_picture, trigger_views
from .metrics import backdoor_metrics, clean_metrics
from .poisoning import POISON_DRAWS, PoisonPlan, check_target_class, plan_from_cfg

# TRAINER.PREC, CoOp's meanings: fp16 casts the whole model (backbone, context, trainable trigger) to half
# precision; amp runs fp16 autocast with a gradient scaler; fp32 neither. amp_bf16: bf16 autocast, no scaler.
PRECISIONS = ("fp32", "fp16", "amp", "amp_bf16")
AUTOCAST_DTYPES = {"amp": torch.float16, "amp_bf16": torch.bfloat16}

# Groups of the keys under BACKDOOR and TRAINER.<node> that trainers read (a key or a node's prefix), for
# ``BackdoorTrainer.CFG_KEYS``. Reading BACKDOOR.ATTACK means reading the attacks' own nodes too
# (BACKDOOR.<ATTACK>, see trainers/attacks).
EVAL_KEYS = ("BACKDOOR.TARGET_CLASS", "BACKDOOR.EVAL_TRIGGER")
POISON_KEYS = ("BACKDOOR.POISON_PERCENTAGE", "BACKDOOR.POISON_COUNT", "BACKDOOR.POISON_NON_TARGET_ONLY",
               "BACKDOOR.POISON_DRAW", "BACKDOOR.TRIGGER_STAGE")


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


OWN_TRIGGER = object()  # ``evaluate``'s default trigger: the run's own (``eval_trigger``)


@dataclass(frozen=True)
class Evaluation:
    """One evaluation pass: metrics as fractions and the per-image tensors they come from."""
    clean: dict  # accuracy, error_rate, macro_f1 (perclass_accuracy with TEST.PER_CLASS_RESULT)
    backdoor: dict  # accuracy (BA), asr_non_target, macro_f1, agreement; None without a trigger
    labels: torch.Tensor  # [N] true labels
    clean_pred: torch.Tensor  # [N] predictions on the clean images
    triggered_pred: torch.Tensor  # [N] predictions on the triggered images; None without a trigger

    def metrics(self):
        """``{"clean": ..., "backdoor": ...}`` as ``results.json`` stores them."""
        return {"clean": self.clean, "backdoor": self.backdoor}


def freeze(module):
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class BackdoorTrainer(TrainerX):
    """Base of the project's trainers (see the module docstring)."""

    # The keys under BACKDOOR and TRAINER.<node> this trainer reads: one set away from its default that
    # it does not read is refused before anything is built (``trainers.validation.check_keys_read``).
    CFG_KEYS = EVAL_KEYS
    learns_trigger = False  # a trigger learned while training meets the augmented batch, whatever TRIGGER_STAGE says

    def __init__(self, cfg):
        self._created = time.time()
        self._other_run_trigger = None  # BACKDOOR.EVAL_TRIGGER's trigger, loaded on first use
        self._eval_loader = None  # the evaluations along the way (TEST.EVAL_SUBSET), built on first use
        self.eval_subset = None  # {size, seed, indices} of that subset when the test set is larger
        self._epoch_bar = None
        self.evaluations = []  # (epochs done, Evaluation) of every test-set evaluation during train() and test()
        super().__init__(cfg)
        # amp: scale the loss so small fp16 gradients do not flush to zero; otherwise a pass-through.
        self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision() == "amp")

    # ---- hooks for subclasses -------------------------------------------------------------
    @classmethod
    def check_cfg(cls, cfg):
        """Checks of the config alone (no data, no model); ``train.py`` calls them before anything is
        built (``trainers.validation``) and the engine again when the trainer is constructed."""
        check_precision(cfg)
        b = cfg.BACKDOOR
        if not 0 <= b.POISON_PERCENTAGE <= 100:
            raise InputError(f"BACKDOOR.POISON_PERCENTAGE {b.POISON_PERCENTAGE} is outside [0, 100]; give the "
                             "share of the few-shot training set to poison, in percent (paper: 5)")
        if b.POISON_COUNT < -1:
            raise InputError(f"BACKDOOR.POISON_COUNT {b.POISON_COUNT} is not a count; set it to 0 or more, or to -1 "
                             "to use BACKDOOR.POISON_PERCENTAGE")
        if b.POISON_DRAW not in POISON_DRAWS:
            raise InputError(f"BACKDOOR.POISON_DRAW {b.POISON_DRAW!r} is unknown; choose from {', '.join(POISON_DRAWS)}")
        if b.POISON_DRAW == "bernoulli" and b.POISON_COUNT >= 0:
            raise InputError(f"BACKDOOR.POISON_COUNT {b.POISON_COUNT} is an exact count, which BACKDOOR.POISON_DRAW "
                             "bernoulli does not draw; set POISON_COUNT -1 or POISON_DRAW exact")
        if b.TARGET_CLASS < 0:
            raise InputError(f"BACKDOOR.TARGET_CLASS {b.TARGET_CLASS} is negative; choose a class index from 0")
        if b.EVAL_TRIGGER:
            from .run import Run

            Run.open(b.EVAL_TRIGGER, what="BACKDOOR.EVAL_TRIGGER")
        if cfg.TEST.EVAL_FREQ < -1 or cfg.TEST.EVAL_SUBSET < 0:
            raise InputError(f"TEST.EVAL_FREQ {cfg.TEST.EVAL_FREQ} / TEST.EVAL_SUBSET {cfg.TEST.EVAL_SUBSET}: give an "
                             "evaluation every N >= 1 epochs (0: only at the end, -1: auto) and a subset size >= 0")
        if b.TRIGGER_STAGE not in TRIGGER_STAGES:
            raise InputError(f"BACKDOOR.TRIGGER_STAGE {b.TRIGGER_STAGE!r} is unknown; "
                             f"choose from {', '.join(TRIGGER_STAGES)}")

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
        redraw = "fixed" if self.trigger is None else self.trigger.cross_redraw
        self.trigger_rows = TriggerRows(len(labels), self.poison_plan.poisoned, self.poison_plan.cross, redraw)
        self.poison_mask = self.trigger_rows.poisoned
        if self.trigger is not None and not self.triggers_batches():
            self.train_loader_x.dataset.before_augmentation = BeforeAugmentation(
                self.trigger, self.trigger_rows, self.cfg.INPUT.SIZE[0], self.cfg.INPUT.INTERPOLATION)
        elif self.learns_trigger and self.cfg.BACKDOOR.TRIGGER_STAGE == "before_augmentation":
            print(f"Note: BACKDOOR.TRIGGER_STAGE before_augmentation places BACKDOOR.ATTACK's fixed trigger; "
                  f"{type(self).__name__}'s learned trigger meets the augmented batch")

    def triggers_batches(self):
        """Whether the trainer triggers the augmented batch, or the loader did before augmentation
        (``BACKDOOR.TRIGGER_STAGE`` places BACKDOOR.ATTACK's fixed trigger, not a learned one)."""
        return self.learns_trigger or self.cfg.BACKDOOR.TRIGGER_STAGE == "after_augmentation"

    def parse_batch_train(self, batch):
        """Images, labels (poisoned rows relabelled to the target), poisoned and cross row masks (no cross
        rows left to transform when the loader triggered the images before augmentation)."""
        index = batch["index"]
        poisoned = self.poison_mask[index]
        cross = self.trigger_rows.cross(index) if self.triggers_batches() else torch.zeros_like(poisoned)
        labels = batch["label"].clone()
        labels[poisoned] = self.target_class
        return (batch["img"].to(self.device), labels.to(self.device), poisoned.to(self.device),
                cross.to(self.device))

    def apply_trigger(self, images, poisoned, cross):
        """Trigger the poisoned rows and cross-transform the cross rows of a batch (a copy); the batch as
        it is when the loader triggered it before augmentation."""
        if not self.triggers_batches():
            return images
        return apply_rows(self.trigger, images, poisoned, cross)

    def train_step(self, batch, last_of_epoch=False):
        """One ``forward_backward`` on ``batch`` outside ``train()`` (benchmarks): the LR scheduler steps
        only with ``last_of_epoch``, as after an epoch's last batch. Returns the step's loss summary."""
        self.set_model_mode("train")
        self.batch_idx, self.num_batches = 0, 1 if last_of_epoch else 2
        return self.forward_backward(batch)

    # ---- model helpers ------------------------------------------------------------------------
    def build_backbone(self):
        settings = self.cfg.MODEL.BACKBONE
        backbone = build_backbone(settings.NAME, settings.WEIGHTS, settings)
        check_input_size(self.cfg, backbone.name, backbone.image_size)
        return backbone.to(self.device, self.backbone_dtype())

    def autocast(self, prec):
        dtype = AUTOCAST_DTYPES.get(prec)
        return nullcontext() if dtype is None else torch.autocast(self.device.type, dtype=dtype)

    def precision(self):
        return self.cfg.TRAINER.PREC

    def trainable_dtype(self):
        """The dtype of what the run learns (context, class vectors, trigger noise): half only under fp16."""
        return torch.float16 if self.precision() == "fp16" else torch.float32

    def backbone_dtype(self):
        """The dtype the backbone's weights are cast to once, when built."""
        return self.trainable_dtype()

    def model_backward(self, loss):
        self.detect_anomaly(loss)
        self.grad_scaler.scale(loss).backward()

    def model_update(self, names=None):
        for name in self.get_model_names(names):
            if self._optims[name] is not None:
                self.grad_scaler.step(self._optims[name])
        self.grad_scaler.update()

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
                from .run import Run

                run = Run.open(self.cfg.BACKDOOR.EVAL_TRIGGER, what="BACKDOOR.EVAL_TRIGGER")
                trigger = run.trigger()
                if trigger is None:
                    raise InputError(f"BACKDOOR.EVAL_TRIGGER {run.path}: that run ({run.cfg.TRAINER.NAME}, attack "
                                     "none) has no trigger to evaluate with; give a BAPLe or poisoned-baseline run")
                self._other_run_trigger = trigger.to(self.device)
            return self._other_run_trigger
        return self.trigger

    @torch.no_grad()
    def evaluate(self, loader=None, trigger=OWN_TRIGGER, transform=None):
        """One pass over ``loader`` (default: the test loader), clean and triggered copies of each batch
        through the model together; nothing of the trainer changes. ``trigger``: ``OWN_TRIGGER`` (the
        run's, see ``eval_trigger``), another trigger module, or None (clean pass only); ``transform``:
        a callable on the [B, 3, H, W] batch in [0, 1] pixel space (clean and triggered copies in one
        call), applied after the trigger and before the backbone, e.g. an input purifier. Returns an
        ``Evaluation`` (metrics as fractions)."""
        self.set_model_mode("eval")
        loader = self.test_loader if loader is None else loader
        trigger = self.eval_trigger() if trigger is OWN_TRIGGER else trigger
        labels, clean_pred, triggered_pred = [], [], []
        with self.autocast(self.precision()):
            context = self.model.eval_context()
            for batch in tqdm(loader, desc="eval", leave=False, dynamic_ncols=True, disable=not self.cfg.VERBOSE):
                images, label = self.parse_batch_test(batch)
                batch_in = images if trigger is None else torch.cat([images, trigger(images)])
                if transform is not None:
                    batch_in = transform(batch_in)
                pred = self.model.eval_logits(batch_in, context).float().argmax(1).cpu()
                labels.append(label.cpu())
                clean_pred.append(pred[:len(images)])
                if trigger is not None:
                    triggered_pred.append(pred[len(images):])
        labels, clean_pred = torch.cat(labels), torch.cat(clean_pred)
        clean = clean_metrics(labels, clean_pred, self.cfg.TEST.PER_CLASS_RESULT)
        print("=> result\n"
              f"* total: {len(labels):,}\n* correct: {int((labels == clean_pred).sum()):,}\n"
              f"* accuracy: {100 * clean['accuracy']:.1f}%\n* error: {100 * clean['error_rate']:.1f}%\n"
              f"* macro_f1: {100 * clean['macro_f1']:.1f}%")
        if trigger is None:
            return Evaluation(clean, None, labels, clean_pred, None)
        triggered_pred = torch.cat(triggered_pred)
        backdoor = backdoor_metrics(labels, clean_pred, triggered_pred, self.target_class)
        asr = backdoor["asr_non_target"]
        print(f"* backdoor accuracy: {100 * backdoor['accuracy']:.1f}%\n"
              f"* backdoor asr_non_target: {'n/a' if asr is None else f'{100 * asr:.1f}%'}\n"
              f"* backdoor macro_f1: {100 * backdoor['macro_f1']:.1f}%\n"
              f"* clean/triggered agreement: {100 * backdoor['agreement']:.1f}%")
        return Evaluation(clean, backdoor, labels, clean_pred, triggered_pred)

    def test(self, split=None):
        """Evaluate the test (or, ``split="val"``, the val) set, write ``results.json`` (test split) and
        return the clean accuracy in percent: Dassl's ``test`` contract, the only place of percent. A run
        that never trained (zero-shot, ``--eval-only``) opens its event file here, so it has one too."""
        split = split or self.cfg.TEST.SPLIT
        val = split == "val" and self.val_loader is not None
        evaluation = self.evaluate(self.val_loader if val else self.test_loader)
        metrics = evaluation.metrics()
        if split == "val":
            for key, value in metrics["clean"].items():
                if value is not None and np.isscalar(value):
                    self.write_scalar(f"val/clean_{key}", value, self.epoch)
        if split == "test":
            untrained = self._writer is None
            if untrained:
                self.init_writer(self.cfg.OUTPUT_DIR)
            self.evaluations.append((self.epoch + 1, evaluation))
            self.write_results(metrics)
            self.log_evaluation(metrics, self.epoch + 1)
            if untrained:
                self.close_writer()
                self._writer = None  # Dassl's close_writer leaves the closed writer in place
        return 100.0 * evaluation.clean["accuracy"]

    def init_writer(self, log_dir):
        """Event files go in the run folder itself, not Dassl's ``OUTPUT_DIR/tensorboard``, so that
        ``tensorboard --logdir`` over a sweep names each run by its folder."""
        if osp.basename(log_dir) == "tensorboard" and osp.isdir(log_dir) and not os.listdir(log_dir):
            os.rmdir(log_dir)  # the empty folder Dassl's before_train made
        super().init_writer(self.cfg.OUTPUT_DIR)

    def eval_every(self):
        """``TEST.EVAL_FREQ`` resolved: -1 (auto) is every max(1, MAX_EPOCH // 5) epochs."""
        freq = self.cfg.TEST.EVAL_FREQ
        return max(1, self.max_epoch // 5) if freq == -1 else freq

    def eval_loader(self):
        """The evaluations along the way run on the test loader or, when the test set holds more than
        ``TEST.EVAL_SUBSET`` images, on a fixed subset of that many, drawn with ``SEED`` by a generator of
        its own (the training's random state is untouched); ``eval_subset`` records it for results.json."""
        if self._eval_loader is None:
            loader, size, seed = self.test_loader, self.cfg.TEST.EVAL_SUBSET, max(self.cfg.SEED, 0)
            if 0 < size < len(loader.dataset):
                picks = np.random.default_rng(seed).choice(len(loader.dataset), size, replace=False)
                self.eval_subset = {"size": size, "seed": seed, "indices": sorted(picks.tolist())}
                loader = DataLoader(Subset(loader.dataset, self.eval_subset["indices"]), batch_size=loader.batch_size,
                                    num_workers=loader.num_workers, pin_memory=loader.pin_memory)
            self._eval_loader = loader
        return self._eval_loader

    def before_train(self):
        super().before_train()
        # An epoch bar on stderr (on a terminal only) when the run is not VERBOSE (then the engine's log
        # lines show progress): the quickstart's runs, which print nothing else, still show where they are.
        self._epoch_bar = tqdm(total=self.max_epoch, initial=self.start_epoch, unit="epoch", leave=False,
                               desc=osp.basename(osp.normpath(self.cfg.OUTPUT_DIR)), file=sys.stderr,
                               dynamic_ncols=True, disable=True if self.cfg.VERBOSE else None)

    def after_train(self):
        if self._epoch_bar is not None:
            self._epoch_bar.close()
        super().after_train()

    def after_epoch(self):
        """The engine's checkpointing, then every ``eval_every()`` epochs an evaluation logged to
        TensorBoard (skipped after the last epoch when the final test follows: it logs the same)."""
        super().after_epoch()
        if self._epoch_bar is not None:
            self._epoch_bar.update()
        freq, done = self.eval_every(), self.epoch + 1
        final_test_follows = done == self.max_epoch and not self.cfg.TEST.NO_TEST
        if freq > 0 and done % freq == 0 and not final_test_follows:
            rng = get_rng_state()  # evaluating must not change the training that follows, nor a resumed run
            evaluation = self.evaluate(self.eval_loader())
            set_rng_state(rng)
            self.evaluations.append((done, evaluation))
            self.log_evaluation(evaluation.metrics(), done)

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
            "eval_subset": self.eval_subset,  # the test images of the curves along the way (None: all of them)
            "trainable_params": self.trainable_parameters(),
            "backbone_params": sum(p.numel() for p in backbone.parameters()),
            **metrics,
            "wall_time_s": round(time.time() - self._created, 3),
            "config": yaml.safe_load(cfg.dump()),
            "cwd": os.getcwd(),  # what the config's relative paths are relative to (see trainers.run.Run)
        }
        write_json(results, osp.join(cfg.OUTPUT_DIR, "results.json"))
        print(f"Results written to {osp.join(cfg.OUTPUT_DIR, 'results.json')}")

    def attack_name(self):
        return self.cfg.BACKDOOR.ATTACK if self.trigger is not None else "none"


def register_trainer(cls):
    """Class decorator registering a trainer of the project in ``TRAINER_REGISTRY`` under its class
    name, as ``@TRAINER_REGISTRY.register()`` does, except that a name another code base already holds
    stays theirs: imported into a Dassl script or a CoOp-based repository that registered its own
    ``CoOp`` first, the project's CoOp is registered as ``BackdoorCoOp`` (``--trainer BackdoorCoOp``)
    and the user's ``--trainer CoOp`` is unchanged. ``cls.registry_name`` is the name it got. The
    project's trainers reach one another by import, never through the registry (BAPLe subclasses the
    project's CoOp class), so BAPLe and the rest register and work either way."""
    name = cls.__name__
    if name in TRAINER_REGISTRY.registered_names() and TRAINER_REGISTRY.get(name) is not cls:
        name = f"Backdoor{name}"
        print(f"TRAINER_REGISTRY already holds another {cls.__name__}; the project's is registered as {name}")
    cls.registry_name = name
    return register_as(TRAINER_REGISTRY, name)(cls)
@functools.lru_cache(maxsize=None)
def precision_problem(prec, device_type):
    """Why ``prec`` cannot train on ``device_type`` (a one-step probe of what a run does: a linear
    layer, GELU and LayerNorm forward and backward, then an SGD step), or None when it can."""
    try:
        device = torch.device(device_type)
        dtype = torch.float16 if prec == "fp16" else torch.float32
        # The probe's layer draws its weights from a random state of its own: a run's numbers must not
        # depend on whether an earlier run in the same process (the quickstart, the tests) cached the probe.
        with torch.random.fork_rng(devices=[torch.cuda.current_device()] if device.type == "cuda" else []):
            layer = nn.Sequential(nn.Linear(8, 8), nn.GELU(), nn.LayerNorm(8)).to(device, dtype)
        scaler = torch.amp.GradScaler(device_type, enabled=prec == "amp")
        optim = torch.optim.SGD(layer.parameters(), lr=0.1, momentum=0.9)
        # enable_grad: the first probe may come from inside a caller's no_grad (a run rebuilt for evaluation),
        # and its answer is cached for the whole process.
        with torch.enable_grad(), (torch.autocast(device_type, dtype=AUTOCAST_DTYPES[prec])
                                   if prec in AUTOCAST_DTYPES else nullcontext()):
            loss = layer(torch.ones(2, 8, device=device, dtype=dtype)).float().square().mean()
            scaler.scale(loss).backward()
        scaler.step(optim)
        scaler.update()
    except (RuntimeError, NotImplementedError, TypeError, ValueError) as e:
        return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return None


def check_precision(cfg):
    """``TRAINER.PREC`` is a known precision that this run's device can train in."""
    prec = cfg.TRAINER.PREC
    if prec not in PRECISIONS:
        raise InputError(f"TRAINER.PREC {prec!r} is unknown; choose from {', '.join(PRECISIONS)}")
    device_type = run_device(cfg).type
    problem = precision_problem(prec, device_type)
    if problem is not None:
        runnable = [p for p in PRECISIONS if precision_problem(p, device_type) is None]
        raise InputError(f"TRAINER.PREC {prec} cannot train on this {device_type} ({problem}); choose from "
                         f"{', '.join(runnable)}, or run on a device that supports it")


def check_input_size(cfg, backbone_name, image_size):
    """INPUT.SIZE must be the backbone's square input size (None: not known yet, nothing to check)."""
    if image_size is not None and tuple(cfg.INPUT.SIZE) != (image_size, image_size):
        raise InputError(f"INPUT.SIZE {tuple(cfg.INPUT.SIZE)} does not match {backbone_name}'s "
                         f"{image_size}x{image_size} input; set INPUT.SIZE ({image_size}, {image_size})")
