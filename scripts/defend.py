"""Defences and robustness of finished runs: what each countermeasure does to CA and BA.

    python -m scripts.defend RUN_DIR_OR_ROOT [--trigger-from RUN] [--quick] [--output-dir DIR] [--only PART ...]

For every run folder (a folder with ``results.json``; a root is searched for them) this rebuilds the
trained model from its ``results.json`` config and checkpoints, as ``train.py --eval-only`` does, and
writes ``RUN/defences/defences.json``, PNG plots and ``log.txt`` there (nothing else in the run folder
is touched; the few-shot samples it draws are cached in ``RUN/defences/split_fewshot`` or ``--cache-dir``,
never in the dataset folder). Progress bars on stderr count parts, purifier strengths and classes; each
block of ``log.txt`` is headed by what it measures and on which run. The parts:

- ``robustness``: CA, BA and ASR with an input purifier in front of the model, per strength
  (JPEG, blur, resize, Gaussian noise, bit depth, random crop/shift; intensity windowing for X-rays);
- ``retune``: the received context tuned again on a trusted clean few-shot set, and a context from
  words tuned the same way (CA and BA after every epoch; prompt-learning runs only);
- ``strip``: STRIP input detection, ROC AUC of triggered against clean test images and the detection rate;
- ``reconstruct``: per class the smallest universal L-infinity trigger, and Neural Cleanse's anomaly index.

A run without a trigger (clean CoOp, zero-shot) is tested with the trigger of ``--trigger-from`` (its
target class with it), so the detectors can be compared on a clean model. Given a root, a table
across runs is written to ``DIR/defences.md`` and ``DIR/defences.csv`` with ``DIR/defences.png``
(default DIR: the root). Exit codes: 0 done, 2 bad input (one line naming the problem).
"""
import csv
import io
import os
import os.path as osp
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import cli, tables  # noqa: E402
from common.errors import InputError  # noqa: E402
from scripts.methods import method_name  # noqa: E402

DEFENCE_FOLDER = "defences"
TRUSTED_SEED_OFFSET = 100  # the defender's few-shot draw: the run's seed plus this


@dataclass
class Settings:
    """What is measured and how much; ``quick()`` is a smoke-test size."""

    parts: tuple = field(default_factory=lambda: defence_names())  # default: every registered defence
    countermeasures: tuple = ()  # names; empty: all that apply to the dataset's modality
    quick_strengths: bool = False
    trusted_shots: int = 0  # per class; 0: the run's DATASET.NUM_SHOTS
    trusted_seed: int = -1  # -1: the run's seed + TRUSTED_SEED_OFFSET
    retune_epochs: int = 5
    retune_lr: float = 0.0  # 0: the run's OPTIM.LR
    strip_images: int = 100
    strip_overlays: int = 16
    budgets: tuple = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)  # L-infinity, /255; doubling
    reconstruct_steps: int = 5  # signed-gradient steps per budget (each budget starts from the last delta)
    reconstruct_images: int = 32  # trusted images of the other classes per class
    reconstruct_success: float = 0.9
    seed: int = 0

    def quick(self):
        return replace(self, quick_strengths=True, retune_epochs=1, strip_images=8, strip_overlays=4,
                       budgets=(2.0, 8.0, 32.0), reconstruct_steps=2, reconstruct_images=8, trusted_shots=2)



def defence_names():
    """The registered defences (``trainers.defences``), in the order they are reported."""
    from trainers.defences import DEFENCE_REGISTRY

    return tuple(DEFENCE_REGISTRY.registered_names())


# ---- one run ------------------------------------------------------------------------------------
@contextmanager
def timed(seconds, name):
    """Record the seconds the block takes under ``seconds[name]``."""
    start = time.time()
    yield
    seconds[name] = round(time.time() - start, 2)


def fewshot_cache_dir(out_dir, results, cache_root=""):
    """Where the defence's few-shot samples are cached (``DATASET.FEWSHOT_CACHE_DIR``): ``cache_root``/<dataset>
    when the user gives one (``--cache-dir``), else ``RUN/defences/split_fewshot``; never in the data."""
    return osp.join(cache_root, results["dataset"]) if cache_root else osp.join(out_dir, "split_fewshot")


