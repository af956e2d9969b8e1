"""Defences and robustness of finished runs: what each countermeasure does to CA and BA.

    python -m scripts.defend RUN_DIR_OR_ROOT [--trigger-from RUN] [--quick] [--output-dir DIR] [--only PART ...]

For every run folder (a folder with ``results.json``; a root is searched for them) this rebuilds the
trained model from its ``results.json`` config and checkpoints, as ``train.py --eval-only`` does, and
writes ``RUN/defences/defences.json``, PNG plots and ``log.txt`` there (nothing else in the run folder
is touched):

- ``robustness``: CA, BA and ASR with an input purifier in front of the model, per strength
  (JPEG, blur, resize, Gaussian noise, bit depth, random crop/shift; intensity windowing for X-rays);
- ``retune``: the received context tuned again on a trusted clean few-shot set, and a context from
  words tuned the same way (CA and BA after every epoch; prompt-learning runs only);
- ``strip``: STRIP input detection, ROC AUC of triggered against clean test images;
- ``reconstruct``: per class the smallest universal L-infinity trigger, and Neural Cleanse's anomaly index.

A run without a trigger (clean CoOp, zero-shot) is tested with the trigger of ``--trigger-from`` (its
target class with it), so the detectors can be compared on a clean model. Given a root, a table
across runs is written to ``DIR/defences.md`` and ``DIR/defences.csv`` with ``DIR/defences.png``
(default DIR: the root). Exit codes: 0 done, 2 bad input (one line naming the problem).
"""
import csv
import io
import math
import os
import os.path as osp
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from common import cli  # noqa: E402
from common.errors import InputError  # noqa: E402
from scripts.figures import plt, save_png  # noqa: E402
from scripts.methods import method_name  # noqa: E402

PARTS = ("robustness", "retune", "strip", "reconstruct")
DEFENCE_FOLDER = "defences"
TRUSTED_SEED_OFFSET = 100  # the defender's few-shot draw: the run's seed plus this


@dataclass
class Settings:
    """What is measured and how much; ``quick()`` is a smoke-test size."""

    parts: tuple = PARTS
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



# ---- one run ------------------------------------------------------------------------------------
@contextmanager
def timed(seconds, name):
    """Record the seconds the block takes under ``seconds[name]``."""
    start = time.time()
    yield
    seconds[name] = round(time.time() - start, 2)


def robustness_part(trainer, results, settings, log):
    from trainers.defences import robustness as rob
    from trainers.defences.data import modality

    chosen = ([rob.COUNTERMEASURES[name] for name in settings.countermeasures] if settings.countermeasures
              else rob.countermeasures_for(modality(trainer.cfg)))
    unpurified, sweep = rob.sweep(trainer, chosen, settings.quick_strengths, settings.seed, log)
    recorded = {"clean_accuracy": results["clean"]["accuracy"],
                "backdoor_accuracy": (results["backdoor"] or {}).get("accuracy")}
    same_ba = recorded["backdoor_accuracy"] is None or unpurified["backdoor_accuracy"] == recorded["backdoor_accuracy"]
    reference = {"results_json": recorded, "unpurified": unpurified,
                 "matches_results_json": unpurified["clean_accuracy"] == recorded["clean_accuracy"] and same_ba}
    return reference, sweep


def retune_part(cfg, run, opts, shots, seed, settings, log, say):
    from trainers.defences import retune as rt

    if not rt.is_prompt_learning(cfg):
        return {"skipped": f"{cfg.TRAINER.NAME} learns no prompt context to re-tune"}
    say(f"  retune: {settings.retune_epochs} epoch(s) on {shots} trusted shots per class (seed {seed})")
    common = dict(cfg=cfg, run=run, own_trigger=run.results["backdoor"] is not None, shots=shots, seed=seed,
                  epochs=settings.retune_epochs, lr=settings.retune_lr or None)
    received = opts + rt.defender_opts(**common)
    from_words = opts + rt.defender_opts(**common, words=rt.init_words(cfg))
    return {"lr": settings.retune_lr or cfg.OPTIM.LR, "received": rt.retune(run, received, log),
            "from_words": rt.retune(run, from_words, log, received=False)}


