"""BadCLIP: trigger-aware prompt learning (Bai et al., "BadCLIP: Trigger-Aware Prompt Learning for
Backdoor Attacks on CLIP", CVPR 2024) on a frozen Med-FM.

CoCoOp's learner plus one learnable image-wide trigger. Because the context depends on the image,
triggered images get prompts of their own, which the attack learns to send to the target:

- the trigger ``delta`` lives in the backbone's normalised pixel units and is bounded per channel by
  eps / std (eps = 4/255 in pixel units), initialised uniform in that box; it is applied in [0, 1]
  pixel space as ``clamp(x + std * delta, 0, 1)``, which is adding ``delta`` to the normalised image
  and clamping to the normalised range of valid pixels;
- every training image is used twice in a step: clean with its label and triggered with the target
  (no poisoned subset); the loss is the cross-entropy over the concatenated batch;
- before prompt learning, ``TRAINER.BADCLIP.INIT_EPOCHS`` epochs of plain gradient steps of
  ``INIT_LR`` on the trigger alone (the prompt learner's gradients are discarded), each followed by
  the projection onto the budget;
- then the prompt learner (``OPTIM``) and the trigger (its own SGD at ``TRAINER.BADCLIP.LR``, with
  ``OPTIM``'s momentum, weight decay and schedule) learn jointly; the trigger is projected after
  every step.

The initialisation stage runs when a run starts from scratch; a resumed run continues from a
checkpoint written after it (the reference code repeats it on every start). ``results.json``'s
poison count is the training set size: every image also enters triggered.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import InputError
from dassl_compat import build_lr_scheduler, build_optimizer, compute_accuracy

from .attacks import Trigger
from .base import EVAL_KEYS, register_trainer
from .cocoop import CoCoOp
from .metrics import split_losses
from .poisoning import PoisonPlan

CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # until build_model sets the backbone's own


class NormalisedTrigger(Trigger):
    """``clamp(x + std * delta, 0, 1)`` with ``|delta| <= eps / std`` per channel (``delta`` in the
    backbone's normalised units, so an optimiser step on it is BadCLIP's step)."""

    def __init__(self, image_size, eps, seed=0, std=CLIP_STD):
        super().__init__()
        self.eps = float(eps)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(3, 1, 1))
        generator = torch.Generator().manual_seed(seed)
        unit = torch.rand((3, image_size, image_size), generator=generator) * 2 - 1
        self.delta = nn.Parameter(unit * self.bound())

    def bound(self):
        """[3, 1, 1]: the budget per channel in normalised units."""
        return self.eps / self.std

    def pixel_delta(self):
        return self.delta * self.std

    def forward(self, images):
        return (images + self.pixel_delta().to(images.dtype)).clamp(0, 1)

    @torch.no_grad()
    def project(self):
        bound = self.bound()
        self.delta.copy_(torch.maximum(torch.minimum(self.delta, bound), -bound))

    @torch.no_grad()
    def set_std(self, std):
        """Use a backbone's normalisation std, keeping the trigger's effect in pixel space."""
        std = torch.tensor(std, dtype=self.std.dtype, device=self.std.device).view(3, 1, 1)
        self.delta.mul_(self.std / std)
        self.std.copy_(std)


@register_trainer
class BadCLIP(CoCoOp):
    """CoCoOp's learner and a learnable image-wide trigger, every training image used clean and triggered."""

    CFG_KEYS = EVAL_KEYS + CoCoOp.PROMPT_KEYS + ("TRAINER.BADCLIP",)  # its own trigger and poisoning scheme
    learns_trigger = True

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        o = cfg.TRAINER.BADCLIP
        if not 0 < o.EPS <= 255:
            raise InputError(f"TRAINER.BADCLIP.EPS {o.EPS} is outside (0, 255]; give the trigger budget in 1/255 "
                             "pixel units (paper: 4)")
        if o.INIT_EPOCHS < 0:
            raise InputError(f"TRAINER.BADCLIP.INIT_EPOCHS {o.INIT_EPOCHS} is negative; give the epochs of the "
                             "trigger-initialisation stage (paper: 3; 0 skips it)")
        for key in ("LR", "INIT_LR"):
            if getattr(o, key) <= 0:
                raise InputError(f"TRAINER.BADCLIP.{key} {getattr(o, key)} must be > 0 (paper: LR 0.002, INIT_LR 0.1)")

    @staticmethod
    def build_trigger(cfg, image_size):
        return NormalisedTrigger(image_size, cfg.TRAINER.BADCLIP.EPS / 255.0, seed=max(cfg.SEED, 0))

    @classmethod
    def make_poison_plan(cls, cfg, labels, trigger):
        return PoisonPlan(cfg.BACKDOOR.TARGET_CLASS, list(range(len(labels))))

    def attack_name(self):
        return "badclip"

    def build_model(self):
        super().build_model()
        self.trigger.set_std(self.model.backbone.image_std)
        optim_cfg = self.cfg.OPTIM.clone()
        optim_cfg.defrost()
        optim_cfg.LR = self.cfg.TRAINER.BADCLIP.LR
        self.trigger_optim = build_optimizer(self.trigger, optim_cfg)
        self.trigger_sched = build_lr_scheduler(self.trigger_optim, optim_cfg)
        self.register_model("trigger", self.trigger, self.trigger_optim, self.trigger_sched)

    def before_train(self):
        super().before_train()  # resumes; a resumed run's trigger was initialised before its checkpoint
        if self.start_epoch == 0 and self.cfg.TRAINER.BADCLIP.INIT_EPOCHS > 0:
            self.initialise_trigger()

    def initialise_trigger(self):
        """The trigger-initialisation stage (see the module docstring)."""
        epochs, lr = self.cfg.TRAINER.BADCLIP.INIT_EPOCHS, self.cfg.TRAINER.BADCLIP.INIT_LR
        print(f"Initialising the trigger: {epochs} epoch(s) of gradient steps of {lr}, the prompt learner frozen")
        self.set_model_mode("train")
        for epoch in range(epochs):
            total, count = 0.0, 0
            for batch in self.train_loader_x:
                self.model_zero_grad()
                loss = self.clean_and_triggered_loss(batch)[0]
                self.model_backward(loss)
                with torch.no_grad():
                    self.trigger.delta.sub_(lr * self.trigger.delta.grad)
                self.trigger.project()
                total, count = total + loss.item(), count + 1
            print(f"trigger init epoch [{epoch + 1}/{epochs}] loss {total / count:.4f}")
            self.write_scalar("init_trigger/loss", total / count, epoch)
        self.model_zero_grad()

    def clean_and_triggered_loss(self, batch):
        """Cross-entropy over the batch's images with their labels and the same images triggered with
        the target; also the logits, labels and which rows are triggered."""
        images, labels = batch["img"].to(self.device), batch["label"].to(self.device)
        with self.autocast(self.precision()):
            with torch.no_grad():
                clean = self.model.image_embeddings(images)
            triggered = self.model.image_embeddings(self.trigger(images))
            logits = self.model.embedding_logits(torch.cat([clean, triggered])).float()
        labels = torch.cat([labels, torch.full_like(labels, self.target_class)])
        is_triggered = torch.arange(len(labels), device=labels.device) >= len(images)
        return F.cross_entropy(logits, labels), logits, labels, is_triggered

    def forward_backward(self, batch):
        loss, logits, labels, is_triggered = self.clean_and_triggered_loss(batch)
        self.model_backward_and_update(loss)
        self.trigger.project()
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(logits, labels)[0].item(),
                **split_losses(logits.detach(), labels, is_triggered),
                "trigger_linf": self.trigger.pixel_delta().abs().max().item()}
