"""What every backbone built by open_clip's factory shares (CLIP, QuiltNet, BiomedCLIP): loading from a
hub id or an open_clip folder, the input size its config declares, the image tower with the model's
own normalisation, and the logit scale. Subclasses check that the loaded model has the text tower they
drive (``check_model``) and give the text side."""
from .base import MedFMBackbone
from .loading import load_open_clip, open_clip_image_size


class OpenClipBackboneBase(MedFMBackbone):
    default_weights = ""

    @classmethod
    def declared_image_size(cls, weights=""):
        return open_clip_image_size(cls.name, weights or cls.default_weights)

    def __init__(self, weights=""):
        super().__init__()
        self.weights = weights or self.default_weights
        self.model, self.tokenizer = load_open_clip(self.name, self.weights)
        self.check_model()
        self.image_size = self.model.visual.image_size[0]
        self._set_normalisation(self.model.visual.preprocess_cfg["mean"], self.model.visual.preprocess_cfg["std"])

    def check_model(self):
        """Raise ``InputError`` when ``self.model`` is not the kind of open_clip model the subclass drives."""
        raise NotImplementedError

    def encode_normalized_image(self, pixel_values):
        return self.model.encode_image(pixel_values)

    def library_text_features(self, texts):
        return self.model.encode_text(self.tokenizer(list(texts)))

    def image_encoder_parameters(self):
        return list(self.model.visual.parameters())

    @property
    def logit_scale(self):
        return self.model.logit_scale
