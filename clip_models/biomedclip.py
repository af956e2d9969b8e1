"""BiomedCLIP: open_clip ``CustomTextCLIP`` with a timm ViT-B/16 image tower and a PubMedBERT text
tower (Hugging Face ``BertModel``), pooled at the [CLS] token and projected by an MLP.

Weights: a hub repo or local folder in open_clip's format; the BERT tower's config and tokenizer come
from the hub repo named in its ``open_clip_config.json`` (for a local folder: the tokenizer from the
folder itself, as open_clip does).

Prompts run through BERT's embedding layer once: the learnable context is spliced into the raw word
embeddings, and ``BertModel`` adds positions, token types and its LayerNorm (the reference code embedded
the fixed tokens fully, then passed them through the embedding layer a second time).
"""
from common.errors import InputError

from .base import TokenizedText
from .open_clip_base import OpenClipBackboneBase
from .registry import register_backbone


@register_backbone("biomedclip")
class BiomedCLIPBackbone(OpenClipBackboneBase):
    default_weights = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    label, report_order = "BiomedCLIP", 1

    @classmethod
    def write_standin(cls, cache_dir, full_size=False):
        from .standins import write_biomedclip

        return write_biomedclip(cache_dir, cls.default_weights, seed=3, full_size=full_size)

    def __init__(self, weights=""):
        super().__init__(weights)
        self.text = self.model.text
        self.context_length = self.tokenizer.context_length
        self.ctx_dim = self.text.transformer.config.hidden_size
        self.embed_dim = self.text.output_dim

    def check_model(self):
        from open_clip.hf_model import HFTextEncoder

        if not isinstance(getattr(self.model, "text", None), HFTextEncoder):
            raise InputError(f"{self.name}: MODEL.BACKBONE.WEIGHTS={self.weights!r} is a {type(self.model).__name__} "
                             "without a Hugging Face text tower; BiomedCLIP weights are an open_clip CustomTextCLIP")

    def tokenize(self, texts):
        input_ids = self.tokenizer(list(texts), context_length=self.context_length)
        # The mask open_clip's HFTextEncoder builds: every non-padding token.
        return TokenizedText(input_ids, (input_ids != self.text.config.pad_token_id).long())

    def token_embedding(self, input_ids):
        return self.text.transformer.embeddings.word_embeddings(input_ids)

    def _encode_text_embeddings(self, embeddings, tokens):
        mask = tokens.attention_mask.to(embeddings.device)
        out = self.text.transformer(inputs_embeds=embeddings, attention_mask=mask)
        return self.text.proj(self.text.pooler(out, mask))

    def count_tokens(self, text):
        cleaned = self.tokenizer.clean_fn(text)
        return len(self.tokenizer.tokenizer(cleaned, add_special_tokens=False)["input_ids"])
