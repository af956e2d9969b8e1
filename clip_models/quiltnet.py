"""QuiltNet (ViT-B/32 trained on histopathology video frames): an open_clip CLIP with an OpenAI-style
text tower, so the CLIP backbone class with QuiltNet's hub repo as default weights.

Its hub config (``wisdomik/QuiltNet-B-32``, ``open_clip_config.json``) sets no ``quick_gelu``, so the
default ``MODEL.BACKBONE.ACTIVATION auto`` builds GELU, as the model card's own usage does; the
reference BAPLe code builds every ViT-B/32 with QuickGELU (``ACTIVATION quick_gelu``)."""
from .clip import OpenCLIPBackbone
from .registry import register_backbone


@register_backbone("quiltnet")
class QuiltNetBackbone(OpenCLIPBackbone):
    default_weights = "wisdomik/QuiltNet-B-32"
    label, report_order = "QuiltNet", 3
    standin_seed = 2
    hub_quick_gelu = False  # its hub config has no quick_gelu key
