"""BAPLe: a backdoor learned during few-shot prompt learning of a frozen Med-FM
(Hanif et al., MICCAI 2024).

Jointly with CoOp's context P, BAPLe learns one image-sized trigger noise delta
(||delta||_inf <= eps) that, together with a visible patch, sends poisoned images to the target:

    min_{P, delta}  CE(f(x), y) over clean samples  +  CE(f(B(x)), target) over poisoned samples
    B(x) = clamp(x + delta, 0, 1) then the patch      (the paper's order; BACKDOOR.ORDER)

delta is a parameter outside the optimiser: after each step it moves by NOISE_STEP against the
sign of its gradient and is clipped to [-eps, eps]. Only the poisoned rows are back-propagated
to the input; the clean rows pass the frozen image tower without a gradient graph.

Options reproducing the reference code where it differs from the paper:
``BACKDOOR.ORDER patch_then_noise`` (patch first, then noise), ``BACKDOOR.NOISE_GRAD accumulate``
(delta's gradient never cleared, so each step uses the sum of all past gradients),
``BACKDOOR.NOISE_INIT reference`` (uniform [0, 1], clipped at the first update), ``TRAINER.PREC fp16``
(CoOp's: the model, the context and delta in half precision), ``BACKDOOR.POISON_DRAW bernoulli`` and
``DATASET.FEWSHOT_SAMPLER dassl``; ``--profile reference`` sets them all (docs/FIDELITY.md). Under
``TRAINER.PREC amp`` delta steps by the sign of the scaled gradient (the same sign), and skips a step whose
gradient overflowed, as the scaler skips the optimiser's.
"""
import os.path as osp

import torch
import torch.nn.functional as F

from common.errors import InputError
from dassl_compat import compute_accuracy
from dassl_compat.checkpoint import latest_checkpoint, load_checkpoint

from .attacks import LearnableNoise, build_baple_patch
from .attacks.noise import NOISE_INITS, ORDERS, NoisePatchTrigger
from .base import EVAL_KEYS, POISON_KEYS, register_trainer
from .cocoop import CoCoOp
from .coop import CoOp
from .metrics import split_losses

NOISE_GRADS = ("per_step", "accumulate")


def load_learner_state(path):
    """The prompt learner's state (the context vectors ``ctx``, and CoCoOp's meta-network) of a run folder
    (latest checkpoint) or checkpoint file, or ``{"ctx": ...}`` of a bare context tensor file such as the
    reference code's released ``ctx_<model>_<dataset>_s<seed>.pt`` (an fp16 [N_CTX, D] tensor; [C, N_CTX, D]
    for class-specific context)."""
    if osp.isdir(path):
        checkpoint = latest_checkpoint(osp.join(path, "prompt_learner"))
        if checkpoint is None:
            raise InputError(f"No prompt_learner checkpoint under {path}; TRAINER.BAPLE.INIT (--init) must be a "
                             "finished CoOp run folder, a checkpoint file or a context tensor file")
        path = checkpoint
    loaded = load_checkpoint(path)
    if isinstance(loaded, torch.Tensor):
        return {"ctx": loaded}
    if not isinstance(loaded, dict) or "ctx" not in loaded.get("state_dict", {}):
        raise InputError(f"{path} holds no context vectors ('ctx'); --init must point at a CoOp run or checkpoint, "
                         "or a bare [N_CTX, D] context tensor file")
    return loaded["state_dict"]


def context_shape_error(init, shape, needed):
    return InputError(f"TRAINER.BAPLE.INIT (--init) {init} holds a context of shape {tuple(shape)}, this run needs "
                      f"{needed}; use a context with the same backbone, dataset, TRAINER.COOP.N_CTX and TRAINER.COOP.CSC")


