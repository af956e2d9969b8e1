"""QuiltNet (ViT-B/32 trained on histopathology video frames): an open_clip CLIP with an OpenAI-style
text tower, so the CLIP backbone class with QuiltNet's hub repo as default weights."""
from .clip import OpenCLIPBackbone
from .registry import register_backbone


@register_backbone("quiltnet")
class QuiltNetBackbone(OpenCLIPBackbone):
    default_weights = "wisdomik/QuiltNet-B-32"
    label, report_order = "QuiltNet", 3
    standin_seed = 2
