"""Which few-shot training samples are poisoned, drawn by the seed and recorded: an exact count (default), or
(``BACKDOOR.POISON_DRAW bernoulli``, as the reference code) each sample on its own with probability
POISON_PERCENTAGE / 100, so that the count varies with the seed."""
import math
from dataclasses import dataclass, field

import numpy as np

from common.errors import InputError

POISON_DRAWS = ("exact", "bernoulli")


@dataclass
class PoisonPlan:
    """Indices into the few-shot training set: ``poisoned`` get the trigger and the target label;
    ``cross`` (WaNet's noise mode) get the cross transform and keep their labels."""

    target: int
    poisoned: list = field(default_factory=list)
    cross: list = field(default_factory=list)

    def as_dict(self):
        return {"target": self.target, "count": len(self.poisoned), "indices": self.poisoned,
                "cross_count": len(self.cross), "cross_indices": self.cross}


def poison_count(num_samples, percentage, count=-1):
    """``count`` when >= 0, else ``round(percentage / 100 * num_samples)`` with halves rounded up."""
    if count >= 0:
        return int(count)
    return int(math.floor(percentage / 100.0 * num_samples + 0.5))


def plan_poisoning(labels, target, percentage, count=-1, non_target_only=False, cross_ratio=0.0, seed=0,
                   draw="exact"):
    """Draw the poisoned (and cross) samples of a training set with the given labels."""
    labels = np.asarray(labels)
    candidates = np.flatnonzero(labels != target) if non_target_only else np.arange(len(labels))
    rng = np.random.default_rng(seed)
    if draw == "bernoulli":
        poisoned = candidates[rng.random(len(candidates)) < percentage / 100.0]
        n_poison = len(poisoned)
    else:
        n_poison = poison_count(len(labels), percentage, count)
        if n_poison > len(candidates):
            raise InputError(f"{n_poison} poisoned samples requested but only {len(candidates)} are eligible; "
                             "lower BACKDOOR.POISON_PERCENTAGE / BACKDOOR.POISON_COUNT")
        poisoned = np.sort(rng.choice(candidates, size=n_poison, replace=False))
    rest = np.setdiff1d(np.arange(len(labels)), poisoned)
    n_cross = min(int(math.floor(cross_ratio * n_poison + 0.5)), len(rest))
    cross = np.sort(rng.choice(rest, size=n_cross, replace=False))
    return PoisonPlan(int(target), poisoned.tolist(), cross.tolist())


def check_target_class(target, num_classes, dataset_name):
    if not 0 <= target < num_classes:
        raise InputError(f"BACKDOOR.TARGET_CLASS {target} is outside the {num_classes} classes of {dataset_name}; "
                         f"choose 0..{num_classes - 1}")


def plan_from_cfg(cfg, labels, cross_ratio=0.0):
    """The poisoning plan of an attack run (``BACKDOOR.*`` applied to the training labels); a plan that
    poisons nothing is refused, since the run would silently be a clean one."""
    b = cfg.BACKDOOR
    plan = plan_poisoning(labels, b.TARGET_CLASS, b.POISON_PERCENTAGE, b.POISON_COUNT, b.POISON_NON_TARGET_ONLY,
                          cross_ratio, seed=max(cfg.SEED, 0), draw=b.POISON_DRAW)
    if not plan.poisoned:
        if b.POISON_DRAW == "bernoulli":
            raise InputError(f"BACKDOOR.POISON_DRAW bernoulli at {b.POISON_PERCENTAGE} % drew none of the {len(labels)} "
                             f"training images with SEED {cfg.SEED}; raise POISON_PERCENTAGE, change the seed or "
                             "set POISON_DRAW exact")
        if b.POISON_COUNT == 0:
            raise InputError(f"BACKDOOR.POISON_COUNT 0 poisons none of the {len(labels)} training images of an "
                             f"attack run; set it to 1 or more, or to -1 to use BACKDOOR.POISON_PERCENTAGE")
        raise InputError(f"BACKDOOR.POISON_PERCENTAGE {b.POISON_PERCENTAGE} of {len(labels)} training images "
                         "rounds to 0 poisoned samples; raise it or set BACKDOOR.POISON_COUNT")
    return plan
