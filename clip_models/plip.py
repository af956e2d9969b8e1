"""PLIP: a ``transformers.CLIPModel`` (ViT-B/32, CLIP text transformer) fine-tuned on pathology
image-text pairs, with its ``CLIPTokenizer``.

Weights: a hub repo or local folder in transformers' format (``config.json``, weights, tokenizer files).
"""
import contextlib
import os

from .base import MedFMBackbone, TokenizedText
from .loading import explain_missing_weights, hub_file, hub_id, local_path, read_json
from .registry import register_backbone


@register_backbone("plip")
class PLIPBackbone(MedFMBackbone):
    default_weights = "vinid/plip"
    label, report_order = "PLIP", 2

    @classmethod
    def write_standin(cls, cache_dir, full_size=False):
        from .standins import write_plip

        return write_plip(cache_dir, cls.default_weights, seed=4, full_size=full_size)

    @classmethod
    def _config_file(cls, weights):
        """(transformers' source: local folder or hub id, path of its config.json)."""
        folder = local_path(hub_id(weights))
        if folder is not None:
            return folder, os.path.join(folder, "config.json")
        return hub_id(weights), hub_file(cls.name, hub_id(weights), "config.json")

    @classmethod
    def declared_image_size(cls, weights=""):
        _, config = cls._config_file(weights or cls.default_weights)
        if not os.path.isfile(config):  # a local folder without it: loading names the problem
            return None
        return read_json(config).get("vision_config", {}).get("image_size")

    def __init__(self, weights=""):
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
        from transformers import CLIPModel, CLIPTokenizer

        super().__init__()
        self.weights = weights or self.default_weights
        source, _ = self._config_file(self.weights)
        with explain_missing_weights(self.name, self.weights):
            self.model = CLIPModel.from_pretrained(source).eval()
            self.tokenizer = CLIPTokenizer.from_pretrained(source)
        config = self.model.config
        self.image_size = config.vision_config.image_size
        self.context_length = config.text_config.max_position_embeddings
        self.ctx_dim = config.text_config.hidden_size
        self.embed_dim = config.projection_dim
        self._set_normalisation(OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)  # PLIP's preprocessor uses CLIP's

    def encode_normalized_image(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output

    def library_text_features(self, texts):
        tokens = self.tokenize(texts)
        return self.model.get_text_features(input_ids=tokens.input_ids,
                                            attention_mask=tokens.attention_mask).pooler_output

    def image_encoder_parameters(self):
        return list(self.model.vision_model.parameters()) + list(self.model.visual_projection.parameters())

    def tokenize(self, texts):
        encoded = self.tokenizer(list(texts), padding="max_length", max_length=self.context_length, truncation=True,
                                 return_tensors="pt")
        return TokenizedText(encoded["input_ids"], encoded["attention_mask"])

    def token_embedding(self, input_ids):
        return self.model.text_model.embeddings.token_embedding(input_ids)

    def _encode_text_embeddings(self, embeddings, tokens):
        # CLIPTextModel's own forward (positions, causal mask, end-token pooling), with its token-embedding
        # lookup answered by the given embeddings: the model's code runs unchanged.
        with self._token_embedding_replaced_by(embeddings):
            return self.model.get_text_features(input_ids=tokens.input_ids.to(embeddings.device),
                                                attention_mask=tokens.attention_mask.to(embeddings.device)
                                                ).pooler_output

    @contextlib.contextmanager
    def _token_embedding_replaced_by(self, embeddings):
        def replace(module, inputs, output):
            if output.shape != embeddings.shape:
                raise ValueError(f"embeddings {tuple(embeddings.shape)} do not match the token ids "
                                 f"{tuple(output.shape)}")
            return embeddings.to(output.dtype)

        handle = self.model.text_model.embeddings.token_embedding.register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()

    def count_tokens(self, text):
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @property
    def logit_scale(self):
        return self.model.logit_scale