def defend_run(run_dir, settings, trigger_from="", data_root="", say=print):
    """Evaluate the parts of ``settings`` on one run; writes ``RUN/defences/defences.json`` (and the
    plots) and returns its dict."""
    from dassl_compat import write_json
    from trainers.defences import data
    from trainers.defences.reconstruct import reconstruct
    from trainers.defences.strip import strip
    from trainers.run import Run

    out_dir = osp.join(run_dir, DEFENCE_FOLDER)
    run = Run.open(run_dir)
    results = run.results
    opts = data.rebuild_opts(run, trigger_from, data_root)
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
        if "robustness" in settings.parts:
            say("  robustness")
            with timed(seconds, "robustness"):
                report["reference"], report["robustness"] = robustness_part(trainer, results, settings, log)
        if {"strip", "reconstruct"} & set(settings.parts):
            trusted, trusted_labels = data.trusted_images(cfg, shots, seed, log)
        if "strip" in settings.parts:
            say(f"  strip: {settings.strip_images} test images x {settings.strip_overlays} overlays")
            with timed(seconds, "strip"):
                images, _ = data.test_subset(trainer, settings.strip_images, settings.seed)
                report["strip"] = strip(trainer, trigger, images, trusted, settings.strip_overlays, settings.seed)
        if "reconstruct" in settings.parts:
            say(f"  reconstruct: {trainer.num_classes} classes, budgets "
                f"{settings.budgets[0]}..{settings.budgets[-1]}/255")
            with timed(seconds, "reconstruct"):
                report["reconstruct"] = reconstruct(
                    trainer, trusted, trusted_labels, settings.budgets, settings.reconstruct_steps,
                    settings.reconstruct_success, settings.reconstruct_images, settings.seed,
                    log=lambda line: print(line, file=log, flush=True))
        del trainer  # the re-tuning builds its own models
        if "retune" in settings.parts:
            with timed(seconds, "retune"):
                report["retune"] = retune_part(cfg, run, opts, shots, seed, settings, log, say)
    report["timings_s"] = seconds
    report["plots"] = run_plots(report, out_dir)
    write_json(report, osp.join(out_dir, "defences.json"))
    return report


# ---- plots ----------------------------------------------------------------------------------------
def _strength_label(strength):
    return "off" if strength == 0 else f"{strength:g}"


def _grid(count, width=3.2, height=2.8):
    cols = min(count, 4)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[count:]:
        ax.axis("off")
    return fig, list(axes.flat[:count])


def _title(report):
    return f"{report['method']} on {report['backbone']} / {report['dataset']}"


def robustness_plot(report, path, curves=None):
    """CA and BA against strength, one panel per countermeasure; ``curves``: {label: report} to overlay runs."""
    curves = curves or {None: report}
    names = list(report["robustness"])
    fig, axes = _grid(len(names))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, name in zip(axes, names):
        for k, (label, rep) in enumerate(curves.items()):
            sweep = rep.get("robustness", {}).get(name)
            if sweep is None:
                continue
            points = sweep["points"]
            x = range(len(points))
            prefix = "" if label is None else f"{label} "
            colour_ca, colour_ba = (colours[0], colours[3]) if label is None else (colours[k % 10],) * 2
            ax.plot(x, [p["clean_accuracy"] for p in points], "o-", color=colour_ca, label=f"{prefix}CA")
            if points[0]["backdoor_accuracy"] is not None:
                ax.plot(x, [p["backdoor_accuracy"] for p in points], "s--", color=colour_ba, label=f"{prefix}BA")
            ax.set_xticks(list(x), [_strength_label(p["strength"]) for p in points])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(report["robustness"][name]["parameter"], fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    title = "CA (solid) and BA (dashed) under input purifiers"
    fig.suptitle(title if len(curves) > 1 else f"{title}: {_title(report)}", fontsize=10)
    return save_png(fig, path)


def retune_plot(report, path):
    fig, axes = _grid(1, width=5, height=3.4)
    ax = axes[0]
    for key, style in (("received", "-"), ("from_words", ":")):
        epochs = report["retune"][key]["epochs"]
        x = [e["epoch"] for e in epochs]
        ax.plot(x, [e["clean_accuracy"] for e in epochs], "o" + style, color="C0", label=f"CA, {key.replace('_', ' ')}")
        if epochs[0]["backdoor_accuracy"] is not None:
            ax.plot(x, [e["backdoor_accuracy"] for e in epochs], "s" + style, color="C3",
                    label=f"BA, {key.replace('_', ' ')}")
    ax.set_xlabel("epochs of tuning on the trusted clean set")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"Re-tuning: {_title(report)}", fontsize=9)
    return save_png(fig, path)


