"""Where a method's config files are, and which of them a run merges.

One method file per trainer, ``configs/trainers/<TRAINER>.yaml``, and beside it, in a folder of the
method file's name, a per-backbone file ``configs/trainers/<TRAINER>/<backbone>.yaml`` only where
that model has a value of its own (MedCLIP's prompt-learning learning rate). The per-backbone file
is merged right after the method file; the same holds for any method file given with
``--config-file`` (e.g. a CoOp repository's ``configs/trainers/CoOp/rn50.yaml`` has no such folder).
"""
import os.path as osp

from common.errors import InputError

CONFIG_DIR = osp.dirname(osp.abspath(__file__))
TRAINER_DIR = osp.join(CONFIG_DIR, "trainers")


def method_file(trainer):
    """The repository's method file of ``trainer`` (TRAINER.NAME)."""
    return osp.join(TRAINER_DIR, f"{trainer}.yaml")


def backbone_file(method_path, backbone):
    """The per-backbone file of ``method_path`` for ``backbone``, or None when the model has no values
    of its own for this method."""
    path = osp.join(osp.splitext(method_path)[0], f"{backbone}.yaml")
    return path if backbone and osp.isfile(path) else None


def check_method_file(path):
    """A per-backbone file is not a method file: passing one (or the per-backbone path of the old
    layout, one complete file per method and model) is refused with the command that replaces it."""
    folder = osp.dirname(osp.abspath(path))
    if osp.isfile(folder + ".yaml"):
        method = (osp.dirname(path) or folder) + ".yaml"
        backbone = osp.splitext(osp.basename(path))[0]
        raise InputError(f"Config file {path} is not a method file: use --config-file {method} --backbone "
                         f"{backbone} (a model's own values are merged after the method file)")


def method_files(method_path, backbone):
    """The files a run merges, in order: the method file, then its per-backbone file if there is one."""
    extra = backbone_file(method_path, backbone)
    return [method_path] + ([extra] if extra else [])
