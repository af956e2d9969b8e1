"""The methods of the paper's Tables 1-2 in one table: each row name and how its runs are made.

The sweep builds runs from it; the report names a finished run's row from its ``results.json``
(trainer and attack), so runs started by hand with ``train.py`` land in the same rows.
"""
import os.path as osp
from dataclasses import dataclass

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), "configs")


@dataclass(frozen=True)
class Method:
    name: str  # the paper's row name
    trainer: str  # TRAINER.NAME; the method file is configs/trainers/<trainer>/<backbone>.yaml or <trainer>.yaml
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


# In the paper's row order (ZeroShot, which the paper does not tabulate, first), then the same attacks with
# CoCoOp's learner and BadCLIP (beyond the paper).
METHODS = (
    Method("ZeroShot", "ZeroShot", "none"),
    *_baselines("FineTune", "FT"),
    *_baselines("CoOp", "PL"),
    Method("BAPLe", "BAPLe", "baple", init_from="Clean_PL"),
    *_baselines("CoCoOp", "CoCoOp"),
    Method("BAPLe_CoCoOp", "BAPLeCoCoOp", "baple", init_from="Clean_CoCoOp"),
    Method("BadCLIP", "BadCLIP", "badclip"),
)
METHOD_BY_NAME = {m.name: m for m in METHODS}
_BY_TRAINER_ATTACK = {(m.trainer, m.attack): m.name for m in METHODS}


def method_name(trainer, attack):
    """The row name of a run of ``trainer`` with ``attack`` (e.g. CoOp + wanet -> WaNet_PL)."""
    return _BY_TRAINER_ATTACK.get((trainer, attack), f"{trainer}+{attack}")


def method_file(trainer, backbone, config_dir=CONFIGS):
    """``trainers/<trainer>/<backbone>.yaml``, else the method's one file for every backbone,
    ``trainers/<trainer>.yaml`` (the backbone then comes from ``--backbone``)."""
    per_backbone = osp.join(config_dir, "trainers", trainer, f"{backbone}.yaml")
    one_file = osp.join(config_dir, "trainers", f"{trainer}.yaml")
    return one_file if not osp.isfile(per_backbone) and osp.isfile(one_file) else per_backbone
