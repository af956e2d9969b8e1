"""OpenAI CLIP ViT-B/32 through open_clip, and the class every open_clip ``CLIP`` with an OpenAI-style
text tower (causal transformer, BPE tokenizer, pooled at the end token) shares: QuiltNet is the
same class with other weights (``quiltnet.py``).

Weights: a hub repo or local folder in open_clip's format (``open_clip_config.json`` + weights).
The default, ``timm/vit_base_patch32_clip_224.openai``, is the repo open_clip itself downloads for
``create_model('ViT-B-32', pretrained='openai')``.
"""
import torch

from common.errors import InputError

from .base import TokenizedText
from .open_clip_base import OpenClipBackboneBase
from .registry import register_backbone


@register_backbone("clip")
class OpenCLIPBackbone(OpenClipBackboneBase):
    default_weights = "timm/vit_base_patch32_clip_224.openai"
    label, report_order = "CLIP", 4
    standin_seed = 1
    hub_quick_gelu = True  # OpenAI's hub config sets quick_gelu; the stand-in writes what the hub holds

    @classmethod
    def write_standin(cls, cache_dir, full_size=False):
        from .standins import write_open_clip_clip

        return write_open_clip_clip(cache_dir, cls.default_weights, seed=cls.standin_seed, full_size=full_size,
                                    quick_gelu=cls.hub_quick_gelu)

    def __init__(self, weights="", activation="auto"):
        super().__init__(weights, activation)
        self.context_length = self.model.context_length
        self.ctx_dim = self.model.token_embedding.embedding_dim
        self.embed_dim = self.model.visual.output_dim

    def check_model(self):
        import open_clip

        if not isinstance(self.model, open_clip.CLIP):
            raise InputError(f"{self.name}: MODEL.BACKBONE.WEIGHTS={self.weights!r} is a {type(self.model).__name__}, "
                             "not an open_clip CLIP with an OpenAI-style text tower")

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
