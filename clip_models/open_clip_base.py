"""What every backbone built by open_clip's factory shares (CLIP, QuiltNet, BiomedCLIP): loading from a
hub id or an open_clip folder, the input size its config declares, the image tower with the model's
own normalisation, and the logit scale. Subclasses check that the loaded model has the text tower they
drive (``check_model``) and give the text side.

``MODEL.BACKBONE.ACTIVATION`` (``activation``) picks the activation of open_clip's own towers (the
ViT and text transformer of a ``CLIP``): ``auto`` builds what the weights' ``open_clip_config.json``
says (its ``quick_gelu``; absent means GELU, as open_clip and the QuiltNet model card build it; the
OpenAI CLIP weights' config sets it, as OpenAI's own code uses QuickGELU), ``quick_gelu`` or ``gelu``
force one. Towers from timm or transformers (BiomedCLIP's) have their own activation and do not read
the setting.
"""
from .base import MedFMBackbone, check_setting
from .loading import load_open_clip, open_clip_image_size

ACTIVATIONS = {"auto": None, "quick_gelu": True, "gelu": False}  # value of open_clip's quick_gelu


class OpenClipBackboneBase(MedFMBackbone):
    default_weights = ""
    setting_keys = {"ACTIVATION": "activation"}

    @classmethod
    def check_options(cls, activation="auto"):
        check_setting("ACTIVATION", activation, tuple(ACTIVATIONS))

    @classmethod
    def declared_image_size(cls, weights=""):
        return open_clip_image_size(cls.name, weights or cls.default_weights)

    def __init__(self, weights="", activation="auto"):
        super().__init__()
        OpenClipBackboneBase.check_options(activation)  # subclasses check settings of their own
        self.weights = weights or self.default_weights
        quick_gelu = ACTIVATIONS[activation]
        overrides = {} if quick_gelu is None else {"quick_gelu": quick_gelu}
        self.model, self.tokenizer = load_open_clip(self.name, self.weights, **overrides)
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
