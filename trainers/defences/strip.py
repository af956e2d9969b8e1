"""STRIP input detection (Gao et al., ACSAC 2019): superimpose an incoming image on clean images and
look at the entropy of the predictions. A trigger that dominates the prediction keeps it on the
target whatever it is blended with (low entropy); a clean image's prediction wanders (high entropy).

Each test image, clean and triggered, is blended 0.5/0.5 with ``overlays`` clean images from the
defender's trusted set; its score is the mean softmax entropy (nats) over the blends. The detector
flags low entropy, so its ROC AUC is computed on the negated entropy with triggered images positive.
"""
import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from . import data
from ..display import save_figure
from .base import Defence, fmt, plot_grid, plot_title, register_defence


@torch.no_grad()
def mean_entropies(trainer, images, overlays, draws, batch_size):
    """Mean prediction entropy of each image blended with the overlays ``overlays[draws[i]]``."""
    model = trainer.model
    trainer.set_model_mode("eval")
    entropies = []
    with trainer.autocast(trainer.precision()):
        context = model.eval_context()
        per_batch = max(1, batch_size // draws.shape[1])  # images whose blends fill one test batch
        for start in range(0, len(images), per_batch):
            chunk = images[start:start + per_batch]
            picks = draws[start:start + len(chunk)]
            blends = 0.5 * chunk.unsqueeze(1) + 0.5 * overlays[picks]  # [b, n, 3, H, W]
            logits = model.eval_logits(blends.flatten(0, 1).to(trainer.device), context)
            log_p = torch.log_softmax(logits.float(), dim=1)
            entropy = -(log_p.exp() * log_p).sum(1).view(len(chunk), -1).mean(1)
            entropies.append(entropy.cpu())
    return torch.cat(entropies)


FALSE_REJECTION = 0.05  # share of clean images the detection threshold flags (STRIP's operating point)


def strip(trainer, trigger, images, overlays, num_overlays, seed=0, false_alarm=FALSE_REJECTION):
    """Entropies of clean and triggered ``images`` and the detector's AUC; without a trigger, only the
    clean entropies (nothing to detect)."""
    generator = torch.Generator().manual_seed(seed)
    draws = torch.randint(len(overlays), (len(images), num_overlays), generator=generator)
    batch_size = trainer.cfg.DATALOADER.TEST.BATCH_SIZE
    clean = mean_entropies(trainer, images, overlays, draws, batch_size)
    out = {"num_images": len(images), "num_overlays": num_overlays, "clean_entropy": clean.tolist(),
           "clean_entropy_mean": float(clean.mean())}
    if trigger is None:
        return {**out, "auc": None, "detection_rate": None, "false_alarm_rate": None, "triggered_entropy": None,
                "triggered_entropy_mean": None}
    with torch.no_grad():
        triggered_images = torch.cat([trigger(chunk.to(trainer.device)).cpu()
                                      for chunk in images.split(batch_size)])
    triggered = mean_entropies(trainer, triggered_images, overlays, draws, batch_size)
    is_triggered = np.r_[np.zeros(len(clean)), np.ones(len(triggered))]
    score = -np.r_[clean.numpy(), triggered.numpy()]
    threshold = np.quantile(clean.numpy(), false_alarm)  # STRIP's rule: fix the clean images' false alarms
    return {**out, "auc": float(roc_auc_score(is_triggered, score)),
            "false_alarm_rate": false_alarm, "threshold": float(threshold),
            "detection_rate": float((triggered.numpy() < threshold).mean()),
            "triggered_entropy": triggered.tolist(), "triggered_entropy_mean": float(triggered.mean())}


@register_defence
class Strip(Defence):
    """STRIP on ``strip_images`` test images, clean and triggered, each blended with ``strip_overlays``
    trusted clean images."""

    name = "strip"
    summary_headers = ("STRIP AUC", f"STRIP detection at {FALSE_REJECTION:.0%} clean false rejection")

    def measure(self, context):
        settings, trainer = context.settings, context.trainer
        trusted, _ = context.trusted()
        context.say(f"  strip: {settings.strip_images} test images x {settings.strip_overlays} overlays")
        context.block(f"strip: {settings.strip_images} test images x {settings.strip_overlays} overlays")
        images, _ = data.test_subset(trainer, settings.strip_images, settings.seed)
        return {"strip": strip(trainer, context.trigger, images, trusted, settings.strip_overlays, settings.seed)}

    def plot(self, report, path):
        if "strip" not in report:
            return None
        fig, axes = plot_grid(1, width=5, height=3.4)
        ax, s = axes[0], report["strip"]
        ax.hist(s["clean_entropy"], bins=20, alpha=0.6, label="clean", color="C0")
        if s["triggered_entropy"] is not None:
            ax.hist(s["triggered_entropy"], bins=20, alpha=0.6, label="triggered", color="C3")
        ax.set_xlabel("mean prediction entropy under superimposition (nats)")
        ax.legend(fontsize=7)
        auc = "n/a (no trigger)" if s["auc"] is None else f"{s['auc']:.3f}"
        ax.set_title(f"STRIP, AUC {auc}: {plot_title(report)}", fontsize=9)
        return save_figure(fig, path)

    def csv_rows(self, report):
        if "strip" in report:
            yield {"defence": "strip", "setting": "roc_auc", "value": report["strip"]["auc"]}
            yield {"defence": "strip", "setting": f"detection_rate at false rejection "
                   f"{report['strip'].get('false_alarm_rate')}", "value": report["strip"].get("detection_rate")}

    def summary_cells(self, report):
        """AUC, and the detection rate: the share of triggered images flagged at the entropy threshold that
        rejects ``false_alarm_rate`` (``FALSE_REJECTION``) of the clean images (STRIP's operating point)."""
        s = report.get("strip", {})
        return [fmt(s.get("auc")), fmt(s.get("detection_rate"))]
