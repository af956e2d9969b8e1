"""OpenAI CLIP ViT-B/32 through open_clip, and the class every open_clip ``CLIP`` with an OpenAI-style
text tower (causal transformer, BPE tokenizer, pooled at the end token) shares: QuiltNet is the
same class with other weights (``quiltnet.py``).

Weights: a hub repo or local folder in open_clip's format (``open_clip_config.json`` + weights).
The default, ``timm/vit_base_patch32_clip_224.openai``, is the repo open_clip itself downloads for
``create_model('ViT-B-32', pretrained='openai')``.
"""
import torch

from configs.errors import InputError

from .base import MedFMBackbone, TokenizedText
from .loading import load_open_clip, open_clip_image_size
from .registry import register_backbone


@register_backbone("clip")
class OpenCLIPBackbone(MedFMBackbone):
    default_weights = "timm/vit_base_patch32_clip_224.openai"

    @classmethod
    def declared_image_size(cls, weights=""):
        return open_clip_image_size(cls.name, weights or cls.default_weights)

    def __init__(self, weights=""):
        import open_clip

        super().__init__()
        self.weights = weights or self.default_weights
        self.model, self.tokenizer = load_open_clip(self.name, self.weights)
        if not isinstance(self.model, open_clip.CLIP):
            raise InputError(f"{self.name}: MODEL.BACKBONE.WEIGHTS={self.weights!r} is a {type(self.model).__name__}, "
                             "not an open_clip CLIP with an OpenAI-style text tower")
        self.image_size = self.model.visual.image_size[0]
        self.context_length = self.model.context_length
        self.ctx_dim = self.model.token_embedding.embedding_dim
        self.embed_dim = self.model.visual.output_dim
        self._set_normalisation(self.model.visual.preprocess_cfg["mean"], self.model.visual.preprocess_cfg["std"])

    def encode_normalized_image(self, pixel_values):
        return self.model.encode_image(pixel_values)

    def image_encoder_parameters(self):
        return list(self.model.visual.parameters())

    def tokenize(self, texts):
        input_ids = self.tokenizer(list(texts), context_length=self.context_length)
        # Real tokens run up to the end token; "!" has id 0, the padding id, so ids != 0 would not do.
        end = (input_ids == self.tokenizer.eot_token_id).int().argmax(dim=1, keepdim=True)
        attention_mask = (torch.arange(input_ids.shape[1]) <= end).long()
        return TokenizedText(input_ids, attention_mask)

    def token_embedding(self, input_ids):
        return self.model.token_embedding(input_ids)

    def _encode_text_embeddings(self, embeddings, tokens):
        # open_clip's CLIP.encode_text, from embeddings, for any length up to context_length.
        length = embeddings.shape[1]
        x = embeddings + self.model.positional_embedding[:length].to(embeddings.dtype)
        x = self.model.transformer(x, attn_mask=self.model.attn_mask[:length, :length])
        x = self.model.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.lengths.to(x.device) - 1]
        projection = self.model.text_projection
        return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection

    def count_tokens(self, text):
        return len(self.tokenizer.encode(text))

    @property
    def logit_scale(self):
        return self.model.logit_scale
