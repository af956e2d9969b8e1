"""CoOp: learn context vectors of the class prompts of a frozen Med-FM (Zhou et al., IJCV 2022).

With ``BACKDOOR.ATTACK`` set, a fixed poisoning attack is applied to an exact, seeded subset of
the few-shot training set: the prompt-learning (PL) baselines BadNets_PL, WaNet_PL and FIBA_PL.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from clip_models.base import TokenizedText
from common.errors import InputError
from dassl_compat import build_lr_scheduler, build_optimizer, compute_accuracy

from .attacks import ATTACK_KEYS
from .base import EVAL_KEYS, POISON_KEYS, BackdoorTrainer, CLIPClassifier, freeze, register_trainer
from .metrics import split_losses

CLASS_TOKEN_POSITIONS = ("end", "middle", "front")
BACKBONE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


class PromptLearner(nn.Module):
    """Class prompts ``[SOT] ctx_1 .. ctx_n <class name> . [EOT]`` with learnable ``ctx``, shared by
    all classes or class-specific (CSC), and the class name at the end, middle or front."""

    def __init__(self, cfg, classnames, backbone, dtype=torch.float32):
        super().__init__()
        opts = cfg.TRAINER.COOP
        n_ctx, ctx_init = opts.N_CTX, opts.CTX_INIT.replace("_", " ").strip()
        n_cls = len(classnames)
        device = backbone._pixel_mean.device
        if ctx_init:
            init = backbone.word_embeddings(ctx_init)
            n_ctx = len(init)
            ctx = init.expand(n_cls, -1, -1).clone() if opts.CSC else init.clone()
            prompt_prefix = ctx_init
        else:
            ctx = torch.empty((n_cls, n_ctx, backbone.ctx_dim) if opts.CSC else (n_ctx, backbone.ctx_dim))
            nn.init.normal_(ctx, std=0.02)
            prompt_prefix = " ".join([backbone.placeholder] * n_ctx)
        self.ctx = nn.Parameter(ctx.to(dtype))
        self.n_cls, self.n_ctx = n_cls, n_ctx
        self.class_token_position = opts.CLASS_TOKEN_POSITION

        names = [name.replace("_", " ") for name in classnames]
        self.name_lens = [backbone.count_tokens(name) for name in names]
        prompts = [f"{prompt_prefix} {name}." for name in names]
        longest = max(backbone.count_tokens(p) for p in prompts) + 2
        if longest > backbone.context_length:
            raise InputError(f"Prompts of {longest} tokens exceed {backbone.name}'s context length "
                             f"{backbone.context_length}; lower TRAINER.COOP.N_CTX or shorten the class names")
        tokens = backbone.tokenize(prompts)
        if not ctx_init:
            placeholder_id = backbone.tokenize([backbone.placeholder]).input_ids[0, 1]
            assert bool((tokens.input_ids[:, 1:1 + n_ctx] == placeholder_id).all()), "placeholder tokens misplaced"
        with torch.no_grad():
            embedding = backbone.token_embedding(tokens.input_ids.to(device)).to(dtype)
        # Fixed parts of the prompts, rebuilt from the backbone at construction: not saved.
        self.register_buffer("token_prefix", embedding[:, :1], persistent=False)
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:], persistent=False)
        self.register_buffer("input_ids", tokens.input_ids, persistent=False)
        self.register_buffer("attention_mask", tokens.attention_mask, persistent=False)

    @property
    def tokens(self):
        return TokenizedText(self.input_ids, self.attention_mask)

    def class_contexts(self):
        """[C, n_ctx, D]: every class's context (the shared one repeated, or the class-specific ones)."""
        return self.ctx if self.ctx.dim() == 3 else self.ctx.unsqueeze(0).expand(self.n_cls, -1, -1)

    def assemble(self, ctx):
        """Prompt embeddings [..., C, L, D] from per-class contexts [..., C, n_ctx, D]; leading dimensions
        (CoCoOp's images) are broadcast over the fixed token parts."""
        lead = ctx.shape[:-3]
        prefix = self.token_prefix.expand(*lead, *self.token_prefix.shape)
        suffix = self.token_suffix.expand(*lead, *self.token_suffix.shape)
        if self.class_token_position == "end":
            return torch.cat([prefix, ctx, suffix], dim=-2)
        prompts = []
        half = self.n_ctx // 2
        for i, name_len in enumerate(self.name_lens):
            first, context = prefix[..., i:i + 1, :, :], ctx[..., i:i + 1, :, :]
            name, rest = suffix[..., i:i + 1, :name_len, :], suffix[..., i:i + 1, name_len:, :]
            if self.class_token_position == "middle":
                parts = [first, context[..., :half, :], name, context[..., half:, :], rest]
            else:
                parts = [first, name, context, rest]
            prompts.append(torch.cat(parts, dim=-2))
        return torch.cat(prompts, dim=-3)

    def forward(self):
        return self.assemble(self.class_contexts())


