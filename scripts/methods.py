"""The methods of the paper's Tables 1-2 in ``METHOD_REGISTRY`` (a Dassl ``Registry``): each row name and
how its runs are made; registration order is the tables' row order.

The sweep builds runs from it; the report names a finished run's row from its ``results.json``
(trainer and attack), so runs started by hand with ``train.py`` land in the same rows. A new method
registers one more ``Method`` with ``register_method`` (and adds its trainer's method file).
"""
from dataclasses import dataclass

from dassl_compat import Registry, register_as

METHOD_REGISTRY = Registry("METHOD")


@dataclass(frozen=True)
class Method:
    name: str  # the paper's row name
    trainer: str  # TRAINER.NAME; the method file is configs/trainers/<trainer>.yaml
    attack: str  # the "attack" its results.json records; "none": a clean method
    overrides: tuple = ()  # KEY VALUE pairs after the method file
    init_from: str = ""  # the clean method whose run of the same seed its prompt learner starts from (BAPLe's)

    @property
    def targeted(self):
        """A clean method does not depend on the target class: one run per seed, not per target."""
        return self.attack != "none"


def _baselines(trainer, suffix):
    return tuple(Method(f"{label}_{suffix}", trainer, attack, ("BACKDOOR.ATTACK", attack))
                 for label, attack in (("Clean", "none"), ("BadNets", "badnets"), ("WaNet", "wanet"),
                                       ("FIBA", "fiba")))


def register_method(method):
    return register_as(METHOD_REGISTRY, method.name)(method)


def methods():
    """Every registered method, in the tables' row order."""
    return [METHOD_REGISTRY.get(name) for name in METHOD_REGISTRY.registered_names()]


def method_name(trainer, attack):
    """The row name of a run of ``trainer`` with ``attack`` (e.g. CoOp + wanet -> WaNet_PL)."""
    return next((m.name for m in methods() if (m.trainer, m.attack) == (trainer, attack)), f"{trainer}+{attack}")


# In the paper's row order (ZeroShot, which the paper does not tabulate, first), then the same attacks with
# CoCoOp's learner and BadCLIP (beyond the paper).
for _method in (Method("ZeroShot", "ZeroShot", "none"), *_baselines("FineTune", "FT"), *_baselines("CoOp", "PL"),
                Method("BAPLe", "BAPLe", "baple", init_from="Clean_PL"), *_baselines("CoCoOp", "CoCoOp"),
                Method("BAPLe_CoCoOp", "BAPLeCoCoOp", "baple", init_from="Clean_CoCoOp"),
                Method("BadCLIP", "BadCLIP", "badclip")):
    register_method(_method)
