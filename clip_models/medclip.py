"""MedCLIP-ViT, rebuilt with transformers classes alone.

The ``medclip`` package (0.0.3) does not import with transformers 5 and moves inputs to CUDA
unconditionally, so this file rebuilds its ``MedCLIPModel(vision_cls=MedCLIPVisionModelViT)``: a
``SwinModel`` (config of ``microsoft/swin-tiny-patch4-window7-224``) pooled by its average pooler, a
``BertModel`` (config and tokenizer of ``emilyalsentzer/Bio_ClinicalBERT``) pooled as the mean over all
positions of hidden states 1, 2 and the last, bias-free projections to 512 and a ``logit_scale``. Module
names follow the package, so the released ``pytorch_model.bin`` loads into it after the renames below.

Weights: the released folder (holding ``pytorch_model.bin``) or that file. Default: ``$MEDCLIP_WEIGHTS``
when set, else ``pretrained/medclip-vit`` (the package's own default folder, relative to the working
directory). The two tower repos' configs and the BERT vocabulary come from the hub cache, as in the package.

Text: MedCLIP's pooling averages hidden states over every position, padding included, so an embedding
depends on how far a prompt is padded. MedCLIP's own prompt code tokenises a group of prompts with
``padding=True`` (to the longest of the group; a single prompt is not padded at all).
``MODEL.BACKBONE.MEDCLIP_PADDING`` (``padding``):

- ``own`` (default): every prompt is encoded as MedCLIP encodes it alone, unpadded, whatever the other
  prompts of the batch: the mean runs over its real tokens only (the attention mask keeps the padding
  out of the real tokens' hidden states, so this is the unpadded encoding up to float rounding, in one
  batch). Prompts pad to 77, the ``model_max_length`` MedCLIP's processor sets, and the tower runs on
  them cut to their longest real length (``exact_under_truncation``).
- ``reference``: the reference BAPLe code's tokenisation, every prompt padded and cut to 25 tokens
  (``padding='max_length', max_length=25, truncation=True``: behind 16 context tokens the end of a long
  class name is cut) and averaged over all 25 positions, padding included.

The logit scale: MedCLIP clamps it to [0, ln 100] when it computes logits;
``MODEL.BACKBONE.MEDCLIP_LOGIT_SCALE_CLAMP False`` takes the plain exponential, as the reference code does.

Images are normalised with CLIP's mean and std, as in the reference BAPLe code (MedCLIP's own processor
uses a grey-level mean 0.586 and std 0.280).
"""
import math
import os

import torch
import torch.nn as nn

from common.errors import InputError

from .base import MedFMBackbone, TokenizedText, check_setting
from .loading import explain_missing_weights, hub_file, read_json
from .registry import register_backbone

SWIN_ID = "microsoft/swin-tiny-patch4-window7-224"
BERT_ID = "emilyalsentzer/Bio_ClinicalBERT"
WEIGHTS_ENV = "MEDCLIP_WEIGHTS"
CHECKPOINT_NAME = "pytorch_model.bin"
EMBED_DIM = 512
CONTEXT_LENGTH = 77
PADDINGS = ("own", "reference")
REFERENCE_PROMPT_LENGTH = 25  # the reference BAPLe code's max_length for MedCLIP prompts
HOW_TO_PROVIDE = (f"download and unzip the released MedCLIP-ViT weights (MedCLIP's GitHub README) and set "
                  f"MODEL.BACKBONE.WEIGHTS (or ${WEIGHTS_ENV}) to that folder or its {CHECKPOINT_NAME}")

# transformers 5 renamed Swin's inner layers (its conversion_mapping.py, entry "swin"); the released
# checkpoint was saved under transformers 4. Pairs (transformers 4 name, transformers 5 name), applied
# in order to keys under SWIN_PREFIX.
SWIN_PREFIX = "vision_model.model."
SWIN_RENAMES = (
    ("attention.self.query", "attention.q_proj"),
    ("attention.self.key", "attention.k_proj"),
    ("attention.self.value", "attention.v_proj"),
    ("attention.self.relative_position_", "attention.relative_position_bias.relative_position_"),
    ("attention.output.dense", "attention.o_proj"),
    ("intermediate.dense", "mlp.fc1"),
    ("output.dense", "mlp.fc2"),
)


