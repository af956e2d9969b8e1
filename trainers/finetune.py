"""Few-shot full fine-tuning (FT) of a Med-FM's image encoder: the paper's Clean_FT and, with
``BACKDOOR.ATTACK`` set, its BadNets_FT, WaNet_FT and FIBA_FT baselines.

The model stays a CLIP-style classifier: logits = exp(logit_scale) * cos(image embedding, w_c)
with one learnable class vector w_c per class, initialised from the frozen text tower's embedding
of the class prompt (``dataset.prompt_template``, else "a photo of a {}."). The image tower (and
its projection) and the class vectors are trained; the text tower and the logit scale stay frozen.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from dassl_compat import build_lr_scheduler, build_optimizer, compute_accuracy

from .attacks import ATTACK_KEYS
from .base import EVAL_KEYS, POISON_KEYS, BackdoorTrainer, CLIPClassifier, freeze, register_trainer
from .metrics import split_losses
from .prompts import class_prompts


class FineTunedCLIP(CLIPClassifier):
    """Class embeddings are a learnable [C, D] matrix, normalised at use."""

    def __init__(self, backbone, text_embeddings):
        super().__init__(backbone)
        self.class_weights = nn.Parameter(F.normalize(text_embeddings, dim=-1))

    def class_embeddings(self):
        return F.normalize(self.class_weights, dim=-1)


@register_trainer
class FineTune(BackdoorTrainer):
    """Full fine-tuning of the image encoder on the (optionally poisoned) few-shot set."""

    CFG_KEYS = EVAL_KEYS + POISON_KEYS + ATTACK_KEYS

    def build_model(self):
        backbone = freeze(self.build_backbone())
        prompts = class_prompts(self.dm.dataset)
        print("Class vectors initialised from: " + " | ".join(prompts))
        with torch.no_grad():
            text_embeddings = backbone.encode_text(prompts)
        image_params = list(backbone.image_encoder_parameters())
        for p in image_params:
            p.requires_grad_(True)
        self.model = FineTunedCLIP(backbone, text_embeddings.to(self.trainable_dtype())).to(self.device)
        if self.trigger is not None:
            self.trigger.to(self.device)

        trainable = image_params + [self.model.class_weights]
        print(f"Fine-tuning {sum(p.numel() for p in trainable):,} parameters of {backbone.name} "
              f"({sum(p.numel() for p in backbone.parameters()):,} in the backbone)")
        self.optim = build_optimizer(trainable, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)
        # Checkpoints hold what is trained (and buffers); the frozen weights come from the backbone.
        self.checkpoint_exclude_keys = tuple(
            name for name, p in self.model.named_parameters(remove_duplicate=False) if not p.requires_grad)

    def forward_backward(self, batch):
        images, labels, poisoned, cross = self.parse_batch_train(batch)
        with torch.no_grad():
            images = self.apply_trigger(images, poisoned, cross)
        with self.autocast(self.precision()):
            logits = self.model(images).float()
        loss = F.cross_entropy(logits, labels)
        self.model_backward_and_update(loss)  # through the gradient scaler under TRAINER.PREC amp
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(logits, labels)[0].item(),
                **split_losses(logits.detach(), labels, poisoned)}