def defend_run(run_dir, settings, trigger_from="", data_root="", say=print, cache_root="", name=""):
    """Evaluate the parts of ``settings`` on one run; writes ``RUN/defences/defences.json`` (and the
    plots) and returns its dict. ``name``: the run's name in progress bars and log headers."""
    from dassl_compat import write_json
    from trainers.defences import DefenceContext, data, defences
    from trainers.defences.base import progress
    from trainers.run import Run

    out_dir = osp.join(run_dir, DEFENCE_FOLDER)
    run = Run.open(run_dir)
    results = run.results
    name = name or osp.basename(osp.abspath(run_dir))
    opts = data.rebuild_opts(run, trigger_from, data_root)
    opts += ["DATASET.FEWSHOT_CACHE_DIR", fewshot_cache_dir(out_dir, results, cache_root)]
    seconds = {}
    with data.open_log(osp.join(out_dir, "log.txt")) as log:
        with timed(seconds, "load"):
            trainer = run.build_trainer(opts, out_dir, log=log)
        cfg, trigger = trainer.cfg, trainer.eval_trigger()
        seed = settings.trusted_seed if settings.trusted_seed >= 0 else max(cfg.SEED, 0) + TRUSTED_SEED_OFFSET
        shots = settings.trusted_shots or cfg.DATASET.NUM_SHOTS
        report = {
            "run_dir": osp.abspath(run_dir), "method": method_name(results["trainer"], results["attack"]),
            "trainer": results["trainer"], "attack": results["attack"],
            "backbone": results["backbone"], "dataset": results["dataset"], "seed": results["seed"],
            "trigger": None if trigger is None else cfg.BACKDOOR.EVAL_TRIGGER or "own",
            "target_class": None if trigger is None else trainer.target_class,
            "class_names": [trainer.lab2cname[c] for c in range(trainer.num_classes)],
            "trusted_set": {"shots_per_class": shots, "seed": seed},
            "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(settings).items()},
        }
        context = DefenceContext(run, trainer, opts, settings, shots, seed, log, say, name)
        chosen = [d for d in defences() if d.name in settings.parts]
        # Those using the run's trainer first; then it is released, and the others build their own.
        parts = progress(sorted(chosen, key=lambda d: not d.uses_run_trainer), f"{name}: parts", leave=True,
                         unit="part")
        for defence in parts:
            parts.set_postfix_str(defence.name)
            if not defence.uses_run_trainer:
                context.trainer = trainer = None
            with timed(seconds, defence.name):
                report.update(defence.measure(context))
        parts.close()
    report["timings_s"] = seconds
    report["plots"] = run_plots(report, out_dir)
    write_json(report, osp.join(out_dir, "defences.json"))
    return report


# ---- plots and tables: each defence's own ------------------------------------------------------
def run_plots(report, out_dir):
    from trainers.defences import defences

    plots = {}
    for defence in defences():
        path = defence.plot(report, osp.join(out_dir, f"{defence.name}.png"))
        if path is not None:
            plots[defence.name] = path
    return plots


CSV_COLUMNS = ("run", "method", "trainer", "attack", "defence", "setting", "clean_accuracy", "backdoor_accuracy",
               "asr_non_target", "value", "note")


def csv_rows(name, report):
    """Long-format rows of one run: each defence's rows, after the run's columns."""
    from trainers.defences import defences

    base = {"run": name, **{k: report[k] for k in ("method", "trainer", "attack")}}
    for defence in defences():
        for row in defence.csv_rows(report):
            yield {**base, **row}


def markdown(reports):
    """The summary table (one row per run, each defence's columns) and the defences' own sections."""
    from trainers.defences import defences

    headers = ["run", "method"] + [h for defence in defences() for h in defence.summary_headers]
    rows = [[name, report["method"]] + [c for defence in defences() for c in defence.summary_cells(report)]
            for name, report in reports.items()]
    lines = [tables.markdown(rows, headers)]
    for defence in defences():
        section = defence.markdown_section(reports)
        if section:
            lines += [""] + section
    return "\n".join(lines) + "\n"


