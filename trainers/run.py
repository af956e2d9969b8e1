"""A finished run: the one reader of a run folder.

A run folder is what ``train.py`` leaves in ``OUTPUT_DIR``: ``results.json`` (metrics, the run's
facts and a full dump of its config), one checkpoint folder per registered model
(``prompt_learner/``, ``trigger/``, ...), ``log.txt`` and its TensorBoard event file. Everything that reads a
finished run (``scripts.report``, ``scripts.figures``, ``scripts.defend``, the quickstart, the
sweep's "finished" check, ``BACKDOOR.EVAL_TRIGGER``) goes through ``Run``.

Config. ``Run.cfg`` is the stored config merged onto today's defaults (``configs.defaults.get_cfg``):
a run written before a key was added gets that key's default; a stored key unknown today (another
engine's or version's) is kept. yacs checks each stored value's type against the default's. The
trainer's own checks (``validate_cfg``) run when a trainer is rebuilt (``build_trainer``).

Paths. The stored config keeps the paths as they were given (relative ones relative to the
working directory of the training, which ``results.json`` records as ``cwd``; a run written before
that falls back to the current one). On load each path key (``PATH_KEYS``) is resolved from the
run's present place: the path's position relative to the run's old folder (the stored
``OUTPUT_DIR``) is re-applied to its present folder, and used when that exists: a sweep root moved or
copied as a whole keeps BAPLe's ``--init`` pointing at its sibling CoOp run, ``EVAL_TRIGGER`` at its
sibling trigger run, and weights or patch images stored inside the run at their copies. Otherwise
the stored path is used as it was (absolute), and a value that is not a path on disk (a hub id,
``""``) is left alone. ``OUTPUT_DIR`` is the run's present folder.
"""
import os
import os.path as osp
import tempfile
from contextlib import nullcontext, redirect_stdout
from json import JSONDecodeError

from yacs.config import CfgNode

from common.errors import InputError

RESULTS = "results.json"
# Config keys holding a file or folder path, resolved from the run's present place (module docstring).
PATH_KEYS = ("TRAINER.BAPLE.INIT", "BACKDOOR.EVAL_TRIGGER", "BACKDOOR.PATCH_IMAGE", "MODEL.BACKBONE.WEIGHTS",
             "DATASET.ROOT", "RESUME")
# Keys that only say where training started: cleared when the trained weights are loaded over them, so
# a run rebuilds even when the run it started from is gone.
STARTING_POINT_KEYS = ("TRAINER.BAPLE.INIT",)


