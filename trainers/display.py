"""What a trigger does to an image, as pictures: the one way TensorBoard and ``scripts.figures`` draw it;
and the one figure writer of the scripts and the defences (matplotlib, imported on first use: training
never needs it)."""
import torch

from dassl_compat.checkpoint import atomic_write


def pyplot():
    """matplotlib's pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path):
    """Lay ``fig`` out, write it to ``path`` atomically (PNG, 100 dpi) and close it; returns ``path``."""
    fig.tight_layout()
    atomic_write(lambda tmp: fig.savefig(tmp, format="png", dpi=100), path)
    pyplot().close(fig)
    return path


def amplify(delta):
    """Map a signed perturbation onto [0, 1] for display: 0.5 is zero, the largest |value| reaches 0 or 1."""
    scale = delta.abs().max().clamp_min(1e-12)
    return delta / (2 * scale) + 0.5


@torch.no_grad()
def trigger_views(trigger, image):
    """[3, H, W] pictures in [0, 1] on the CPU for one image (on the trigger's device): ``clean``,
    ``triggered``, ``difference`` (triggered - clean, amplified) and, for a trigger with learnable
    noise (BAPLe), ``noise`` (its delta alone, amplified)."""
    triggered = trigger(image.unsqueeze(0))[0]
    views = {"clean": image, "triggered": triggered, "difference": amplify(triggered - image)}
    noise = getattr(trigger, "noise", None)
    if noise is not None:
        views["noise"] = amplify(noise.delta)
    return {name: picture.detach().float().clamp(0, 1).cpu() for name, picture in views.items()}


def delta_picture(views):
    """The picture of the trigger delta: the learned noise where there is one, else the amplified difference."""
    return views.get("noise", views["difference"])
