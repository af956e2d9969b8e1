"""The offline demo: BAPLe and its baselines on the demo Med-FM and a synthetic Kather, in minutes on a CPU.

    python -m scripts.quickstart [--output-dir output/quickstart] [--root data/quickstart] [--seed 1] [KEY VALUE ...]

Generates the synthetic Kather dataset if it is missing, then runs, each through ``train.py`` with
the repository's config files for the ``biomedclip`` architecture (scaled down by a few overrides)
and each in its own folder under ``--output-dir``:

1. ``zeroshot``            zero-shot classification with the dataset's prompt template
2. ``coop``                clean prompt learning (CoOp)
3. ``badnets_pl``          prompt learning on a BadNets-poisoned few-shot set
4. ``baple``               BAPLe, its context initialised from ``coop``
5. ``coop_under_baple``    the clean ``coop`` model tested with BAPLe's learned trigger

and prints a table of clean accuracy (CA), backdoor accuracy (BA) and non-target attack success
(ASR) read from the runs' ``results.json`` files. The model is ``clip_models/demo``: a small model
pretrained on synthetic images, not a real Med-FM (see its README).
"""
import contextlib
import os
import os.path as osp
import sys
import time

# Nothing here needs the network; set before transformers / open_clip are imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import cli, tables  # noqa: E402
from common.errors import InputError  # noqa: E402

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
BACKBONE = "biomedclip"  # the demo model's architecture (open_clip CustomTextCLIP with a BERT tower)
DATASET = "kather"

# Scaled-down settings on top of the paper's config files (configs/trainers/<Method>.yaml, --backbone biomedclip).
DEMO = {"shots": 32, "epochs": 20, "train_per_class": 32, "test_per_class": 40}
# Class-specific context (CoOp's other variant; the paper uses one shared context). The demo model's
# features move little under an 8/255 trigger, so a shared context can carry the backdoor only by
# pulling every class towards the target (clean accuracy 0.46 against CoOp's 0.88, see the README); a
# context per class lets the target's own prompt carry it.
DEMO_OVERRIDES = ("TRAINER.COOP.CSC", "True")


def demo_weights():
    from clip_models.demo import MODEL_DIR

    return MODEL_DIR


def ensure_dataset(data_root, seed=0):
    """The synthetic Kather under ``data_root``: generated when missing; an existing one must hold
    enough training images per class for the few-shot sample."""
    from datasets.folder import list_split, read_classnames
    from datasets.synthetic import generate

    folder = osp.join(data_root, DATASET)
    if not (osp.isdir(folder) and os.listdir(folder)):
        with run_output(verbose=False):
            generate(DATASET, data_root, train_per_class=DEMO["train_per_class"],
                     test_per_class=DEMO["test_per_class"], size=224, seed=seed)
        return folder, True
    classes = read_classnames(osp.join(folder, "classnames.txt"))
    fewest = min(len(files) for files in list_split(osp.join(folder, "images"), "train", classes).values())
    if fewest < DEMO["shots"]:
        raise InputError(f"{folder} has only {fewest} training images in some class, the demo samples "
                         f"{DEMO['shots']} per class; delete it (it is regenerated) or pass another --root")
    return folder, False


def run_arguments(name, trainer, data_root, output_root, seed, weights, target=0, workers=0, verbose=False,
                  flags=(), overrides=(), extra=()):
    """``train.py`` arguments of one demo run: the paper's config files, then the demo's scale-down."""
    args = ["--root", data_root, "--trainer", trainer, "--seed", str(seed),
            "--dataset-config-file", osp.join(REPO, "configs", "datasets", f"{DATASET}.yaml"),
            "--config-file", osp.join(REPO, "configs", "trainers", f"{trainer}.yaml"), "--backbone", BACKBONE,
            "--output-dir", osp.join(output_root, name), *flags,
            "MODEL.BACKBONE.WEIGHTS", weights, "BACKDOOR.TARGET_CLASS", str(target),
            "DATALOADER.NUM_WORKERS", str(workers), "VERBOSE", str(verbose)]
    if trainer != "ZeroShot":
        args += ["DATASET.NUM_SHOTS", str(DEMO["shots"]), "OPTIM.MAX_EPOCH", str(DEMO["epochs"]),
                 "TRAIN.CHECKPOINT_FREQ", "0"]
    return args + list(overrides) + (list(extra) if trainer != "ZeroShot" else [])


