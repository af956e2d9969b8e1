"""Trainers, registered into the engine's TRAINER_REGISTRY on import."""
from . import baple, coop, finetune, zeroshot  # noqa: F401
