"""Pictures of finished runs (matplotlib; PNG, PDF or SVG by the file's extension).

    python -m scripts.figures trigger RUN... [--format png]                    each RUN/trigger.<format>
    python -m scripts.figures grid ROOT_OR_RUN... --out triggers.pdf [--cols 6]
    python -m scripts.figures tsne RUN... [--max-images 400] [--trigger-from RUN]   each RUN/tsne.<format>
    every command: [--dpi 200] (PNG resolution; the rasterised images inside a PDF/SVG)

- trigger: a clean test image, the triggered image, their difference and, for BAPLe, the learned
  noise alone. The difference and the noise share one colour scale, in 1/255 pixel units (the mean
  over the RGB channels), stated in the colour bar: linear within the noise budget ±ε and
  logarithmic beyond it when a patch changes pixels by more.
- grid: the triggers of many runs side by side (the paper's Figures A.1-A.2): for each run the
  triggered first test image above its trigger delta, i.e. BAPLe's learned noise or, for the
  other attacks, the amplified change their trigger makes to that image. Runs without a trigger
  are left out.
- tsne: two t-SNEs of clean and triggered test images, coloured by class, circles clean and crosses
  triggered: of the image features (the paper's Figure 3; the frozen encoder's, so a prompt-side
  backdoor cannot show there) and of the class-score vectors (softmax over the classes under the
  learned prompts), where it does. Each panel states the share of triggered non-target images
  in the target class's cluster (``target_share``: nearest its clean centre
  in the image-feature view, scored highest in the class-score view). ``--trigger-from`` takes
  the trigger of another run, e.g. to look at a clean model under BAPLe's trigger.

Titles name the method, backbone, dataset and seed, and say "demo model" / "synthetic data" when
the run used the shipped demo model (``clip_models/demo``) / the quickstart's synthetic data.

``--root`` (alias ``--data-root``) replaces the runs' DATASET.ROOT when the data has moved since.
"""
import math
import os.path as osp

import torch
from matplotlib import colors
from tqdm import tqdm

from common import cli
from common.errors import InputError
from dassl_compat import DATASET_REGISTRY, build_transform
from scripts.methods import method_name
from trainers.display import (DEFAULT_DPI, FIGURE_FORMATS, delta_picture, figure_format, pyplot, save_figure,
                              trigger_deltas, trigger_views)
from trainers.run import Run

plt = pyplot()

LEGEND_OUTSIDE = dict(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)  # never over the data


def _to_hwc(view):
    """A [3, H, W] picture of ``trigger_views`` (already float, in [0, 1], on the CPU) as matplotlib's HxWx3."""
    return view.permute(1, 2, 0).numpy()


def run_config(run, data_root=None):
    """The run's config (``Run.cfg``), with ``DATASET.ROOT`` replaced when the data has moved."""
    cfg = run.cfg
    if data_root:
        cfg.DATASET.ROOT = data_root
    return cfg


def provenance(cfg):
    """"demo model" / "synthetic data" notes for a run on the shipped demo model / the quickstart's
    synthetic data (a DATASET.ROOT with a folder named ``quickstart``, the quickstart's default)."""
    from clip_models.demo import MODEL_DIR

    notes = []
    weights = str(cfg.MODEL.BACKBONE.WEIGHTS)
    if weights and osp.realpath(weights) == osp.realpath(MODEL_DIR):
        notes.append("demo model")
    if "quickstart" in osp.realpath(str(cfg.DATASET.ROOT)).split(osp.sep):
        notes.append("synthetic data")
    return notes


def run_title(results, cfg=None):
    """Method, backbone/dataset, target and seed; plus the demo/synthetic notes of ``cfg``. No paths."""
    method = method_name(results["trainer"], results["attack"])
    target = f" · target {results['target_name']}" if results["attack"] != "none" else ""
    notes = provenance(cfg) if cfg is not None else []
    note = f" ({', '.join(notes)})" if notes else ""
    return f"{method} · {results['backbone']}/{results['dataset']}{note}{target} · seed {results['seed']}"


def first_test_image(cfg):
    """The run's first test image after its test transform, as a [3, H, W] tensor in [0, 1]."""
    import datasets  # noqa: F401  (registers the datasets)
    from datasets.imageio import load_image

    dataset = DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
    return build_transform(cfg, is_train=False)(load_image(dataset.test[0].impath))


