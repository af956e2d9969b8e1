"""Trainers, registered into the engine's TRAINER_REGISTRY on import."""
from . import baple, coop, zeroshot  # noqa: F401