class PromptCLIP(CLIPClassifier):
    """Class embeddings from the learnable prompts through the frozen text tower."""

    def __init__(self, backbone, prompt_learner):
        super().__init__(backbone)
        self.prompt_learner = prompt_learner

    def class_embeddings(self):
        text = self.backbone.encode_text_embeddings(self.prompt_learner(), self.prompt_learner.tokens)
        return F.normalize(text, dim=-1)

    def embedding_logits(self, image_embeddings):
        """Logits of unit-norm image embeddings (training: the image tower has run already)."""
        return self.logits(image_embeddings, self.class_embeddings())


@register_trainer
class CoOp(BackdoorTrainer):
    """Context optimisation on a frozen backbone, optionally on a poisoned few-shot set."""

    PROMPT_KEYS = ("TRAINER.COOP",)
    CFG_KEYS = EVAL_KEYS + POISON_KEYS + ATTACK_KEYS + PROMPT_KEYS
    learner_class, model_class = PromptLearner, PromptCLIP

    @classmethod
    def clean_learner(cls):
        """The clean trainer of this learner: a defender re-tunes a received prompt with it."""
        return CoOp

    @classmethod
    def check_cfg(cls, cfg):
        super().check_cfg(cfg)
        opts = cfg.TRAINER.COOP
        if opts.CLASS_TOKEN_POSITION not in CLASS_TOKEN_POSITIONS:
            raise InputError(f"TRAINER.COOP.CLASS_TOKEN_POSITION {opts.CLASS_TOKEN_POSITION!r} is unknown; "
                             f"choose from {', '.join(CLASS_TOKEN_POSITIONS)}")
        if opts.BACKBONE_DTYPE not in BACKBONE_DTYPES:
            raise InputError(f"TRAINER.COOP.BACKBONE_DTYPE {opts.BACKBONE_DTYPE!r} is unknown; choose from "
                             f"{', '.join(BACKBONE_DTYPES)}")
        if cfg.TRAINER.PREC == "fp16" and opts.BACKBONE_DTYPE != "fp32":
            raise InputError(f"TRAINER.PREC fp16 casts the whole model to fp16, so TRAINER.COOP.BACKBONE_DTYPE "
                             f"{opts.BACKBONE_DTYPE} cannot apply; set BACKBONE_DTYPE fp32 or choose another TRAINER.PREC")
        if opts.N_CTX < 1 and not opts.CTX_INIT:
            raise InputError(f"TRAINER.COOP.N_CTX {opts.N_CTX} must be at least 1 (or set TRAINER.COOP.CTX_INIT)")

    def backbone_dtype(self):
        if self.precision() == "fp16":
            return super().backbone_dtype()
        return BACKBONE_DTYPES[self.cfg.TRAINER.COOP.BACKBONE_DTYPE]

    def build_model(self):
        cfg = self.cfg
        # Frozen, so its weights are cast once (backbone_dtype) rather than by autocast at every use.
        backbone = freeze(self.build_backbone())
        print(f"Building prompt learner on {backbone.name} ({len(self.dm.dataset.classnames)} classes)")
        self.prompt_learner = self.learner_class(cfg, self.dm.dataset.classnames, backbone,
                                                 self.trainable_dtype()).to(self.device)
        self.model = self.model_class(backbone, self.prompt_learner)
        if self.trigger is not None:
            self.trigger.to(self.device)
        self.optim = build_optimizer(self.prompt_learner, cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, cfg.OPTIM)
        self.register_model("prompt_learner", self.prompt_learner, self.optim, self.sched)

    def forward_backward(self, batch):
        images, labels, poisoned, cross = self.parse_batch_train(batch)
        with torch.no_grad():
            images = self.apply_trigger(images, poisoned, cross)
        with self.autocast(self.precision()):
            with torch.no_grad():
                image_embeddings = self.model.image_embeddings(images)
            logits = self.model.embedding_logits(image_embeddings).float()
        loss = F.cross_entropy(logits, labels)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(logits, labels)[0].item(),
                **split_losses(logits.detach(), labels, poisoned)}
