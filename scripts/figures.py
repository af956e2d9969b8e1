"""Pictures of finished runs (PNG, matplotlib).

    python -m scripts.figures trigger RUN...                 each RUN/trigger.png
    python -m scripts.figures grid ROOT_OR_RUN... --out triggers.png [--cols 6]
    python -m scripts.figures tsne RUN... [--max-images 400] [--trigger-from RUN]   each RUN/tsne.png

- trigger: a clean test image, the triggered image, their difference and, for BAPLe, the learned
  noise alone (differences amplified to the full range).
- grid: the triggers of many runs side by side (the paper's Figures A.1-A.2): for each run the
  triggered first test image above its trigger delta, i.e. BAPLe's learned noise or, for the
  other attacks, the amplified change their trigger makes to that image. Runs without a trigger
  are left out.
- tsne: a t-SNE of the run's image features of clean and triggered test images, coloured by
  class, circles clean and crosses triggered (the paper's Figure 3). ``--trigger-from`` takes the
  trigger of another run, e.g. to look at a clean model under BAPLe's trigger.

``--root`` (alias ``--data-root``) replaces the runs' DATASET.ROOT when the data has moved since.
"""
import math
import os.path as osp

import torch

from common import cli
from common.errors import InputError
from dassl_compat import DATASET_REGISTRY, build_transform
from scripts.methods import method_name
from trainers.display import delta_picture, pyplot, save_png, trigger_views
from trainers.run import Run

plt = pyplot()


def _to_hwc(view):
    """A [3, H, W] picture of ``trigger_views`` (already float, in [0, 1], on the CPU) as matplotlib's HxWx3."""
    return view.permute(1, 2, 0).numpy()


def run_config(run, data_root=None):
    """The run's config (``Run.cfg``), with ``DATASET.ROOT`` replaced when the data has moved."""
    cfg = run.cfg
    if data_root:
        cfg.DATASET.ROOT = data_root
    return cfg


def run_title(results):
    method = method_name(results["trainer"], results["attack"])
    target = f" · target {results['target_name']}" if results["attack"] != "none" else ""
    return f"{method} · {results['backbone']}/{results['dataset']}{target} · seed {results['seed']}"


def first_test_image(cfg):
    """The run's first test image after its test transform, as a [3, H, W] tensor in [0, 1]."""
    import datasets  # noqa: F401  (registers the datasets)
    from datasets.imageio import load_image

    dataset = DATASET_REGISTRY.get(cfg.DATASET.NAME)(cfg)
    return build_transform(cfg, is_train=False)(load_image(dataset.test[0].impath))


def run_trigger(run_dir, data_root=None):
    """(results, trigger, views of the first test image) of a run with a trigger."""
    run = Run.open(run_dir)
    trigger = run.trigger()
    if trigger is None:
        raise InputError(f"The run in {run.path} ({run.cfg.TRAINER.NAME}, attack none) has no trigger to picture; "
                         "pass a BAPLe or poisoned-baseline run")
    return run.results, trigger, trigger_views(trigger, first_test_image(run_config(run, data_root)))