def run_trigger(run_dir, data_root=None):
    """(run, trigger, first test image) of a run with a trigger."""
    run = Run.open(run_dir)
    trigger = run.trigger()
    if trigger is None:
        raise InputError(f"The run in {run.path} ({run.cfg.TRAINER.NAME}, attack none) has no trigger to picture; "
                         "pass a BAPLe or poisoned-baseline run")
    return run, trigger, first_test_image(run_config(run, data_root))


def save_trigger_picture(run_dir, path=None, data_root=None, dpi=DEFAULT_DPI, fmt="png"):
    """Clean test image, triggered image, their difference and, for BAPLe, the learned noise alone;
    the last two on one shared colour scale in 1/255 (mean over RGB) with its colour bar. Returns the
    figure's path (default ``<run_dir>/trigger.<fmt>``)."""
    path = path or osp.join(run_dir, f"trigger.{fmt}")
    figure_format(path)  # a bad extension fails before any work
    run, trigger, image = run_trigger(run_dir, data_root)
    deltas = trigger_deltas(trigger, image)
    signed = [("difference (triggered − clean)", deltas["difference"])]
    if "noise" in deltas:
        noise = trigger.noise
        signed.append((f"learned noise δ, ||δ||∞ = {noise.delta.abs().max() * 255:.1f}/255 "
                       f"(ε = {noise.eps * 255:.0f}/255)", deltas["noise"]))
    signed = [(title, (delta * 255).mean(0).numpy()) for title, delta in signed]
    scale = max(float(abs(values).max()) for _, values in signed) or 1.0
    # One scale for both panels. With learned noise it is linear within ±ε and logarithmic beyond, so
    # an ε-bounded noise and a patch tens of times larger both stay readable on it.
    linear = trigger.noise.eps * 255 if "noise" in deltas else None
    if linear is not None and scale > linear:
        norm = colors.SymLogNorm(linthresh=linear, vmin=-scale, vmax=scale, base=10)
        scale_note = f"\nlinear within ±{linear:.0f}, logarithmic beyond"
    else:
        norm, scale_note = colors.Normalize(vmin=-scale, vmax=scale), ""
    panels = len(signed) + 2
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels + 0.8, 3.6), layout="constrained")
    for ax, (title, picture) in zip(axes, [("clean", image), ("triggered", deltas["triggered"])]):
        ax.imshow(_to_hwc(picture.float().cpu().clamp(0, 1)))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    for ax, (title, values) in zip(axes[2:], signed):
        shown = ax.imshow(values, cmap="RdBu_r", norm=norm)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    ticks = sorted({-scale, 0.0, scale} | ({-linear, linear} if scale_note else set()))
    bar = fig.colorbar(shown, ax=list(axes[2:]), shrink=0.8, ticks=ticks,
                       label=f"change in pixel value, 1/255 (mean over RGB){scale_note}")
    bar.ax.set_yticklabels([f"{tick:+.0f}" if tick else "0" for tick in ticks])
    fig.suptitle(run_title(run.results, run.cfg), fontsize=10)
    return save_figure(fig, path, dpi)


