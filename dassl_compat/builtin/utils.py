"""Logging, seeding, environment report and small file helpers (Dassl's ``dassl.utils``)."""
import errno
import json
import os
import os.path as osp
import random
import sys
import time
from collections import defaultdict

import numpy as np
import torch
from PIL import Image

from ..checkpoint import atomic_write_text


class _Tee:
    """Writes everything printed to the console and to a log file."""

    def __init__(self, fpath):
        self.console = sys.stdout
        # Line-buffered: a run killed without warning (SIGKILL, out of memory) keeps its log up to the end.
        self.file = open(fpath, "a", encoding="utf-8", buffering=1)

    def write(self, msg):
        self.console.write(msg)
        self.file.write(msg)

    def flush(self):
        self.console.flush()
        self.file.flush()
        os.fsync(self.file.fileno())

    def isatty(self):
        return False

    def close(self):
        self.file.close()


def setup_logger(output=None):
    """Tee stdout to ``output/log.txt`` (or to ``output`` itself when it ends in .txt/.log);
    an existing log is kept and the new one gets a time-stamped name, as Dassl does."""
    if output is None:
        return
    fpath = output if output.endswith((".txt", ".log")) else osp.join(output, "log.txt")
    if osp.exists(fpath):
        fpath += time.strftime("-%Y-%m-%d-%H-%M-%S")
    mkdir_if_missing(osp.dirname(fpath) or ".")
    if isinstance(sys.stdout, _Tee):
        sys.stdout.close()
        sys.stdout = sys.stdout.console
    sys.stdout = _Tee(fpath)


def set_random_seed(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def collect_env_info():
    from torch.utils.collect_env import get_pretty_env_info

    import PIL

    return get_pretty_env_info() + f"\n        Pillow ({PIL.__version__})"


def mkdir_if_missing(dirname):
    try:
        os.makedirs(dirname, exist_ok=True)
    except OSError as e:
        if e.errno != errno.EEXIST:
            raise


def listdir_nohidden(path, sort=False):
    items = [f for f in os.listdir(path) if not f.startswith(".")]
    return sorted(items) if sort else items


def check_isfile(fpath):
    return osp.isfile(fpath)


def read_json(fpath):
    with open(fpath, encoding="utf-8") as f:
        return json.load(f)


def write_json(obj, fpath):
    """Write JSON atomically: a reader sees the old file or the whole new one, never half of it."""
    mkdir_if_missing(osp.dirname(osp.abspath(fpath)))
    atomic_write_text(json.dumps(obj, indent=4, separators=(",", ": ")), fpath)


def read_image(path):
    return Image.open(path).convert("RGB")


def tolist_if_not(x):
    return x if isinstance(x, list) else [x]


def count_num_param(model=None, params=None):
    if model is not None:
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in params)


class AverageMeter:
    def __init__(self, ema=False):
        self.ema = ema
        self.reset()

    def reset(self):
        self.val = self.avg = self.sum = 0.0
        self.count = 0

    def update(self, val, n=1):
        if isinstance(val, torch.Tensor):
            val = val.item()
        self.val = val
        self.sum += val * n
        self.count += n
        self.avg = self.val * 0.1 + self.avg * 0.9 if self.ema else self.sum / self.count


class MetricMeter:
    def __init__(self, delimiter=" "):
        self.meters = defaultdict(AverageMeter)
        self.delimiter = delimiter

    def update(self, input_dict):
        if input_dict is None:
            return
        if not isinstance(input_dict, dict):
            raise TypeError("Input to MetricMeter.update() must be a dictionary")
        for k, v in input_dict.items():
            self.meters[k].update(v.item() if isinstance(v, torch.Tensor) else v)

    def __str__(self):
        return self.delimiter.join(f"{n} {m.val:.4f} ({m.avg:.4f})" for n, m in self.meters.items())


def run_device(cfg):
    """The device a run of ``cfg`` trains on, chosen as Dassl chooses it (CUDA when available and
    ``USE_CUDA``)."""
    return torch.device("cuda" if torch.cuda.is_available() and cfg.USE_CUDA else "cpu")