class Run:
    """A finished run folder (see the module docstring). Open one with ``Run.open(path)``."""

    def __init__(self, path, results):
        self.path = osp.abspath(path)
        self.results = results
        self._cfg = None

    # ---- finding and opening ------------------------------------------------------------------
    @staticmethod
    def is_run(path):
        """Whether ``path`` is a finished run folder (it holds ``results.json``)."""
        return osp.isfile(osp.join(path, RESULTS))

    @classmethod
    def open(cls, path, what="run folder"):
        """The run in ``path``, or a one-line ``InputError`` naming ``what`` was given (a flag or key)."""
        from dassl_compat import read_json

        if not cls.is_run(path):
            raise InputError(f"{what} {path}: no {RESULTS} there; it must name a finished run folder")
        file = osp.join(path, RESULTS)
        try:
            results = read_json(file)
        except (JSONDecodeError, UnicodeDecodeError) as e:
            raise InputError(f"{file} is not valid JSON ({e}); the run did not finish writing it: run it again")
        if not isinstance(results, dict) or not isinstance(results.get("config"), dict):
            raise InputError(f"{file} holds no stored config; it was not written by train.py: run it again")
        return cls(path, results)

    @classmethod
    def find(cls, roots):
        """Every run under ``roots``: a root that is a run folder is itself, else every run folder below
        it (hidden folders such as ``.submitit`` skipped), in sorted order. A root without any run is
        a one-line ``InputError``."""
        runs = []
        for root in [roots] if isinstance(roots, str) else roots:
            found = [root] if cls.is_run(root) else []
            if not found:
                for folder, subfolders, files in os.walk(root):
                    subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
                    if RESULTS in files:
                        found.append(folder)
            if not found:
                raise InputError(f"No {RESULTS} in or under {root}; pass run folders or a folder of runs (a sweep "
                                 "root)")
            runs += [cls.open(folder) for folder in found]
        return runs

    # ---- what the run holds ---------------------------------------------------------------------
    @property
    def cfg(self):
        """The stored config on today's defaults, its paths resolved (module docstring); a fresh copy."""
        if self._cfg is None:
            self._cfg = self._load_cfg()
        return self._cfg.clone()

    def _load_cfg(self):
        from configs.defaults import get_cfg, upgraded

        cfg = get_cfg()
        cfg.set_new_allowed(True)  # a config dumped by another engine or version may hold keys unknown here
        try:
            cfg.merge_from_other_cfg(CfgNode(upgraded(self.results["config"])))
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(f"The config stored in {osp.join(self.path, RESULTS)} does not fit today's "
                             f"defaults ({str(e).splitlines()[0]}); fix that key in its \"config\" section")
        cfg.set_new_allowed(False)
        cwd = self.results.get("cwd") or os.getcwd()
        old_dir = osp.normpath(osp.join(cwd, cfg.OUTPUT_DIR or self.path))
        for key in PATH_KEYS:
            node, name = _parent(cfg, key)
            if node is not None:
                node[name] = self._relocated(node[name], old_dir, cwd)
        cfg.OUTPUT_DIR = self.path
        return cfg

    def _relocated(self, value, old_dir, cwd):
        if not isinstance(value, str) or not value:
            return value
        stored = osp.normpath(osp.join(cwd, value))
        moved = osp.normpath(osp.join(self.path, osp.relpath(stored, old_dir)))
        if osp.exists(moved):
            return moved
        return stored if osp.exists(stored) else value

    def latest_checkpoint(self, component):
        """Path of the latest checkpoint of a registered model (``prompt_learner``, ``trigger``, ...), or None."""
        from dassl_compat.checkpoint import latest_checkpoint

        return latest_checkpoint(osp.join(self.path, component))

    def trainer_class(self):
        import trainers  # noqa: F401  (registers the trainers)
        from dassl_compat import TRAINER_REGISTRY

        name = self.cfg.TRAINER.NAME
        if name not in TRAINER_REGISTRY.registered_names():
            raise InputError(f"The run in {self.path} was trained by {name!r}, which is not a registered trainer; "
                             f"choose from {', '.join(sorted(TRAINER_REGISTRY.registered_names()))}")
        return TRAINER_REGISTRY.get(name)

    def trigger(self):
        """The run's trigger, rebuilt from its config with its learned state (``trigger/`` checkpoint,
        when the run learned it) loaded, in eval mode; None for a run without one (clean, zero-shot)."""
        from dassl_compat.checkpoint import load_checkpoint

        cfg = self.cfg
        trigger = self.trainer_class().build_trigger(cfg, cfg.INPUT.SIZE[0])
        if trigger is None:
            return None
        checkpoint = self.latest_checkpoint("trigger")
        if checkpoint is not None:
            trigger.load_state_dict(load_checkpoint(checkpoint)["state_dict"])
        return trigger.eval()

    # ---- rebuilding -------------------------------------------------------------------------------
    def build_trainer(self, opts=(), output_dir=None, load_weights=True, log=None):
        """A trainer on the run's config plus ``opts`` (``KEY, VALUE, ...`` as yacs' ``merge_from_list``),
        checked and seeded as ``train.py`` does, with the run's trained weights loaded (``load_weights``;
        then ``STARTING_POINT_KEYS`` are cleared first).
        It writes nowhere inside the run: ``OUTPUT_DIR`` is ``output_dir`` or a new temporary folder
        (written only if the caller trains or tests). ``log``: a stream for the build's console output."""
        from dassl_compat import build_trainer, set_random_seed

        from .validation import validate_cfg

        cfg = self.cfg
        if load_weights:
            for key in STARTING_POINT_KEYS:
                node, name = _parent(cfg, key)
                if node is not None:
                    node[name] = ""
        cfg.merge_from_list(list(opts))
        if output_dir is not None and osp.abspath(output_dir) == self.path:
            raise InputError(f"The output folder {output_dir} is the run's own; give another folder")
        cfg.OUTPUT_DIR = output_dir if output_dir is not None else tempfile.mkdtemp(prefix="rebuilt-run-")
        self.trainer_class()
        validate_cfg(cfg)
        with redirect_stdout(log) if log is not None else nullcontext():
            set_random_seed(cfg.SEED)
            trainer = build_trainer(cfg)
            if load_weights:
                missing = [name for name in trainer.get_model_names() if self.latest_checkpoint(name) is None
                           and not osp.isfile(osp.join(self.path, name, "model-best.pth.tar"))]
                if missing:
                    raise InputError(f"{self.path} holds no checkpoints of {', '.join(missing)} (an eval-only folder?); "
                                     "use the folder the model was trained in, with another run's trigger if needed")
                trainer.load_model(self.path)
        return trainer

    def __repr__(self):
        return f"Run({self.path!r})"


def _parent(cfg, dotted):
    """(node, last key) of a dotted key of ``cfg``, or (None, None) when it is absent."""
    *parents, name = dotted.split(".")
    node = cfg
    for part in parents:
        node = node.get(part)
        if node is None:
            return None, None
    return (node, name) if name in node else (None, None)

