"""Poisoning attacks, selected by ``BACKDOOR.ATTACK`` and used alike by prompt learning (CoOp) and
full fine-tuning. Each is one small module implementing ``Trigger``; a builder registered in
``ATTACK_REGISTRY`` (a Dassl ``Registry``) turns the config into it. BAPLe's own learnable trigger is
built by its trainer."""
from common.errors import InputError
from dassl_compat import Registry, register_as

from .base import POSITIONS, Trigger

# The key a trainer reads to use these attacks; with it, it reads the chosen attack's own node,
# BACKDOOR.<NAME> (upper case), e.g. BACKDOOR.WANET (see trainers/validation.py).
ATTACK_KEYS = ("BACKDOOR.ATTACK",)

ATTACK_REGISTRY = Registry("ATTACK")


def register_attack(name):
    """Decorator registering ``builder(cfg, image_size) -> Trigger`` as ``BACKDOOR.ATTACK name``; the
    builder reads its parameters from ``BACKDOOR.<NAME>``."""
    return register_as(ATTACK_REGISTRY, name)


def available_attacks():
    return ["none"] + sorted(ATTACK_REGISTRY.registered_names())


def build_attack(cfg, image_size):
    """The trigger of ``cfg.BACKDOOR.ATTACK``, or None for ``none``."""
    name = cfg.BACKDOOR.ATTACK
    if name == "none":
        return None
    if name not in ATTACK_REGISTRY.registered_names():
        raise InputError(f"Unknown BACKDOOR.ATTACK {name!r}; choose from {', '.join(available_attacks())}")
    return ATTACK_REGISTRY.get(name)(cfg, image_size)


# Each attack module registers its builder with @register_attack when imported.
from .fiba import FrequencyTrigger  # noqa: E402
from .noise import LearnableNoise  # noqa: E402
from .patch import PatchTrigger, build_baple_patch, build_patch  # noqa: E402
from .wanet import WarpTrigger  # noqa: E402

__all__ = ["ATTACK_KEYS", "ATTACK_REGISTRY", "POSITIONS", "FrequencyTrigger", "LearnableNoise", "PatchTrigger", "Trigger",
           "WarpTrigger", "available_attacks", "build_attack", "build_baple_patch", "build_patch", "register_attack"]
