"""Input purifiers a hospital could run on every incoming image, and CA/BA under each at a sweep of
strengths.

A countermeasure is ``apply(images, strength, generator) -> images`` on a batch in [0, 1] pixel
space (the space triggers live in, before the backbone's normalisation). Strength 0 returns the
input tensor itself, so the unpurified evaluation is literally the run's own. Strengths are listed
from off to strongest; for JPEG and bit depth the number is the quality or the bits kept (0: off).

``sweep`` evaluates a rebuilt run through ``BackdoorTrainer.evaluate`` with the purifier as its input
``transform``: the countermeasure reaches clean and triggered images alike, after the trigger, in the
run's own batches and precision.
"""
import math
import zlib
from contextlib import redirect_stdout
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torchvision.io import decode_jpeg, encode_jpeg

from common import tables
from dassl_compat import Registry, register_as

from ..display import pyplot, save_figure
from .base import Defence, ca_ba, chance_line, log_block, plot_grid, plot_title, progress, register_defence
from .data import modality


def jpeg(images, quality, generator=None):
    """Re-encode as 8-bit JPEG at ``quality`` (1-100) and decode."""
    if not quality:
        return images
    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
    decoded = decode_jpeg(encode_jpeg(list(pixels), quality=int(quality)))
    return (torch.stack(decoded).to(images.device, torch.float32) / 255).to(images.dtype)


def blur(images, sigma, generator=None):
    """Gaussian blur of standard deviation ``sigma`` pixels (kernel +-3 sigma)."""
    if not sigma:
        return images
    size = 2 * math.ceil(3 * sigma) + 1
    return TF.gaussian_blur(images, [size, size], [float(sigma), float(sigma)])


def resize(images, reduction, generator=None):
    """Downscale to ``1 - reduction`` of the side (antialiased) and back up (bilinear)."""
    if not reduction:
        return images
    height, width = images.shape[-2:]
    small = (max(1, round(height * (1 - reduction))), max(1, round(width * (1 - reduction))))
    down = F.interpolate(images, size=small, mode="bilinear", antialias=True, align_corners=False)
    return F.interpolate(down, size=(height, width), mode="bilinear", align_corners=False).clamp(0, 1)


def gaussian_noise(images, std_255, generator=None):
    """Add Gaussian noise of standard deviation ``std_255``/255, clipped to [0, 1]."""
    if not std_255:
        return images
    noise = torch.randn(images.shape, generator=generator).to(images.device, images.dtype)
    return (images + noise * (std_255 / 255)).clamp(0, 1)


def bit_depth(images, bits, generator=None):
    """Quantise every channel to ``bits`` bits."""
    if not bits:
        return images
    levels = 2 ** int(bits) - 1
    return torch.round(images * levels) / levels


