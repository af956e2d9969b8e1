"""Dataset classes, registered into the engine's DATASET_REGISTRY on import."""
