"""Pictures of triggers (PNG, matplotlib): what a run's trigger does to a test image."""
import os.path as osp

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from yacs.config import CfgNode  # noqa: E402

from dassl_compat import DATASET_REGISTRY, build_transform, read_json  # noqa: E402
from dassl_compat.checkpoint import atomic_write  # noqa: E402


def _to_hwc(image):
    return image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def amplify(delta):
    """Map a signed perturbation onto [0, 1] for display: 0.5 is zero, the largest |value| reaches 0 or 1."""
    scale = delta.abs().max().clamp_min(1e-12)
    return delta / (2 * scale) + 0.5


def first_test_image(cfg):
    """The run's first test image after its test transform, as a [3, H, W] tensor in [0, 1]."""
    import datasets  # noqa: F401  (registers the datasets)
    from datasets.imageio import load_image

    dataset = DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
    return build_transform(cfg, is_train=False)(load_image(dataset.test[0].impath))


def save_trigger_picture(run_dir, path=None):
    """Clean test image, triggered image, their difference (amplified) and, for BAPLe, the learned
    noise alone (amplified). Returns the PNG path (default ``<run_dir>/trigger.png``)."""
    import trainers  # noqa: F401  (registers the trainers)
    from trainers.base import load_run_trigger

    cfg = CfgNode(read_json(osp.join(run_dir, "results.json"))["config"])
    trigger = load_run_trigger(run_dir)
    image = first_test_image(cfg)
    with torch.no_grad():
        triggered = trigger(image.unsqueeze(0))[0]
    panels = [("clean", image), ("triggered", triggered), ("difference (amplified)", amplify(triggered - image))]
    noise = getattr(trigger, "noise", None)
    if noise is not None:
        eps = noise.eps
        panels.append((f"learned noise, ||δ||∞ = {noise.delta.abs().max() * 255:.1f}/255 (ε = {eps * 255:.0f}/255)",
                       amplify(noise.delta)))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(_to_hwc(picture))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{cfg.TRAINER.NAME} on {cfg.MODEL.BACKBONE.NAME} / {cfg.DATASET.NAME}", fontsize=10)
    fig.tight_layout()
    path = path or osp.join(run_dir, "trigger.png")
    atomic_write(lambda tmp: fig.savefig(tmp, format="png", dpi=100), path)
    plt.close(fig)
    return path