def save_trigger_grid(paths, path, cols=6, data_root=None, dpi=DEFAULT_DPI):
    """For every run with a trigger under ``paths``: its triggered first test image above its trigger
    delta (BAPLe's noise, else the amplified difference). Returns the figure's path."""
    figure_format(path)
    tiles = []
    runs = [run for run in Run.find(paths) if run.results["attack"] != "none"]  # clean runs: no trigger
    for found in tqdm(runs, desc="Triggers", unit="run", disable=None):
        run, trigger, image = run_trigger(found.path, data_root)
        views = trigger_views(trigger, image)
        tiles.append((run_title(run.results, run.cfg).replace(" · ", "\n"), views["triggered"], delta_picture(views)))
    if not tiles:
        raise InputError(f"None of the runs under {', '.join(paths)} has a trigger; pass attacked runs")
    cols = min(cols, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(2.4 * cols, 5.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (title, triggered, delta) in enumerate(tiles):
        top, bottom = axes[2 * (i // cols), i % cols], axes[2 * (i // cols) + 1, i % cols]
        top.imshow(_to_hwc(triggered))
        top.set_title(title, fontsize=7)
        bottom.imshow(_to_hwc(delta))
        bottom.set_title("δ (each tile amplified to full range)", fontsize=7)
    return save_figure(fig, path, dpi)


def embed_test_images(run_dir, max_images=400, trigger_from="", data_root=None):
    """Up to ``max_images`` test images, spread evenly over the test set, clean and triggered, in two
    views: ``image features`` (the model's unit-norm image embeddings) and ``class scores`` (softmax
    over the classes of ``eval_logits`` under the learned prompts). Returns a dict: ``views`` {name:
    (clean [N, D], triggered [N, D])}, ``labels`` [N], ``names``, ``target`` (the trigger's target
    class), ``run`` and ``trainer_cfg``."""
    run = Run.open(run_dir)
    opts = (["DATASET.ROOT", data_root] if data_root else []) + (["BACKDOOR.EVAL_TRIGGER", trigger_from]
                                                                 if trigger_from else [])
    trainer = run.build_trainer(opts)
    cfg = trainer.cfg
    trainer.set_model_mode("eval")
    trigger = trainer.eval_trigger()
    if trigger is None:
        raise InputError(f"The run in {run_dir} has no trigger; pass --trigger-from <a run with a trigger>")
    target = Run.open(trigger_from).cfg.BACKDOOR.TARGET_CLASS if trigger_from else cfg.BACKDOOR.TARGET_CLASS
    test_set = trainer.test_loader.dataset
    count = min(max_images, len(test_set))
    indices = torch.linspace(0, len(test_set) - 1, count).round().long().unique().tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(test_set, indices),
                                         batch_size=cfg.DATALOADER.TEST.BATCH_SIZE)
    parts = {name: ([], []) for name in ("image features", "class scores")}
    labels = []
    model = trainer.model
    with torch.no_grad(), trainer.autocast(trainer.precision()):
        context = model.eval_context()
        for batch in tqdm(loader, desc=f"Embedding {osp.basename(osp.normpath(str(run_dir)))}", unit="batch",
                          disable=None):
            images, label = trainer.parse_batch_test(batch)
            for side, batch_images in enumerate((images, trigger(images))):
                parts["image features"][side].append(model.image_embeddings(batch_images).float().cpu())
                parts["class scores"][side].append(model.eval_logits(batch_images, context).float().softmax(-1).cpu())
            labels.append(label.cpu())
    views = {name: (torch.cat(clean), torch.cat(triggered)) for name, (clean, triggered) in parts.items()}
    names = [trainer.lab2cname[i] for i in range(trainer.num_classes)]
    return {"views": views, "labels": torch.cat(labels), "names": names, "target": int(target),
            "run": run, "trainer_cfg": cfg}


def nearest_clean_centre(clean, triggered, labels):
    """For each triggered point, the class whose clean points' mean is nearest (Euclidean)."""
    classes = labels.unique()
    centres = torch.stack([clean[labels == c].mean(0) for c in classes])
    return classes[torch.cdist(triggered.double(), centres.double()).argmin(1)]


def highest_score(clean, triggered, labels):
    """For each triggered point, the class of its highest score: the nearest vertex of the simplex."""
    return triggered.argmax(1)


# How each view places a triggered image into a class's cluster. Image features: the clean class
# centres (the encoder's own geometry, the same for every prompt). Class scores: the class the
# learned prompts give the highest score, i.e. the prediction.
CLUSTER_OF = {"image features": nearest_clean_centre, "class scores": highest_score}


def target_share(view, clean, triggered, labels, target):
    """The share of triggered images of non-target classes that ``view`` places in the target class's
    cluster (``CLUSTER_OF``): 1.0, all of them; near 1/C or below, the trigger does not move them there."""
    rows = labels != target
    if not rows.any():
        return float("nan")
    return float((CLUSTER_OF[view](clean, triggered[rows], labels) == target).double().mean())


def save_tsne(run_dir, path=None, max_images=400, trigger_from="", data_root=None, dpi=DEFAULT_DPI, fmt="png"):
    """t-SNEs of clean and triggered test images, coloured by class, of the image features and of the
    class scores under the learned prompts, side by side. Returns (the figure's path, {view name:
    ``target_share``})."""
    from sklearn.manifold import TSNE

    path = path or osp.join(run_dir, f"tsne.{fmt}")
    figure_format(path)
    if max_images < 5:
        raise InputError(f"--max-images {max_images} is too few for a t-SNE; use 5 or more")
    embedded = embed_test_images(run_dir, max_images, trigger_from, data_root)
    labels, names, target = embedded["labels"], embedded["names"], embedded["target"]
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 5.2))
    shares = {}
    for ax, (view, (clean, triggered)) in zip(axes, embedded["views"].items()):
        shares[view] = target_share(view, clean, triggered, labels, target)
        features = torch.cat([clean, triggered]).numpy()
        print(f"t-SNE of {len(features)} {view} vectors ...", flush=True)
        perplexity = min(30.0, (len(features) - 1) / 3)
        points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(features)
        n = len(clean)
        for label, name in enumerate(names):
            rows = (labels == label).numpy()
            ax.scatter(points[:n][rows, 0], points[:n][rows, 1], s=14, marker="o", color=colours(label), label=name)
            ax.scatter(points[n:][rows, 0], points[n:][rows, 1], s=18, marker="x", color=colours(label))
        ax.set_xticks([])
        ax.set_yticks([])
        placed = "nearest the target's clean centre" if view == "image features" else "scored highest as the target"
        ax.set_title(f"{view}: {shares[view]:.0%} of triggered non-target images\n"
                     f"{placed} ({names[target]})", fontsize=8)
    axes[-1].scatter([], [], marker="o", color="grey", label="clean")
    axes[-1].scatter([], [], marker="x", color="grey", label="triggered")
    axes[-1].legend(fontsize=7, **LEGEND_OUTSIDE)
    run = embedded["run"]
    trigger_note = f" · trigger of {run_title(Run.open(trigger_from).results)}" if trigger_from else ""
    fig.suptitle(f"t-SNE: {run_title(run.results, embedded['trainer_cfg'])}{trigger_note}", fontsize=9)
    return save_figure(fig, path, dpi), shares


def main(argv=None):
    p = cli.parser("python -m scripts.figures", __doc__)
    commands = p.add_subparsers(dest="command", required=True)
    trigger = commands.add_parser("trigger", help="each run's trigger picture (RUN/trigger.<format>)",
                                  formatter_class=cli.HelpFormatter)
    trigger.add_argument("runs", nargs="+")
    grid = commands.add_parser("grid", help="the triggers of many runs in one picture",
                               formatter_class=cli.HelpFormatter)
    grid.add_argument("paths", nargs="+", help="run folders or folders searched for them (a sweep root)")
    grid.add_argument("--out", required=True, help="figure file to write (.png, .pdf or .svg)")
    grid.add_argument("--cols", type=int, default=6, help="runs per row (default 6)")
    tsne = commands.add_parser("tsne", help="t-SNEs of clean and triggered images (RUN/tsne.<format>)",
                               formatter_class=cli.HelpFormatter)
    tsne.add_argument("runs", nargs="+")
    tsne.add_argument("--max-images", type=int, default=400, help="test images used (default 400)")
    tsne.add_argument("--trigger-from", default="", help="a run whose trigger to apply (default: the run's own)")
    for command in (trigger, grid, tsne):
        cli.add_root(command, default=None, help="DATASET.ROOT, if the data has moved since the runs")
        command.add_argument("--dpi", type=int, default=DEFAULT_DPI,
                             help=f"resolution of PNGs and of images inside PDF/SVG (default {DEFAULT_DPI})")
    for command in (trigger, tsne):
        command.add_argument("--format", default="png", choices=[ext[1:] for ext in FIGURE_FORMATS],
                             help="file format of the figure written into each run (default png)")
    args = p.parse_args(argv)
    if args.dpi < 1:
        raise InputError(f"--dpi {args.dpi} must be a positive number of dots per inch, e.g. 200")
    if args.command == "trigger":
        written = [save_trigger_picture(run, data_root=args.root, dpi=args.dpi, fmt=args.format)
                   for run in tqdm(args.runs, desc="Trigger pictures", unit="run", disable=None)]
    elif args.command == "grid":
        written = [save_trigger_grid(args.paths, args.out, args.cols, args.root, args.dpi)]
    else:
        written = []
        for run in args.runs:
            path, shares = save_tsne(run, max_images=args.max_images, trigger_from=args.trigger_from,
                                     data_root=args.root, dpi=args.dpi, fmt=args.format)
            print(f"{path}: triggered non-target images nearest the target's centre: "
                  + ", ".join(f"{view} {share:.0%}" for view, share in shares.items()))
            written.append(path)
    print("Written: " + ", ".join(written))
    return 0


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
