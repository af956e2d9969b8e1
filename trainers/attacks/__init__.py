"""Poisoning attacks, selected by ``BACKDOOR.ATTACK`` and used alike by prompt learning (CoOp) and
full fine-tuning. Each is one small module implementing ``Trigger``; a builder registered here
turns the config into it. BAPLe's own learnable trigger is built by its trainer."""
from configs.errors import InputError

from .base import POSITIONS, Trigger
from .fiba import FrequencyTrigger, build_fiba
from .noise import LearnableNoise
from .patch import PatchTrigger, build_badnets, build_baple_patch, build_patch
from .wanet import WarpTrigger, build_wanet

_BUILDERS = {}


def register_attack(name):
    """Decorator registering ``builder(cfg, image_size) -> Trigger`` under ``name``."""
    def wrapper(builder):
        if name in _BUILDERS:
            raise KeyError(f"Attack {name!r} is already registered")
        _BUILDERS[name] = builder
        return builder

    return wrapper


def available_attacks():
    return ["none"] + sorted(_BUILDERS)


def build_attack(cfg, image_size):
    """The trigger of ``cfg.BACKDOOR.ATTACK``, or None for ``none``."""
    name = cfg.BACKDOOR.ATTACK
    if name == "none":
        return None
    if name not in _BUILDERS:
        raise InputError(f"Unknown BACKDOOR.ATTACK {name!r}; choose from {', '.join(available_attacks())}")
    return _BUILDERS[name](cfg, image_size)


register_attack("badnets")(build_badnets)
register_attack("wanet")(build_wanet)
register_attack("fiba")(build_fiba)

__all__ = ["POSITIONS", "FrequencyTrigger", "LearnableNoise", "PatchTrigger", "Trigger", "WarpTrigger",
           "available_attacks", "build_attack", "build_baple_patch", "build_patch", "register_attack"]