def save_trigger_picture(run_dir, path=None, data_root=None):
    """Clean test image, triggered image, their difference (amplified) and, for BAPLe, the learned
    noise alone (amplified). Returns the PNG path (default ``<run_dir>/trigger.png``)."""
    results, trigger, views = run_trigger(run_dir, data_root)
    panels = [("clean", views["clean"]), ("triggered", views["triggered"]),
              ("difference (amplified)", views["difference"])]
    if "noise" in views:
        noise = trigger.noise
        panels.append((f"learned noise, ||δ||∞ = {noise.delta.abs().max() * 255:.1f}/255 "
                       f"(ε = {noise.eps * 255:.0f}/255)", views["noise"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    for ax, (title, picture) in zip(axes, panels):
        ax.imshow(_to_hwc(picture))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(run_title(results), fontsize=10)
    return save_png(fig, path or osp.join(run_dir, "trigger.png"))


def save_trigger_grid(paths, path, cols=6, data_root=None):
    """For every run with a trigger under ``paths``: its triggered first test image above its trigger
    delta (BAPLe's noise, else the amplified difference). Returns the PNG path."""
    tiles = []
    for run in Run.find(paths):
        if run.results["attack"] == "none":
            continue  # a clean run: no trigger of its own
        results, _, views = run_trigger(run.path, data_root)
        tiles.append((run_title(results).replace(" · ", "\n"), views["triggered"], delta_picture(views)))
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
        bottom.set_title("δ (amplified)", fontsize=7)
    return save_png(fig, path)


@torch.no_grad()
def image_features(run_dir, max_images=400, trigger_from="", data_root=None):
    """Image features (the model's unit-norm image embeddings) of up to ``max_images`` test images,
    spread evenly over the test set, clean and triggered: (clean [N, D], triggered [N, D], labels [N],
    class names, results)."""
    run = Run.open(run_dir)
    opts = (["DATASET.ROOT", data_root] if data_root else []) + (["BACKDOOR.EVAL_TRIGGER", trigger_from]
                                                                 if trigger_from else [])
    trainer = run.build_trainer(opts)
    results, cfg = run.results, trainer.cfg
    trainer.set_model_mode("eval")
    trigger = trainer.eval_trigger()
    if trigger is None:
        raise InputError(f"The run in {run_dir} has no trigger; pass --trigger-from <a run with a trigger>")
    test_set = trainer.test_loader.dataset
    count = min(max_images, len(test_set))
    indices = torch.linspace(0, len(test_set) - 1, count).round().long().unique().tolist()
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(test_set, indices),
                                         batch_size=cfg.DATALOADER.TEST.BATCH_SIZE)
    clean, triggered, labels = [], [], []
    with trainer.autocast(trainer.precision()):
        for batch in loader:
            images, label = trainer.parse_batch_test(batch)
            clean.append(trainer.model.image_embeddings(images).float().cpu())
            triggered.append(trainer.model.image_embeddings(trigger(images)).float().cpu())
            labels.append(label.cpu())
    names = [trainer.lab2cname[i] for i in range(trainer.num_classes)]
    return torch.cat(clean), torch.cat(triggered), torch.cat(labels), names, results


def save_tsne(run_dir, path=None, max_images=400, trigger_from="", data_root=None):
    """t-SNE of clean and triggered test-image features, coloured by class. Returns the PNG path."""
    from sklearn.manifold import TSNE

    if max_images < 5:
        raise InputError(f"--max-images {max_images} is too few for a t-SNE; use 5 or more")
    clean, triggered, labels, names, results = image_features(run_dir, max_images, trigger_from, data_root)
    features = torch.cat([clean, triggered]).numpy()
    perplexity = min(30.0, (len(features) - 1) / 3)
    points = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0).fit_transform(features)
    n = len(clean)
    colours = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    for label, name in enumerate(names):
        rows = (labels == label).numpy()
        ax.scatter(points[:n][rows, 0], points[:n][rows, 1], s=14, marker="o", color=colours(label), label=name)
        ax.scatter(points[n:][rows, 0], points[n:][rows, 1], s=18, marker="x", color=colours(label))
    ax.scatter([], [], marker="o", color="grey", label="clean")
    ax.scatter([], [], marker="x", color="grey", label="triggered")
    ax.legend(fontsize=7, loc="best")
    ax.set_xticks([])
    ax.set_yticks([])
    trigger_note = f" (trigger of {trigger_from})" if trigger_from else ""
    ax.set_title(f"t-SNE of image features: {run_title(results)}{trigger_note}", fontsize=8)
    return save_png(fig, path or osp.join(run_dir, "tsne.png"))


def main(argv=None):
    p = cli.parser("python -m scripts.figures", __doc__)
    commands = p.add_subparsers(dest="command", required=True)
    trigger = commands.add_parser("trigger", help="each run's trigger picture (RUN/trigger.png)",
                                  formatter_class=cli.HelpFormatter)
    trigger.add_argument("runs", nargs="+")
    grid = commands.add_parser("grid", help="the triggers of many runs in one picture",
                               formatter_class=cli.HelpFormatter)
    grid.add_argument("paths", nargs="+", help="run folders or folders searched for them (a sweep root)")
    grid.add_argument("--out", required=True, help="PNG file to write")
    grid.add_argument("--cols", type=int, default=6, help="runs per row (default 6)")
    tsne = commands.add_parser("tsne", help="t-SNE of clean and triggered image features (RUN/tsne.png)",
                               formatter_class=cli.HelpFormatter)
    tsne.add_argument("runs", nargs="+")
    tsne.add_argument("--max-images", type=int, default=400, help="test images used (default 400)")
    tsne.add_argument("--trigger-from", default="", help="a run whose trigger to apply (default: the run's own)")
    for command in (trigger, grid, tsne):
        cli.add_root(command, default=None, help="DATASET.ROOT, if the data has moved since the runs")
    args = p.parse_args(argv)
    if args.command == "trigger":
        written = [save_trigger_picture(run, data_root=args.root) for run in args.runs]
    elif args.command == "grid":
        written = [save_trigger_grid(args.paths, args.out, args.cols, args.root)]
    else:
        written = [save_tsne(run, max_images=args.max_images, trigger_from=args.trigger_from,
                             data_root=args.root) for run in args.runs]
    print("Written: " + ", ".join(written))
    return 0


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
