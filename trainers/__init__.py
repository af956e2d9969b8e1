"""Trainers, registered into the engine's TRAINER_REGISTRY on import."""
from . import badclip, baple, cocoop, coop, finetune, zeroshot  # noqa: F401