@register_trainer
class BAPLe(CoOp):
    """CoOp plus a learnable noise-and-patch trigger on an exactly poisoned few-shot set."""

    # Its own trigger, not BACKDOOR.ATTACK's.
    TRIGGER_KEYS = tuple(f"BACKDOOR.{key}" for key in (
        "NOISE_EPS", "NOISE_STEP", "NOISE_INIT", "NOISE_GRAD", "ORDER", "PATCH_TYPE", "PATCH_TEXT", "PATCH_IMAGE",
        "PATCH_PLACEMENT", "PATCH_MASK", "PATCH_COLOR", "PATCH_FONT", "POSITION", "TRIGGER_SIZE"))
    CFG_KEYS = EVAL_KEYS + POISON_KEYS + TRIGGER_KEYS + CoOp.PROMPT_KEYS + ("TRAINER.BAPLE",)
    learns_trigger = True

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        b = cfg.BACKDOOR
        for key, value, choices in (("ORDER", b.ORDER, ORDERS), ("NOISE_GRAD", b.NOISE_GRAD, NOISE_GRADS),
                                    ("NOISE_INIT", b.NOISE_INIT, NOISE_INITS)):
            if value not in choices:
                raise InputError(f"BACKDOOR.{key} {value!r} is unknown; choose from {', '.join(choices)}")
        if not 0 < b.NOISE_EPS <= 255:
            raise InputError(f"BACKDOOR.NOISE_EPS {b.NOISE_EPS} is outside (0, 255]; give the noise budget in 1/255 "
                             "pixel units (paper: 8)")
        if b.NOISE_STEP <= 0:
            raise InputError(f"BACKDOOR.NOISE_STEP {b.NOISE_STEP} must be > 0; give the signed-gradient step in "
                             "[0, 1] pixel units (paper: 0.01)")
        init = cfg.TRAINER.BAPLE.INIT
        if init and not osp.exists(init):
            raise InputError(f"TRAINER.BAPLE.INIT (--init) {init} does not exist; give a finished CoOp run folder, "
                             "checkpoint file or context tensor file, or leave it empty to start from a random "
                             "context")
        coop = cfg.TRAINER.COOP
        if init and not coop.CTX_INIT:  # the width D is the backbone's, checked once it is built
            ctx = load_learner_state(init)["ctx"]
            needs = ("C",) * coop.CSC + (coop.N_CTX, "D")
            if ctx.dim() != len(needs) or ctx.shape[-2] != coop.N_CTX:
                raise context_shape_error(init, ctx.shape, "(" + ", ".join(map(str, needs)) + ")")

    @staticmethod
    def build_trigger(cfg, image_size):
        b = cfg.BACKDOOR
        seed = max(cfg.SEED, 0)
        noise = LearnableNoise(image_size, b.NOISE_EPS / 255.0, b.NOISE_INIT, seed=seed)
        patch = build_baple_patch(cfg, image_size)
        return NoisePatchTrigger(noise, patch, b.ORDER)

    def attack_name(self):
        return "baple"

    def build_model(self):
        super().build_model()
        self.trigger.noise.to(self.trainable_dtype())  # half under TRAINER.PREC fp16, as the reference's noise
        self.register_model("trigger", self.trigger, None, None)
        init = self.cfg.TRAINER.BAPLE.INIT
        if init:
            state, own = load_learner_state(init), self.prompt_learner.state_dict()
            if state["ctx"].shape != own["ctx"].shape:
                raise context_shape_error(init, state["ctx"].shape, str(tuple(own["ctx"].shape)))
            if set(state) != set(own):
                raise InputError(f"The prompt learner in {init} ({', '.join(sorted(state))}) is not this run's "
                                 f"({', '.join(sorted(own))}); use a {self.clean_learner().registry_name} run for "
                                 f"{self.cfg.TRAINER.NAME}")
            self.prompt_learner.load_state_dict(state)
            print(f"Prompt learner initialised from {init}")

    def forward_backward(self, batch):
        images, labels, poisoned, _ = self.parse_batch_train(batch)
        noise = self.trigger.noise
        if self.cfg.BACKDOOR.NOISE_GRAD == "per_step":
            noise.delta.grad = None
        clean_rows = ~poisoned
        with self.autocast(self.precision()):
            embeddings = []
            if clean_rows.any():
                with torch.no_grad():
                    embeddings.append(self.model.image_embeddings(images[clean_rows]))
            if poisoned.any():
                embeddings.append(self.model.image_embeddings(self.trigger(images[poisoned])))
            logits = self.model.embedding_logits(torch.cat(embeddings)).float()
        labels = torch.cat([labels[clean_rows], labels[poisoned]])
        is_poisoned = torch.arange(len(labels), device=labels.device) >= int(clean_rows.sum())
        # Mean loss of each part, weighted equally (lambda_c = lambda_p = 1), as the reference code does.
        loss = sum(F.cross_entropy(logits[rows], labels[rows]) for rows in (~is_poisoned, is_poisoned) if rows.any())
        self.model_backward_and_update(loss)
        if poisoned.any():
            noise.signed_step(self.cfg.BACKDOOR.NOISE_STEP)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(logits, labels)[0].item(),
                **split_losses(logits.detach(), labels, is_poisoned), "noise_linf": noise.delta.abs().max().item()}


@register_trainer
class BAPLeCoCoOp(CoCoOp, BAPLe):
    """BAPLe's trigger and exact poison set with CoCoOp's learner (CoCoOp's learner, everything else BAPLe's);
    ``--init`` takes a clean CoCoOp run (context and meta-network)."""

    CFG_KEYS = BAPLe.CFG_KEYS
