"""BiomedCLIP: open_clip ``CustomTextCLIP`` with a timm ViT-B/16 image tower and a PubMedBERT text
tower (Hugging Face ``BertModel``), pooled at the [CLS] token and projected by an MLP.

Weights: a hub repo or local folder in open_clip's format; the BERT tower's config and tokenizer come
from the hub repo named in its ``open_clip_config.json`` (for a local folder: the tokenizer from the
folder itself, as open_clip does).

Prompts run through BERT's embedding layer once: the learnable context is spliced into the raw word
embeddings, and ``BertModel`` adds positions, token types and its LayerNorm. The reference BAPLe code
embedded the fixed prompt tokens fully (``embeddings(input_ids)``: words, positions, token types,
LayerNorm), spliced the context in and passed the result through ``BertModel``, so the fixed tokens
went through the embedding layer twice (positions and LayerNorm applied twice; the context once).
``MODEL.BACKBONE.BIOMEDCLIP_DOUBLE_EMBEDDING True`` (``double_embedding``) does the same: the token
embeddings prompt learners splice into are then the fully embedded tokens. Plain texts (zero-shot)
keep open_clip's single pass either way, as the reference's zero-shot code does.
"""
from common.errors import InputError

from .base import TokenizedText, check_setting
from .open_clip_base import OpenClipBackboneBase
from .registry import register_backbone


@register_backbone("biomedclip")
class BiomedCLIPBackbone(OpenClipBackboneBase):
    default_weights = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
    label, report_order = "BiomedCLIP", 1
    setting_keys = {"BIOMEDCLIP_DOUBLE_EMBEDDING": "double_embedding"}

    @classmethod
    def write_standin(cls, cache_dir, full_size=False):
        from .standins import write_biomedclip

        return write_biomedclip(cache_dir, cls.default_weights, seed=3, full_size=full_size)

    @classmethod
    def check_options(cls, double_embedding=False):
        check_setting("BIOMEDCLIP_DOUBLE_EMBEDDING", double_embedding, (False, True))

    def __init__(self, weights="", double_embedding=False):
        self.check_options(double_embedding)
        super().__init__(weights)
        self.double_embedding = double_embedding
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
        embeddings = self.text.transformer.embeddings
        return embeddings(input_ids=input_ids) if self.double_embedding else embeddings.word_embeddings(input_ids)

    def encode_text(self, texts):
        # Plain texts: open_clip's single embedding pass, whatever the prompt learners' setting.
        tokens = self.tokenize(texts).to(self._pixel_mean.device)
        return self.encode_text_embeddings(self.text.transformer.embeddings.word_embeddings(tokens.input_ids), tokens)

    def _encode_text_embeddings(self, embeddings, tokens):
        mask = tokens.attention_mask.to(embeddings.device)
        out = self.text.transformer(inputs_embeds=embeddings, attention_mask=mask)
        return self.text.proj(self.text.pooler(out, mask))

    def count_tokens(self, text):
        cleaned = self.tokenizer.clean_fn(text)
        return len(self.tokenizer.tokenizer(cleaned, add_special_tokens=False)["input_ids"])
