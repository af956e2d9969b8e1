"""The one interface every Med-FM backbone offers the trainers.

A trainer never branches on the model: prompt learning (CoOp, BAPLe), zero-shot and full
fine-tuning only call what is declared here. Model files implement the abstract methods and
register themselves with ``@register_backbone("<name>")`` (see ``clip_models/registry.py``).

Conventions
- Images enter in [0, 1] pixel space, shape [B, 3, H, W] with H = W = ``image_size``; each
  backbone normalises with its own mean/std *inside* ``encode_image``, so a trigger added by a
  trainer lives in pixel space.
- Text enters as token ids padded to ``context_length``. Every tokenizer puts exactly one
  start token (SOT / [CLS]) first, so for the template ``"X X ... X <class name>."`` the
  ``n_ctx`` placeholder tokens sit at positions 1..n_ctx; ``placeholder`` is a word the
  tokenizer maps to exactly one token.
- Features are returned unnormalised, in the joint embedding space (``embed_dim``).
"""
from dataclasses import dataclass

import torch
import torch.nn as nn

from common.errors import InputError


@dataclass
class TokenizedText:
    """Token ids of a batch of texts, padded to the backbone's context length."""

    input_ids: torch.Tensor  # [N, L] long
    attention_mask: torch.Tensor  # [N, L] long, 1 on real tokens (special tokens included)

    @property
    def lengths(self):
        """Number of real tokens per text (the end token included)."""
        return self.attention_mask.sum(dim=1)

    def to(self, device):
        return TokenizedText(self.input_ids.to(device), self.attention_mask.to(device))


def check_setting(key, value, choices):
    """A one-line ``InputError`` unless ``value`` (of ``MODEL.BACKBONE.<key>``) is one of ``choices``."""
    if value not in choices:
        raise InputError(f"MODEL.BACKBONE.{key}={value!r} is not valid; choose one of: "
                         f"{', '.join(map(str, choices))}")


class MedFMBackbone(nn.Module):
    """A frozen-able CLIP-style model: image tower, text tower, projections and logit scale."""

    name = ""  # set by @register_backbone
    placeholder = "X"
    label = ""  # how tables name the model (e.g. "BiomedCLIP"); "" = its name
    report_order = 100  # the paper's column order in reports (MedCLIP 0 ... CLIP 4); later models after, by name

    # Set by each model in __init__.
    image_size: int
    image_mean: tuple
    image_std: tuple
    context_length: int  # maximum number of text tokens, specials included
    ctx_dim: int  # width of the token embeddings that learnable context vectors replace
    embed_dim: int  # width of the joint image-text space

    # True when running the text tower on prompts cut to their longest real length gives the same
    # features as on the padded context (causal towers pooled at the end token; BERT with a mask).
    exact_under_truncation = True

    # {MODEL.BACKBONE key: keyword argument of __init__} of the settings this model reads
    # (``registry.backbone_options``); keys of other models' settings do not concern it.
    setting_keys = {}

    @classmethod
    def check_options(cls, **options):
        """Raise ``InputError`` for an option value the model cannot take (before anything is loaded)."""

    @classmethod
    def write_standin(cls, cache_dir, full_size=False):
        """Write a randomly initialised stand-in of this model (tiny, or at the real size) where its
        loading code looks under the hub cache ``cache_dir``, with the helpers of
        ``clip_models.standins``; return its ``MODEL.BACKBONE.WEIGHTS`` value. Every model has one:
        the tests and benchmarks run on them."""
        raise NotImplementedError(f"{cls.__name__} has no stand-in writer (write_standin)")

    def library_text_features(self, texts):
        """[N, embed_dim] features of plain sentences through the model library's own tokenizer and
        text forward: the reference a prompt spliced from the same words must reproduce (tests)."""
        raise NotImplementedError

    @classmethod
    def declared_image_size(cls, weights=""):
        """The input size ``weights`` declare in their config file, read without loading them (so a
        config can be checked before anything heavy); None when the model cannot tell cheaply."""
        return None

    def __init__(self):
        super().__init__()
        # Trainers may switch this off (e.g. a benchmark's "before" measurement).
        self.truncate_prompts = self.exact_under_truncation
        self.register_buffer("_pixel_mean", torch.zeros(1, 3, 1, 1), persistent=False)
        self.register_buffer("_pixel_std", torch.ones(1, 3, 1, 1), persistent=False)

    def _set_normalisation(self, mean, std):
        self.image_mean, self.image_std = tuple(mean), tuple(std)
        self._pixel_mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
        self._pixel_std.copy_(torch.tensor(std).view(1, 3, 1, 1))

    def normalize(self, images):
        return (images - self._pixel_mean.to(images.dtype)) / self._pixel_std.to(images.dtype)

    @property
    def dtype(self):
        """The dtype of the weights: float32, unless a trainer cast the frozen backbone to bf16 or fp16."""
        return self._pixel_mean.dtype

    # ---- image side -------------------------------------------------------------------------
    def encode_image(self, images):
        """[B, 3, H, W] images in [0, 1] -> [B, embed_dim] image features (in the weights' dtype when
        the backbone was cast: inputs follow the weights)."""
        return self.encode_normalized_image(self.normalize(images).to(self.dtype))

    def encode_normalized_image(self, pixel_values):
        raise NotImplementedError

    def image_encoder_parameters(self):
        """Parameters that full fine-tuning trains (image tower and its projection)."""
        raise NotImplementedError

    # ---- text side --------------------------------------------------------------------------
    def tokenize(self, texts):
        """list[str] -> TokenizedText padded to ``context_length``."""
        raise NotImplementedError

    def token_embedding(self, input_ids):
        """[N, L] ids -> [N, L, ctx_dim]: the raw token embeddings, before positions are added."""
        raise NotImplementedError

    def encode_text_embeddings(self, embeddings, tokens):
        """Token embeddings (possibly with learnable context spliced in) -> [N, embed_dim] features,
        pooled the model's own way; ``tokens`` gives the ids and mask of the same prompts."""
        embeddings = embeddings.to(self.dtype)
        if self.truncate_prompts:
            length = int(tokens.lengths.max())
            embeddings = embeddings[:, :length]
            tokens = TokenizedText(tokens.input_ids[:, :length], tokens.attention_mask[:, :length])
        return self._encode_text_embeddings(embeddings, tokens)

    def _encode_text_embeddings(self, embeddings, tokens):
        raise NotImplementedError

    def encode_text(self, texts):
        """list[str] -> [N, embed_dim] text features (zero-shot prompts, classifier initialisation)."""
        tokens = self.tokenize(texts).to(self._pixel_mean.device)
        return self.encode_text_embeddings(self.token_embedding(tokens.input_ids), tokens)

    def count_tokens(self, text):
        """Number of tokens ``text`` takes inside a prompt, without special tokens."""
        raise NotImplementedError

    def word_embeddings(self, text):
        """[count_tokens(text), ctx_dim]: the raw token embeddings of ``text`` without special tokens,
        detached (context initialised from words, CoOp's CTX_INIT; n_ctx is then its row count)."""
        tokens = self.tokenize([text]).to(self._pixel_mean.device)
        with torch.no_grad():
            return self.token_embedding(tokens.input_ids)[0, 1:1 + self.count_tokens(text)].clone()

    @property
    def logit_scale(self):
        """The log of the softmax temperature's inverse (CLIP's ``logit_scale``; use ``.exp()``)."""
        raise NotImplementedError