def plan(data_root, output_root, weights, seed=1, target=0, workers=0, verbose=False, extra=()):
    """[(run name, description, train.py arguments)] of the demo, in the order they must run; ``extra``
    KEY VALUE overrides go to every prompt-learning run, after the demo's own."""
    extra = list(DEMO_OVERRIDES) + list(extra)

    def run(name, trainer, flags=(), overrides=()):
        return run_arguments(name, trainer, data_root, output_root, seed, weights, target, workers,
                             verbose, flags, overrides, extra)

    coop_dir, baple_dir = osp.join(output_root, "coop"), osp.join(output_root, "baple")
    return [
        ("zeroshot", "Zero-shot", run("zeroshot", "ZeroShot")),
        ("coop", "CoOp (clean prompt learning)", run("coop", "CoOp")),
        ("badnets_pl", "BadNets-PL", run("badnets_pl", "CoOp", overrides=["BACKDOOR.ATTACK", "badnets"])),
        ("baple", "BAPLe", run("baple", "BAPLe", flags=["--init", coop_dir])),
        ("coop_under_baple", "CoOp, tested with BAPLe's trigger",
         run("coop_under_baple", "CoOp", flags=["--eval-only", "--model-dir", coop_dir],
             overrides=["BACKDOOR.EVAL_TRIGGER", baple_dir])),
    ]


@contextlib.contextmanager
def run_output(verbose):
    """Send a run's console output to its log only (unless ``verbose``), and undo ``setup_logger``'s tee."""
    console = sys.stdout
    sink = None if verbose else open(os.devnull, "w")
    sys.stdout = console if verbose else sink
    try:
        yield
    finally:
        log_file = getattr(sys.stdout, "file", None)
        if sys.stdout not in (console, sink) and log_file is not None:
            log_file.close()
        sys.stdout = console
        if sink is not None:
            sink.close()


def run_train(argv, verbose=False):
    import train

    args = train.build_parser().parse_args(argv)
    with run_output(verbose):
        train.main(args)


def read_results(run_dir):
    from trainers.run import Run

    return Run.open(run_dir).results


def _fraction(value):
    return "-" if value is None else f"{value:.3f}"


def results_table(rows):
    """A plain-text table of CA, BA and non-target ASR, one row per ``(label, results.json dict)``."""
    lines = []
    for label, results in rows:
        backdoor = results.get("backdoor") or {}
        lines.append((label, _fraction(results["clean"]["accuracy"]), _fraction(backdoor.get("accuracy")),
                      _fraction(backdoor.get("asr_non_target"))))
    return tables.text(lines, ("method", "CA", "BA", "ASR (non-target)"), align=("left", "right", "right", "right"))


def main(argv=None):
    parser = cli.parser("python -m scripts.quickstart", __doc__.split("\n\n")[0])
    parser.epilog = ("Outputs: one folder per run with results.json, log.txt, its TensorBoard event file and "
                     "checkpoints; trigger.png in the BAPLe run.")
    cli.add_output_dir(parser, default="output/quickstart", help="folder of the runs (default %(default)s)")
    cli.add_root(parser, default="data/quickstart", help="DATASET.ROOT, where the synthetic Kather is generated "
                 "if missing (default %(default)s)")
    parser.add_argument("--weights", default="", help="another open_clip model folder to run the demo on "
                        "(default: the demo Med-FM in clip_models/demo/model)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", type=int, default=0, help="BAPLe's and BadNets' target class (default 0, "
                        "adipose tissue)")
    parser.add_argument("--workers", type=int, default=0, help="data-loading worker processes per run")
    parser.add_argument("--verbose", action="store_true", help="show each run's full log")
    cli.add_overrides(parser, help="config overrides (KEY VALUE pairs) for every prompt-learning run, "
                      "e.g. OPTIM.MAX_EPOCH 20")
    args = parser.parse_args(argv)
    data_root, output_root = osp.abspath(args.root), osp.abspath(args.output_dir)
    weights = osp.abspath(args.weights) if args.weights else demo_weights()

    start = time.time()
    folder, generated = ensure_dataset(data_root)
    print(f"dataset: {folder} ({'generated' if generated else 'found'}, {time.time() - start:.0f} s)")
    print(f"model:   {weights}")
    runs = plan(data_root, output_root, weights, args.seed, args.target, args.workers, args.verbose,
                cli.overrides(args))
    for number, (name, description, argv_run) in enumerate(runs, start=1):
        run_start = time.time()
        # On its own line: a training run's epoch bar (stderr, on a terminal) draws on the line below it.
        print(f"[{number}/{len(runs)}] {description} ...", flush=True)
        run_train(argv_run, args.verbose)
        print(f"[{number}/{len(runs)}] {time.time() - run_start:.0f} s")

    from scripts.figures import save_trigger_picture

    with run_output(args.verbose):
        picture = save_trigger_picture(osp.join(output_root, "baple"))
    results = {name: read_results(osp.join(output_root, name)) for name, _, _ in runs}
    print()
    print(results_table([(description, results[name]) for name, description, _ in runs]))
    target = results["baple"]
    print(f"\nTarget class {target['target_class']} ({target['target_name']}); BA counts every triggered test "
          "image, ASR only those whose true class is not the target.")
    print(f"Runs:        {output_root}/<run>/results.json, log.txt")
    print(f"TensorBoard: tensorboard --logdir {output_root}")
    print(f"Trigger:     {picture}")
    print(f"Total time:  {time.time() - start:.0f} s")
    return results


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