def _rename(key, renames):
    if key.startswith(SWIN_PREFIX):
        for old, new in renames:
            key = key.replace(old, new)
    return key


class MedCLIPVision(nn.Module):
    def __init__(self, config, embed_dim):
        from transformers import SwinModel

        super().__init__()
        self.model = SwinModel(config)
        self.projection_head = nn.Linear(self.model.num_features, embed_dim, bias=False)

    def forward(self, pixel_values):
        return self.projection_head(self.model(pixel_values=pixel_values).pooler_output)


class MedCLIPText(nn.Module):
    def __init__(self, config, embed_dim):
        from transformers import BertModel

        super().__init__()
        self.model = BertModel(config)
        self.projection_head = nn.Linear(config.hidden_size, embed_dim, bias=False)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, pool_mask=None):
        """MedCLIP's text features; ``pool_mask`` ([N, L], 1 on the positions to average), when given,
        restricts the mean over positions to those (None: MedCLIP's own mean over all positions)."""
        out = self.model(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                         output_hidden_states=True)
        hidden = out.hidden_states  # embeddings, then one entry per layer
        layers = torch.stack([hidden[1], hidden[2], hidden[-1]], dim=1)  # [N, 3, L, D]
        # MedCLIP's pooling: over the positions, then over layers 1, 2 and the last.
        if pool_mask is None:
            pooled = layers.mean(dim=2)
        else:
            weights = pool_mask.to(layers.dtype)[:, None, :, None]
            pooled = (layers * weights).sum(dim=2) / weights.sum(dim=2)
        return self.projection_head(pooled.mean(dim=1))


