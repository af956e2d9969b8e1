"""Med-FM backbones behind one prompt-learning interface (``MedFMBackbone``), built by name.

Importing the package registers every model file's backbone; ``build_backbone(cfg.MODEL.BACKBONE.NAME,
cfg.MODEL.BACKBONE.WEIGHTS)`` then returns one.
"""
from . import biomedclip, clip, medclip, plip, quiltnet  # noqa: F401  (each registers its backbone)
from .base import MedFMBackbone, TokenizedText
from .registry import BACKBONE_REGISTRY, available_backbones, backbone_class, build_backbone, register_backbone

__all__ = ["BACKBONE_REGISTRY", "MedFMBackbone", "TokenizedText", "available_backbones", "backbone_class",
           "build_backbone", "register_backbone"]
