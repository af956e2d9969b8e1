"""Checkpoints that hold plain tensors and numbers only, written atomically and read with
``torch.load(weights_only=True)``; shared by the built-in engine and the adapter over real Dassl.

Layout (Dassl's): ``<dir>/<model name>/model.pth.tar-<epoch>``, a ``checkpoint`` file naming the
latest one, and ``model-best.pth.tar``. Each checkpoint also carries the random-number
generator states, so a resumed run continues exactly where the saved one stopped.
"""
import os
import os.path as osp
import random
import re
import shutil
from collections import OrderedDict

import numpy as np
import torch

from common.errors import CheckpointError

POINTER_FILE = "checkpoint"


def atomic_write(write, fpath):
    """Call ``write(tmp_path)``, then move the finished file onto ``fpath`` in one step."""
    tmp = f"{fpath}.tmp-{os.getpid()}"
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, fpath)
    finally:
        if osp.exists(tmp):
            os.remove(tmp)


def atomic_write_text(text, fpath):
    """Write ``text`` (UTF-8) to ``fpath`` atomically."""
    def write(path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(write, fpath)


def save_checkpoint(state, save_dir, is_best=False, remove_module_from_keys=True, model_name=""):
    """Save ``state`` (a dict with ``state_dict`` and ``epoch``) as ``model.pth.tar-<epoch>`` (or
    ``model_name``), then point ``checkpoint`` at it; ``is_best`` also writes ``model-best.pth.tar``."""
    os.makedirs(save_dir, exist_ok=True)
    if remove_module_from_keys:
        state = dict(state)
        state["state_dict"] = OrderedDict(
            (k[7:] if k.startswith("module.") else k, v) for k, v in state["state_dict"].items())
    model_name = model_name or f"model.pth.tar-{state['epoch']}"
    fpath = osp.join(save_dir, model_name)
    atomic_write(lambda path: torch.save(state, path), fpath)
    atomic_write_text(model_name + "\n", osp.join(save_dir, POINTER_FILE))
    if is_best:
        best = osp.join(save_dir, "model-best.pth.tar")
        atomic_write(lambda path: shutil.copyfile(fpath, path), best)
    return fpath


def load_checkpoint(fpath):
    """Load a checkpoint with ``weights_only=True``; never unpickles arbitrary objects."""
    if not fpath or not osp.isfile(fpath):
        raise CheckpointError(f"No checkpoint at {fpath}; check the path (--model-dir / --load-epoch)")
    try:
        return torch.load(fpath, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"Cannot load {fpath} safely (weights_only=True): {_refusal(e)}; "
            "re-save it with plain tensors and numbers, or delete it to start over") from None


def _refusal(error):
    """Why torch refused a file, in one line: torch's own message spans many lines and offers to load
    the file unsafely, which this project never does."""
    message = str(error)
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:
        return f"it holds a pickled Python object ({found.group(1)}), which is never unpickled"
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


def latest_epoch(save_dir):
    """Epoch of the checkpoint that ``<save_dir>/checkpoint`` names, or None."""
    pointer = osp.join(save_dir, POINTER_FILE)
    if not osp.isfile(pointer):
        return None
    name = open(pointer, encoding="utf-8").read().strip()
    if not name.startswith("model.pth.tar-") or not osp.isfile(osp.join(save_dir, name)):
        return None
    return int(name.rsplit("-", 1)[1])


def latest_checkpoint(save_dir):
    """Path of the checkpoint that ``<save_dir>/checkpoint`` names, or None."""
    epoch = latest_epoch(save_dir)
    return None if epoch is None else osp.join(save_dir, f"model.pth.tar-{epoch}")


def get_rng_state():
    np_state = np.random.get_state()
    return {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state):
    py = state["python"]
    random.setstate((py[-1], tuple(py[:-1]), None))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def strip_state_dict(state_dict, drop_prefixes=()):
    """Drop buffers that are rebuilt from the backbone rather than learned (e.g. CoOp's token prefix/suffix)."""
    return OrderedDict((k, v) for k, v in state_dict.items() if not any(k.startswith(p) for p in drop_prefixes))


class CheckpointingMixin:
    """``save_model`` / ``resume_model_if_exist`` / ``load_model`` for a Dassl-style trainer, with
    atomic writes, safe loading and random-state restore. Needs ``_models``, ``_optims``, ``_scheds``."""

    # State-dict keys a trainer rebuilds at construction and does not need to save or load.
    checkpoint_exclude_keys = ()

    def _model_state(self, name):
        return strip_state_dict(self._models[name].state_dict(), self.checkpoint_exclude_keys)

    def save_model(self, epoch, directory, is_best=False, val_result=None, model_name=""):
        rng = get_rng_state()
        for name in self.get_model_names():
            optim, sched = self._optims[name], self._scheds[name]
            save_checkpoint({
                "state_dict": self._model_state(name),
                "epoch": epoch + 1,
                "optimizer": optim.state_dict() if optim is not None else None,
                "scheduler": sched.state_dict() if sched is not None else None,
                "val_result": val_result,
                "rng_state": rng,
            }, osp.join(directory, name), is_best=is_best, model_name=model_name)

    def resume_model_if_exist(self, directory):
        """Resume every model from the newest epoch that all of them saved completely; 0 if none."""
        names = self.get_model_names()
        epochs = [latest_epoch(osp.join(directory, name)) for name in names]
        if not names or any(e is None for e in epochs):
            print("No checkpoint found, train from scratch")
            return 0
        epoch = min(epochs)
        print(f"Found checkpoint at {directory} (will resume training from epoch {epoch})")
        for name in names:
            ckpt = load_checkpoint(osp.join(directory, name, f"model.pth.tar-{epoch}"))
            self._load_state(name, ckpt["state_dict"])
            if self._optims[name] is not None and ckpt.get("optimizer") is not None:
                self._optims[name].load_state_dict(ckpt["optimizer"])
            if self._scheds[name] is not None and ckpt.get("scheduler") is not None:
                self._scheds[name].load_state_dict(ckpt["scheduler"])
        if ckpt.get("rng_state") is not None:
            self._resume_rng_state = ckpt["rng_state"]
        return epoch

    def load_model(self, directory, epoch=None):
        """Load weights for evaluation: ``model.pth.tar-<epoch>`` if given, else ``model-best.pth.tar``
        when it exists, else the latest checkpoint."""
        if not directory:
            print("Note that load_model() is skipped as no pretrained model is given")
            return
        for name in self.get_model_names():
            model_dir = osp.join(directory, name)
            best = osp.join(model_dir, "model-best.pth.tar")
            if epoch is not None:
                path = osp.join(model_dir, f"model.pth.tar-{epoch}")
            elif osp.isfile(best):
                path = best
            else:
                path = latest_checkpoint(model_dir)
                if path is None:
                    raise CheckpointError(f"No checkpoint of {name!r} under {model_dir}; "
                                          "point --model-dir at a finished run's output folder")
            ckpt = load_checkpoint(path)
            val = ckpt.get("val_result")
            print(f"Load {path} to {name} (epoch={ckpt['epoch']}"
                  + (f", val_result={val:.1f})" if val is not None else ")"))
            self._load_state(name, ckpt["state_dict"])

    def _load_state(self, name, state_dict):
        state_dict = strip_state_dict(state_dict, self.checkpoint_exclude_keys)
        result = self._models[name].load_state_dict(state_dict, strict=False)
        missing = [k for k in result.missing_keys if not any(k.startswith(p) for p in self.checkpoint_exclude_keys)]
        if missing or result.unexpected_keys:
            raise CheckpointError(f"Checkpoint of {name!r} does not fit the model: missing {missing}, "
                                  f"unexpected {result.unexpected_keys}; was it saved by another trainer or backbone?")

    def restore_resume_rng_state(self):
        """Put back the random state saved with the resumed checkpoint (call right before training)."""
        state = getattr(self, "_resume_rng_state", None)
        if state is not None:
            set_rng_state(state)
            self._resume_rng_state = None
