"""What a trigger does to an image, as pictures: the one way TensorBoard and ``scripts.figures`` draw it;
and the one figure writer of the scripts and the defences (matplotlib, imported on first use: training
never needs it)."""
import os.path as osp

import torch

from common.errors import InputError
from dassl_compat.checkpoint import atomic_write

# File extension -> matplotlib format. PDF and SVG are vector (dpi only affects embedded images).
FIGURE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}
DEFAULT_DPI = 200  # print quality for PNG; also the rasterisation of images inside PDF/SVG


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_format(path):
    """The matplotlib format of ``path`` from its extension; a one-line InputError for any other."""
    ext = osp.splitext(str(path))[1].lower()
    if ext not in FIGURE_FORMATS:
        raise InputError(f"cannot write a figure to {path}: unknown extension {ext or '(none)'!r}; "
                         f"name it {', '.join('*' + e for e in FIGURE_FORMATS)}")
    return FIGURE_FORMATS[ext]


def save_figure(fig, path, dpi=None):
    """Lay ``fig`` out, write it to ``path`` atomically in the format its extension names (PNG, PDF, SVG)
    at ``dpi`` (default ``DEFAULT_DPI``) and close it; returns ``path``."""
    fmt = figure_format(path)
    if fig.get_layout_engine() is None:  # a figure made with its own layout (e.g. constrained) keeps it
        fig.tight_layout()
    atomic_write(lambda tmp: fig.savefig(tmp, format=fmt, dpi=dpi or DEFAULT_DPI, bbox_inches="tight"), path)
    pyplot().close(fig)
    return path


def amplify(delta):
    """Map a signed perturbation onto [0, 1] for display: 0.5 is zero, the largest |value| reaches 0 or 1."""
    scale = delta.abs().max().clamp_min(1e-12)
    return delta / (2 * scale) + 0.5


@torch.no_grad()
def trigger_deltas(trigger, image):
    """The signed changes a trigger makes, in pixel units ([0, 1] scale), as [3, H, W] CPU tensors:
    ``difference`` (triggered - clean, for one image on the trigger's device) and, for a trigger with
    learnable noise (BAPLe), ``noise`` (its delta alone); and the ``triggered`` image."""
    triggered = trigger(image.unsqueeze(0))[0]
    deltas = {"triggered": triggered.clamp(0, 1), "difference": triggered.clamp(0, 1) - image.clamp(0, 1)}
    noise = getattr(trigger, "noise", None)
    if noise is not None:
        deltas["noise"] = noise.delta
    return {name: value.detach().float().cpu() for name, value in deltas.items()}


@torch.no_grad()
def trigger_views(trigger, image):
    """[3, H, W] pictures in [0, 1] on the CPU for one image (on the trigger's device): ``clean``,
    ``triggered``, ``difference`` (triggered - clean, amplified) and, for a trigger with learnable
    noise (BAPLe), ``noise`` (its delta alone, amplified)."""
    deltas = trigger_deltas(trigger, image)
    views = {"clean": image.detach().float().cpu(), "triggered": deltas["triggered"],
             "difference": amplify(deltas["difference"])}
    if "noise" in deltas:
        views["noise"] = amplify(deltas["noise"])
    return {name: picture.clamp(0, 1) for name, picture in views.items()}


def delta_picture(views):
    """The picture of the trigger delta: the learned noise where there is one, else the amplified difference."""
    return views.get("noise", views["difference"])
