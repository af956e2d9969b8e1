"""Zero-shot classification with one hand-written prompt per class (the zero-shot baseline)."""
import torch
import torch.nn.functional as F

from .attacks import ATTACK_KEYS
from .base import EVAL_KEYS, BackdoorTrainer, CLIPClassifier, freeze, register_trainer
from .prompts import class_prompts


class ZeroShotCLIP(CLIPClassifier):
    def __init__(self, backbone, prompts):
        super().__init__(backbone)
        with torch.no_grad():
            self.register_buffer("text_embeddings", F.normalize(backbone.encode_text(prompts), dim=-1))

    def class_embeddings(self):
        return self.text_embeddings


@register_trainer
class ZeroShot(BackdoorTrainer):
    """No training: prompts are ``dataset.prompt_template`` filled with each class name."""

    CFG_KEYS = EVAL_KEYS + ATTACK_KEYS  # an attack's trigger is evaluated; nothing is poisoned

    def build_model(self):
        backbone = freeze(self.build_backbone())
        prompts = class_prompts(self.dm.dataset)
        print("Zero-shot prompts: " + " | ".join(prompts))
        self.model = ZeroShotCLIP(backbone, prompts)

    def train(self):
        """Nothing to learn: evaluate and write results.json."""
        self.test()