class MedCLIPModel(nn.Module):
    """The package's MedCLIPModel (ViT variant) with the same parameter names."""

    def __init__(self, vision_config, text_config, embed_dim=EMBED_DIM):
        super().__init__()
        self.vision_model = MedCLIPVision(vision_config, embed_dim)
        self.text_model = MedCLIPText(text_config, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def _unsaved_buffers(self):
        return {name for name, _ in self.named_buffers()} - set(self.state_dict())

    def load_released_state_dict(self, state_dict):
        """Loads a state dict saved by the medclip package under transformers 4 (Swin keys renamed,
        buffers that transformers 5 no longer saves dropped). Returns load_state_dict's incompatible keys."""
        unsaved = self._unsaved_buffers()
        renamed = {_rename(key, SWIN_RENAMES): value for key, value in state_dict.items()}
        return self.load_state_dict({k: v for k, v in renamed.items() if k not in unsaved}, strict=False)

    def released_state_dict(self):
        """This model's weights in the released (transformers 4) format, saved buffers included."""
        state = dict(self.state_dict())
        state.update({name: buffer for name, buffer in self.named_buffers() if name.endswith(
            ("relative_position_index", "embeddings.position_ids"))})
        reverse = tuple((new, old) for old, new in reversed(SWIN_RENAMES))
        return {_rename(key, reverse): value for key, value in state.items()}


def checkpoint_file(weights):
    """The released checkpoint file named by ``weights`` (its folder or the file), or an InputError."""
    path = os.path.abspath(os.path.expanduser(weights))
    if os.path.isdir(path):
        path = os.path.join(path, CHECKPOINT_NAME)
    if not os.path.isfile(path):
        raise InputError(f"medclip: weights not found: {path}; {HOW_TO_PROVIDE}")
    return path


@register_backbone("medclip")
class MedCLIPBackbone(MedFMBackbone):
    default_weights = "pretrained/medclip-vit"
    label, report_order = "MedCLIP", 0
    setting_keys = {"MEDCLIP_PADDING": "padding", "MEDCLIP_LOGIT_SCALE_CLAMP": "clamp_logit_scale"}

    @classmethod
    def write_standin(cls, cache_dir, full_size=False):
        from .standins import write_medclip

        return write_medclip(cache_dir, seed=5, full_size=full_size)

    @classmethod
    def check_options(cls, padding="own", clamp_logit_scale=True):
        check_setting("MEDCLIP_PADDING", padding, PADDINGS)
        check_setting("MEDCLIP_LOGIT_SCALE_CLAMP", clamp_logit_scale, (True, False))

    @classmethod
    def resolve_weights(cls, weights=""):
        return weights or os.environ.get(WEIGHTS_ENV) or cls.default_weights

    @classmethod
    def declared_image_size(cls, weights=""):
        checkpoint_file(cls.resolve_weights(weights))  # missing weights are named here already
        return read_json(hub_file(cls.name, SWIN_ID, "config.json")).get("image_size")

    def __init__(self, weights="", padding="own", clamp_logit_scale=True):
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from transformers import BertConfig, BertTokenizer, SwinConfig

        super().__init__()
        self.check_options(padding, clamp_logit_scale)
        self.padding, self.clamp_logit_scale = padding, clamp_logit_scale
        # Own padding: features do not depend on the padded length, so prompts may run cut to it.
        self.exact_under_truncation = self.truncate_prompts = padding == "own"
        self.weights = self.resolve_weights(weights)
        checkpoint = checkpoint_file(self.weights)
        hub_file(self.name, SWIN_ID, "config.json")
        hub_file(self.name, BERT_ID, "config.json")
        with explain_missing_weights(self.name, f"{SWIN_ID} and {BERT_ID} (tower configs and vocabulary)"):
            vision_config = SwinConfig.from_pretrained(SWIN_ID)
            text_config = BertConfig.from_pretrained(BERT_ID)
            self.tokenizer = BertTokenizer.from_pretrained(BERT_ID)

        self.model = MedCLIPModel(vision_config, text_config)
        try:
            incompatible = self.model.load_released_state_dict(
                torch.load(checkpoint, map_location="cpu", weights_only=True))
        except RuntimeError as error:  # shapes that do not match the tower configs
            raise InputError(f"medclip: {checkpoint} does not fit MedCLIP-ViT with the configs of {SWIN_ID} and "
                             f"{BERT_ID}: {str(error).splitlines()[-1].strip()}") from None
        if incompatible.missing_keys or incompatible.unexpected_keys:
            raise InputError(f"medclip: {checkpoint} is not a MedCLIP-ViT checkpoint "
                             f"({len(incompatible.missing_keys)} missing keys, e.g. {incompatible.missing_keys[:1]}; "
                             f"{len(incompatible.unexpected_keys)} unexpected, "
                             f"e.g. {incompatible.unexpected_keys[:1]})")
        self.model.eval()
        self.image_size = vision_config.image_size
        self.context_length = CONTEXT_LENGTH
        # Token ids are padded (and cut) to this length; the reference's 25 cuts longer prompts.
        self.prompt_length = CONTEXT_LENGTH if padding == "own" else REFERENCE_PROMPT_LENGTH
        self.ctx_dim = text_config.hidden_size
        self.embed_dim = EMBED_DIM
        self._set_normalisation(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)

    def encode_normalized_image(self, pixel_values):
        return self.model.vision_model(pixel_values)

    def image_encoder_parameters(self):
        return list(self.model.vision_model.parameters())

    def tokenize(self, texts):
        encoded = self.tokenizer(list(texts), padding="max_length", max_length=self.prompt_length, truncation=True,
                                 return_tensors="pt")
        return TokenizedText(encoded["input_ids"], encoded["attention_mask"])

    def library_text_features(self, texts):
        """MedCLIP's own text path: its prompt code tokenises with ``padding=True`` (to a group's longest
        prompt), so a prompt alone goes through unpadded; the reference's padding pads every prompt to 25."""
        if self.padding != "own":
            tokens = self.tokenize(texts)
            return self.model.text_model(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask)
        rows = []
        for text in texts:
            encoded = self.tokenizer([text], return_tensors="pt")
            rows.append(self.model.text_model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]))
        return torch.cat(rows)

    def token_embedding(self, input_ids):
        return self.model.text_model.model.embeddings.word_embeddings(input_ids)

    def _encode_text_embeddings(self, embeddings, tokens):
        mask = tokens.attention_mask.to(embeddings.device)
        pool_mask = mask if self.padding == "own" else None
        return self.model.text_model(inputs_embeds=embeddings, attention_mask=mask, pool_mask=pool_mask)

    def count_tokens(self, text):
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def logit_scale(self):
        # MedCLIP clamps its scale to [0, ln 100] whenever it computes logits (compute_logits).
        scale = self.model.logit_scale
        return scale.clamp(0, math.log(100)) if self.clamp_logit_scale else scale