def strip_plot(report, path):
    fig, axes = _grid(1, width=5, height=3.4)
    ax, s = axes[0], report["strip"]
    ax.hist(s["clean_entropy"], bins=20, alpha=0.6, label="clean", color="C0")
    if s["triggered_entropy"] is not None:
        ax.hist(s["triggered_entropy"], bins=20, alpha=0.6, label="triggered", color="C3")
    ax.set_xlabel("mean prediction entropy under superimposition (nats)")
    ax.legend(fontsize=7)
    auc = "n/a (no trigger)" if s["auc"] is None else f"{s['auc']:.3f}"
    ax.set_title(f"STRIP, AUC {auc}: {_title(report)}", fontsize=9)
    return save_png(fig, path)


def reconstruct_plot(report, path):
    fig, axes = _grid(2, width=4.2, height=3.4)
    classes = report["reconstruct"]["classes"]
    names = [c["name"][:12] for c in classes]
    target = report["target_class"]
    colours = ["C3" if c["class"] == target else "C0" for c in classes]
    axes[0].bar(names, [c["min_budget"] for c in classes], color=colours)
    axes[0].set_yscale("log")
    axes[0].yaxis.set_major_formatter("{x:g}")
    axes[0].yaxis.set_minor_formatter("{x:g}")
    axes[0].set_ylabel("minimal universal L-inf budget (/255)")
    axes[1].bar(names, [c["anomaly_index"] or 0 for c in classes], color=colours)
    axes[1].axhline(report["reconstruct"]["flag_above"], color="k", ls="--", lw=1)
    axes[1].set_ylabel("anomaly index")
    for ax in axes:
        ax.set_xlabel("class" + ("" if target is None else " (red: the backdoor target)"))
        ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.suptitle(f"Trigger reconstruction: {_title(report)}", fontsize=9)
    return save_png(fig, path)


def run_plots(report, out_dir):
    plots = {}
    for key, plot, ok in (("robustness", robustness_plot, "robustness" in report),
                          ("retune", retune_plot, "received" in report.get("retune", {})),
                          ("strip", strip_plot, "strip" in report),
                          ("reconstruct", reconstruct_plot, "reconstruct" in report)):
        if ok:
            plots[key] = plot(report, osp.join(out_dir, f"{key}.png"))
    return plots


# ---- the table across runs ----------------------------------------------------------------------
CSV_COLUMNS = ("run", "method", "trainer", "attack", "defence", "setting", "clean_accuracy", "backdoor_accuracy",
               "asr_non_target", "value", "note")


def csv_rows(name, report):
    """Long-format rows of one run: one per purifier strength, re-tuning epoch, detector and class."""
    base = {"run": name, **{k: report[k] for k in ("method", "trainer", "attack")}}
    metric_keys = ("clean_accuracy", "backdoor_accuracy", "asr_non_target")
    for countermeasure, sweep in report.get("robustness", {}).items():
        for p in sweep["points"]:
            yield {**base, "defence": countermeasure,
                   "setting": f"{sweep['parameter']} {_strength_label(p['strength'])}", **{k: p[k] for k in metric_keys}}
    for variant in ("received", "from_words"):
        for e in report.get("retune", {}).get(variant, {}).get("epochs", []):
            yield {**base, "defence": f"retune_{variant}", "setting": f"epoch {e['epoch']}",
                   **{k: e[k] for k in metric_keys}}
    if "strip" in report:
        yield {**base, "defence": "strip", "setting": "roc_auc", "value": report["strip"]["auc"]}
    for c in report.get("reconstruct", {}).get("classes", []):
        notes = [word for word, on in (("target", c["class"] == report["target_class"]), ("flagged", c["flagged"]))
                 if on]
        yield {**base, "defence": "reconstruct", "setting": f"class {c['class']} min budget {c['min_budget']:.3g}/255",
               "value": c["anomaly_index"], "note": " ".join(notes)}


def _fmt(x, digits=3):
    return "-" if x is None else f"{x:.{digits}f}"


def _ca_ba(entry):
    return f"{_fmt(entry['clean_accuracy'])} / {_fmt(entry['backdoor_accuracy'])}"


def summary_row(name, report):
    """One Markdown row: CA/BA, each purifier at its strongest, re-tuning at its last epoch, detectors."""
    cells = [name, report["method"]]
    ref = report.get("reference", {}).get("unpurified")
    cells.append(_ca_ba(ref) if ref else "-")
    retune = report.get("retune", {})
    for variant in ("received", "from_words"):
        epochs = retune.get(variant, {}).get("epochs")
        cells.append(_ca_ba(epochs[-1]) if epochs else "-")
    cells.append(_fmt(report.get("strip", {}).get("auc")))
    rec = report.get("reconstruct")
    cells.append(f"{', '.join(map(str, rec['flagged'])) or 'none'}; target {_target_index(rec, report)}" if rec
                 else "-")
    return cells


