"""CoCoOp: conditional prompt learning (Zhou et al., "Conditional Prompt Learning for Vision-Language
Models", CVPR 2022) on a frozen Med-FM.

CoOp's context plus a meta-network (linear -> ReLU -> linear, bottleneck of 1/16 of the image
embedding width) that maps each image's unit-norm embedding to a bias added to every context token:
the class prompts are built per image. All B x C prompts of a batch go through the text tower in one
call, cut to their longest real length as CoOp's are (the backbone's ``encode_text_embeddings``).

CoCoOp reads CoOp's keys (``TRAINER.COOP.N_CTX``, ``CTX_INIT``, ``CSC``, ``CLASS_TOKEN_POSITION``,
``PREC``, ``BACKBONE_DTYPE``); its method file sets the paper's 4 tokens from "a photo of a". With
``BACKDOOR.ATTACK`` badnets / wanet / fiba it is the poisoned-baseline learner, as CoOp is.
"""
from collections import OrderedDict

import torch
import torch.nn as nn
import torch.nn.functional as F

from clip_models.base import TokenizedText
from .base import register_trainer
from .coop import CoOp, PromptCLIP, PromptLearner

META_NET_REDUCTION = 16  # the paper's bottleneck: image embedding width // 16


class ConditionalPromptLearner(PromptLearner):
    """CoOp's prompts, with a per-image bias from ``meta_net`` added to every context token."""

    def __init__(self, cfg, classnames, backbone, dtype=torch.float32):
        super().__init__(cfg, classnames, backbone, dtype)
        hidden = max(1, backbone.embed_dim // META_NET_REDUCTION)
        self.meta_net = nn.Sequential(OrderedDict([
            ("linear1", nn.Linear(backbone.embed_dim, hidden)),
            ("relu", nn.ReLU()),
            ("linear2", nn.Linear(hidden, backbone.ctx_dim)),
        ])).to(self.ctx.device, dtype)  # trainable, so in the context's dtype (TRAINER.PREC fp16: half)

    def forward(self, image_embeddings):
        """[B, embed_dim] unit-norm image embeddings -> prompt embeddings [B, C, L, ctx_dim]."""
        bias = self.meta_net(image_embeddings.to(self.ctx.dtype))
        return self.assemble(self.class_contexts().unsqueeze(0) + bias[:, None, None, :])


class ConditionalPromptCLIP(PromptCLIP):
    """Per-image class embeddings: evaluation has nothing to compute once (``eval_context`` is None)."""

    def class_embeddings(self):
        raise TypeError("CoCoOp's class embeddings depend on the image; use image_class_embeddings(image "
                        "embeddings), or eval_context() / eval_logits(images, context)")

    def image_class_embeddings(self, image_embeddings):
        """[B, C, embed_dim] unit-norm class embeddings of each image's prompts: the B x C prompts go
        through the text tower in one call."""
        prompts = self.prompt_learner(image_embeddings)
        images, classes = prompts.shape[:2]
        tokens = self.prompt_learner.tokens
        tokens = TokenizedText(tokens.input_ids.repeat(images, 1), tokens.attention_mask.repeat(images, 1))
        text = self.backbone.encode_text_embeddings(prompts.flatten(0, 1), tokens)
        return F.normalize(text, dim=-1).view(images, classes, -1)

    def embedding_logits(self, image_embeddings):
        class_embeddings = self.image_class_embeddings(image_embeddings)
        scores = torch.einsum("bd,bcd->bc", image_embeddings.to(class_embeddings.dtype), class_embeddings)
        return self.backbone.logit_scale.exp() * scores

    def eval_context(self):
        return None

    def eval_logits(self, images, context):
        return self.embedding_logits(self.image_embeddings(images))


@register_trainer
class CoCoOp(CoOp):
    """Conditional context optimisation on a frozen backbone, optionally on a poisoned few-shot set."""

    learner_class, model_class = ConditionalPromptLearner, ConditionalPromptCLIP

    @classmethod
    def clean_learner(cls):
        return CoCoOp
