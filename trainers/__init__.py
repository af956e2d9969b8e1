"""Trainers, registered into the engine's TRAINER_REGISTRY on import."""