def _target_index(rec, report):
    target = next((c for c in rec["classes"] if c["class"] == report["target_class"]), None)
    if target is None:
        return "-"
    return "n/a (no spread)" if target["anomaly_index"] is None else f"{target['anomaly_index']:.2f}"


def markdown(reports):
    lines = ["| run | method | CA / BA | re-tuned CA / BA | from words CA / BA | STRIP AUC | "
             "flagged classes; target's anomaly index |", "|---" * 7 + "|"]
    lines += ["| " + " | ".join(summary_row(name, r)) + " |" for name, r in reports.items()]
    if not any("robustness" in r for r in reports.values()):
        return "\n".join(lines) + "\n"
    lines += ["", "CA / BA per purifier strength (strengths: off, then increasing):", "",
              "| run | purifier | " + "CA / BA at each strength |", "|---|---|---|"]
    for name, r in reports.items():
        for countermeasure, sweep in r.get("robustness", {}).items():
            cells = "; ".join(f"{_strength_label(p['strength'])}: {_ca_ba(p)}" for p in sweep["points"])
            lines.append(f"| {name} | {countermeasure} ({sweep['parameter']}) | {cells} |")
    return "\n".join(lines) + "\n"


def write_tables(reports, out_dir, text):
    """``defences.md`` (``text``, the Markdown table), ``defences.csv`` and ``defences.png`` (BA and CA of
    every run) in ``out_dir``."""
    from dassl_compat.checkpoint import atomic_write_text

    os.makedirs(out_dir, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for name, report in reports.items():
        writer.writerows(csv_rows(name, report))
    paths = {"md": osp.join(out_dir, "defences.md"), "csv": osp.join(out_dir, "defences.csv")}
    atomic_write_text(text, paths["md"])
    atomic_write_text(buffer.getvalue(), paths["csv"])
    with_sweep = {name: r for name, r in reports.items() if "robustness" in r}
    if with_sweep:
        first = next(iter(with_sweep.values()))
        paths["png"] = robustness_plot(first, osp.join(out_dir, "defences.png"), curves=with_sweep)
    return paths


# ---- command line ---------------------------------------------------------------------------------
def build_parser():
    p = cli.parser("python -m scripts.defend", __doc__.split("\n\n")[0])
    p.add_argument("path", help="a run folder (with results.json) or a folder of runs")
    p.add_argument("--trigger-from", default="", help="run folder whose trigger tests the runs without one")
    cli.add_output_dir(p, help="folder of the table across runs (default: PATH)")
    cli.add_root(p, help="replaces the runs' DATASET.ROOT when the data has moved since")
    p.add_argument("--quick", action="store_true", help="a few strengths, one epoch, few images (smoke test)")
    p.add_argument("--only", nargs="+", choices=PARTS, help="measure these parts only")
    p.add_argument("--countermeasures", nargs="+", help="purifiers to sweep (default: all for the modality)")
    p.add_argument("--epochs", type=int, help="re-tuning epochs (default 5)")
    p.add_argument("--lr", type=float, help="re-tuning learning rate (default: the run's OPTIM.LR)")
    p.add_argument("--shots", type=int, help="trusted clean images per class (default: the run's NUM_SHOTS)")
    p.add_argument("--trusted-seed", type=int,
                   help=f"seed of the trusted draw (default: the run's seed + {TRUSTED_SEED_OFFSET})")
    p.add_argument("--strip-images", type=int, help="test images STRIP scores, clean and triggered (default 100)")
    p.add_argument("--overlays", type=int, help="clean images superimposed per test image (default 16)")
    p.add_argument("--max-budget", type=float,
                   help="largest L-infinity budget of the reconstruction, in /255 (default 64)")
    return p


def settings_from(args):
    from trainers.defences.robustness import COUNTERMEASURES

    settings = Settings().quick() if args.quick else Settings()
    unknown = [n for n in args.countermeasures or () if n not in COUNTERMEASURES]
    if unknown:
        raise InputError(f"Unknown countermeasure {unknown[0]!r}; choose from {', '.join(COUNTERMEASURES)}")
    changes = {"parts": tuple(args.only or PARTS), "countermeasures": tuple(args.countermeasures or ())}
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
            reports[name] = defend_run(run_dir, settings, args.trigger_from, args.root)
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


def run(argv=None):
    """Entry point with the project's exit codes (``common.cli``; returned, not raised)."""
    return cli.run(main, argv)


if __name__ == "__main__":
    cli.exit_with(main)