def random_crop(images, fraction, generator=None):
    """Per image, a random window of side ``1 - fraction`` (a random shift of up to ``fraction``),
    resized back to the full size: one vectorised affine resampling."""
    if not fraction:
        return images
    n = images.shape[0]
    scale = 1 - fraction
    shift = (torch.rand((n, 2), generator=generator) * 2 - 1) * fraction  # window centre, normalised coords
    theta = torch.zeros((n, 2, 3))
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(images.device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def window(images, clipped, generator=None):
    """Narrow the intensity window: the darkest and brightest ``clipped``/2 of the range are clipped
    and the rest stretched to [0, 1] (a radiologist's window/contrast change)."""
    if not clipped:
        return images
    low = clipped / 2
    return ((images - low) / (1 - clipped)).clamp(0, 1)


@dataclass(frozen=True)
class Countermeasure:
    name: str
    apply: callable
    parameter: str  # what a strength means, for tables and plot axes
    strengths: tuple  # from off (0) to strongest
    quick: tuple  # a short sweep for smoke tests
    modalities: tuple = ("xray", "histology")


# Registered by name in a Dassl Registry (``--countermeasures NAME``), in the tables' order.
COUNTERMEASURE_REGISTRY = Registry("COUNTERMEASURE")
for _countermeasure in (
    Countermeasure("jpeg", jpeg, "JPEG quality", (0, 95, 85, 75, 50, 30), (0, 50)),
    Countermeasure("blur", blur, "Gaussian sigma (px)", (0, 0.5, 1, 2, 3), (0, 2)),
    Countermeasure("resize", resize, "size reduction (fraction)", (0, 0.25, 0.5, 0.75), (0, 0.5)),
    Countermeasure("noise", gaussian_noise, "noise std (/255)", (0, 2, 4, 8, 16, 32), (0, 16)),
    Countermeasure("bit_depth", bit_depth, "bits kept", (0, 6, 5, 4, 3, 2), (0, 3)),
    Countermeasure("crop", random_crop, "crop/shift (fraction of side)", (0, 0.05, 0.1, 0.2, 0.3), (0, 0.2)),
    Countermeasure("window", window, "intensity range clipped (fraction)", (0, 0.1, 0.2, 0.3, 0.4), (0, 0.3),
                   modalities=("xray",)),
):
    register_as(COUNTERMEASURE_REGISTRY, _countermeasure.name)(_countermeasure)


def countermeasures():
    """{name: Countermeasure} of every registered countermeasure, in registration order."""
    return {name: COUNTERMEASURE_REGISTRY.get(name) for name in COUNTERMEASURE_REGISTRY.registered_names()}


def countermeasures_for(modality):
    """The countermeasures that apply to a dataset's modality (windowing: X-rays only)."""
    return [c for c in countermeasures().values() if modality in c.modalities]


def batches_in_memory(trainer, max_bytes=2 ** 30):
    """The test loader's batches as a list (read once) when they fit in ``max_bytes``, else the loader:
    repeated evaluations then skip decoding and resizing. The batches are the loader's own (its test
    transform is deterministic), in its order."""
    loader = trainer.test_loader
    height, width = trainer.cfg.INPUT.SIZE
    if len(loader.dataset) * 3 * height * width * 4 > max_bytes:
        return loader
    return list(loader)


def summary(evaluation):
    """CA, BA and non-target ASR of a ``BackdoorTrainer.evaluate`` result (BA None without a trigger)."""
    backdoor = evaluation.backdoor or {}
    return {"clean_accuracy": evaluation.clean["accuracy"], "backdoor_accuracy": backdoor.get("accuracy"),
            "asr_non_target": backdoor.get("asr_non_target")}


def evaluate_quietly(trainer, log, **evaluate_args):
    """``summary(trainer.evaluate(**evaluate_args))`` with the evaluation's console output sent to ``log``."""
    with redirect_stdout(log):
        return summary(trainer.evaluate(**evaluate_args))


def sweep(trainer, countermeasures, quick=False, seed=0, log=None, run_name=""):
    """(unpurified CA/BA, {name: {"parameter", "points": [{"strength", CA, BA, ASR}, ...]}}). Strength 0
    is evaluated without a transform (the run's own computation), once, and shared by every
    countermeasure. A progress bar counts the evaluations; each one's log output is headed by its
    purifier, strength and ``run_name``."""
    loader = batches_in_memory(trainer)
    of_run = f" (run {run_name})" if run_name else ""
    steps = [(countermeasure, strength) for countermeasure in countermeasures
             for strength in (countermeasure.quick if quick else countermeasure.strengths) if strength != 0]
    bar = progress(None, f"{run_name + ': ' if run_name else ''}robustness", total=len(steps) + 1)
    bar.set_postfix_str("unpurified")
    log_block(log, f"robustness: unpurified{of_run}")
    unpurified = evaluate_quietly(trainer, log, loader=loader)
    bar.update()
    out = {}
    for countermeasure in countermeasures:
        points = []
        for strength in countermeasure.quick if quick else countermeasure.strengths:
            if strength == 0:
                points.append({"strength": 0, **unpurified})
                continue
            setting = f"{countermeasure.name}, {countermeasure.parameter} {strength_label(strength)}"
            bar.set_postfix_str(setting)
            log_block(log, f"robustness: {setting}{of_run}")
            # Random purifiers draw from a generator seeded by name: the same draws whatever else is swept.
            generator = torch.Generator().manual_seed(seed * 2**32 + zlib.crc32(countermeasure.name.encode()))
            purify = lambda images: countermeasure.apply(images, strength, generator)  # noqa: E731  (used at once)
            points.append({"strength": strength, **evaluate_quietly(trainer, log, loader=loader, transform=purify)})
            bar.update()
        out[countermeasure.name] = {"parameter": countermeasure.parameter, "points": points}
    bar.close()
    return unpurified, out


def strength_label(strength):
    return "off" if strength == 0 else f"{strength:g}"


@register_defence
class Robustness(Defence):
    """CA, BA and ASR with each input purifier in front of the model, per strength; and the unpurified
    evaluation against the run's ``results.json`` (``reference``)."""

    name = "robustness"
    summary_headers = ("CA / BA",)

    def measure(self, context):
        settings, trainer, results = context.settings, context.trainer, context.results
        context.say("  robustness")
        chosen = ([countermeasures()[name] for name in settings.countermeasures] if settings.countermeasures
                  else countermeasures_for(modality(trainer.cfg)))
        unpurified, swept = sweep(trainer, chosen, settings.quick_strengths, settings.seed, context.log, context.name)
        recorded = {"clean_accuracy": results["clean"]["accuracy"],
                    "backdoor_accuracy": (results["backdoor"] or {}).get("accuracy")}
        same_ba = (recorded["backdoor_accuracy"] is None
                   or unpurified["backdoor_accuracy"] == recorded["backdoor_accuracy"])
        reference = {"results_json": recorded, "unpurified": unpurified,
                     "matches_results_json": unpurified["clean_accuracy"] == recorded["clean_accuracy"] and same_ba}
        return {"reference": reference, "robustness": swept}

    def plot(self, report, path, curves=None):
        """CA and BA against strength, one panel per countermeasure; ``curves``: {label: report} to overlay runs."""
        if "robustness" not in report:
            return None
        plt = pyplot()
        curves = curves or {None: report}
        names = list(report["robustness"])
        fig, axes = plot_grid(len(names))
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        for ax, name in zip(axes, names):
            for k, (label, rep) in enumerate(curves.items()):
                swept = rep.get("robustness", {}).get(name)
                if swept is None:
                    continue
                points = swept["points"]
                x = range(len(points))
                prefix = "" if label is None else f"{label} "
                colour_ca, colour_ba = (colours[0], colours[3]) if label is None else (colours[k % 10],) * 2
                ax.plot(x, [p["clean_accuracy"] for p in points], "o-", color=colour_ca, label=f"{prefix}CA")
                if points[0]["backdoor_accuracy"] is not None:
                    ax.plot(x, [p["backdoor_accuracy"] for p in points], "s--", color=colour_ba, label=f"{prefix}BA")
                ax.set_xticks(list(x), [strength_label(p["strength"]) for p in points])
            chance_line(ax, report)
            ax.set_title(name, fontsize=9)
            ax.set_xlabel(report["robustness"][name]["parameter"], fontsize=8)
            ax.set_ylim(-0.02, 1.02)
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=6)
        title = "CA (solid) and BA (dashed) under input purifiers"
        fig.suptitle(title if len(curves) > 1 else f"{title}: {plot_title(report)}", fontsize=10)
        return save_figure(fig, path)

    def csv_rows(self, report):
        for countermeasure, swept in report.get("robustness", {}).items():
            for p in swept["points"]:
                yield {"defence": countermeasure, "setting": f"{swept['parameter']} {strength_label(p['strength'])}",
                       **{k: p[k] for k in ("clean_accuracy", "backdoor_accuracy", "asr_non_target")}}

    def summary_cells(self, report):
        reference = report.get("reference", {}).get("unpurified")
        return [ca_ba(reference) if reference else "-"]

    def markdown_section(self, reports):
        if not any("robustness" in r for r in reports.values()):
            return []
        rows = [[name, f"{countermeasure} ({swept['parameter']})",
                 "; ".join(f"{strength_label(p['strength'])}: {ca_ba(p)}" for p in swept["points"])]
                for name, r in reports.items() for countermeasure, swept in r.get("robustness", {}).items()]
        return ["CA / BA per purifier strength (strengths: off, then increasing):", "",
                tables.markdown(rows, ["run", "purifier", "CA / BA at each strength"])]

    def plots_across(self, reports, out_dir):
        """``defences.png``: CA and BA of every run under each purifier, overlaid."""
        import os.path as osp

        with_sweep = {name: r for name, r in reports.items() if "robustness" in r}
        if not with_sweep:
            return {}
        first = next(iter(with_sweep.values()))
        return {"png": self.plot(first, osp.join(out_dir, "defences.png"), curves=with_sweep)}