def write_tables(reports, out_dir, text):
    """``defences.md`` (``text``, the Markdown table), ``defences.csv`` and the defences' plots across runs
    (robustness: ``defences.png``, BA and CA of every run) in ``out_dir``."""
    from dassl_compat.checkpoint import atomic_write_text
    from trainers.defences import defences

    os.makedirs(out_dir, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name, report in reports.items():
        writer.writerows(csv_rows(name, report))
    paths = {"md": osp.join(out_dir, "defences.md"), "csv": osp.join(out_dir, "defences.csv")}
    atomic_write_text(text, paths["md"])
    atomic_write_text(buffer.getvalue(), paths["csv"])
    for defence in defences():
        paths.update(defence.plots_across(reports, out_dir))
    return paths


# ---- command line ---------------------------------------------------------------------------------
def build_parser():
    p = cli.parser("python -m scripts.defend", __doc__.split("\n\n")[0])
    p.add_argument("path", help="a run folder (with results.json) or a folder of runs")
    p.add_argument("--trigger-from", default="", help="run folder whose trigger tests the runs without one")
    cli.add_output_dir(p, help="folder of the table across runs (default: PATH)")
    cli.add_root(p, help="replaces the runs' DATASET.ROOT when the data has moved since")
    p.add_argument("--quick", action="store_true", help="a few strengths, one epoch, few images (smoke test)")
    p.add_argument("--only", nargs="+", choices=defence_names(), help="measure these parts only")
    p.add_argument("--countermeasures", nargs="+", help="purifiers to sweep (default: all for the modality)")
    p.add_argument("--epochs", type=int, help="re-tuning epochs (default 5)")
    p.add_argument("--lr", type=float, help="re-tuning learning rate (default: the run's OPTIM.LR)")
    p.add_argument("--shots", type=int, help="trusted clean images per class (default: the run's NUM_SHOTS)")
    p.add_argument("--trusted-seed", type=int,
                   help=f"seed of the trusted draw (default: the run's seed + {TRUSTED_SEED_OFFSET})")
    p.add_argument("--strip-images", type=int, help="test images STRIP scores, clean and triggered (default 100)")
    p.add_argument("--overlays", type=int, help="clean images superimposed per test image (default 16)")
    p.add_argument("--cache-dir", default="",
                   help="folder of the defender's few-shot sample caches, one subfolder per dataset "
                        "(default: RUN/defences/split_fewshot; nothing is ever written into the data)")
    p.add_argument("--max-budget", type=float,
                   help="largest L-infinity budget of the reconstruction, in /255 (default 64)")
    return p


def settings_from(args):
    from trainers.defences.robustness import countermeasures

    settings = Settings().quick() if args.quick else Settings()
    known = countermeasures()
    unknown = [n for n in args.countermeasures or () if n not in known]
    if unknown:
        raise InputError(f"Unknown countermeasure {unknown[0]!r}; choose from {', '.join(known)}")
    changes = {"parts": tuple(args.only or defence_names()), "countermeasures": tuple(args.countermeasures or ())}
    for key, flag, value, least in (("retune_epochs", "--epochs", args.epochs, 1),
                                    ("trusted_shots", "--shots", args.shots, 1),
                                    ("trusted_seed", "--trusted-seed", args.trusted_seed, 0),
                                    ("strip_images", "--strip-images", args.strip_images, 2),
                                    ("strip_overlays", "--overlays", args.overlays, 1)):
        if value is not None:
            if value < least:
                raise InputError(f"{flag} {value} is too small; give {least} or more")
            changes[key] = value
    if args.lr is not None:
        if args.lr <= 0:
            raise InputError(f"--lr {args.lr} must be positive")
        changes["retune_lr"] = args.lr
    if args.max_budget is not None:
        if args.max_budget <= settings.budgets[0]:
            raise InputError(f"--max-budget {args.max_budget} must exceed the first budget {settings.budgets[0]}/255")
        changes["budgets"] = tuple(b for b in settings.budgets if b < args.max_budget) + (args.max_budget,)
    return replace(settings, **changes)


def main(argv=None):
    args = build_parser().parse_args(argv)
    settings = settings_from(args)
    from trainers.run import Run

    if args.trigger_from:
        Run.open(args.trigger_from, what="--trigger-from")
    if not osp.isdir(args.path):
        raise InputError(f"{args.path} is not a folder; give a run folder (with results.json) or a folder of runs")
    runs = [run.path for run in Run.find([args.path])]
    reports, skipped = {}, {}
    for number, run_dir in enumerate(runs, start=1):
        name = osp.relpath(run_dir, args.path) if len(runs) > 1 else osp.basename(osp.abspath(run_dir))
        print(f"[{number}/{len(runs)}] {name}", flush=True)
        start = time.time()
        try:
            reports[name] = defend_run(run_dir, settings, args.trigger_from, args.root, cache_root=args.cache_dir,
                                        name=name)
        except InputError as e:
            if len(runs) == 1:
                raise
            skipped[name] = str(e)
            print(f"  skipped: {e}", flush=True)
            continue
        print(f"  done in {time.time() - start:.0f} s: {osp.join(run_dir, DEFENCE_FOLDER, 'defences.json')}",
              flush=True)
    text = markdown(reports)
    paths = write_tables(reports, args.output_dir or args.path, text) if len(runs) > 1 else None
    print(text)
    if paths:
        print("Tables: " + ", ".join(paths.values()))
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    return reports


run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
