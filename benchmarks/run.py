"""Cost of a BAPLe step against a CoOp step and a full fine-tuning step (and of CoCoOp and BadCLIP steps
against CoOp's), on the real architectures.

    python -m benchmarks.run [--backbones quiltnet biomedclip] [--device auto|cpu|cuda] [--json PATH]

What is measured
- Backbones: the real models' architectures at their real sizes with random weights
  (``clip_models.standins.write_standins(..., full_size=True)``), written once into ``--cache`` (reused
  when present) and loaded through the project's own loading code with ``HF_HUB_OFFLINE=1``.
- Trainers: CoOp (clean), BAPLe, FineTune (clean), CoCoOp (clean) and BadCLIP, built by
  ``build_trainer`` from the repository's configs (``configs/trainers/<method>.yaml``, and the backbone's
  own file where there is one) on a synthetic 2-class dataset (COVID-like X-rays at 224 px), with
  ``--precision`` (default: bf16 autocast on CUDA, fp32 on the CPU).
- A step: the trainer's own ``forward_backward`` on one fixed batch of 16 images in which exactly one
  row is poisoned (1/16 = 6.25 %, the closest a batch of 16 comes to the paper's 5 %).
- Evaluation: the trainer's own ``evaluate()`` over the synthetic test images.
- Variants run round-robin, one step of each per round, so a change of machine load hits all of them
  alike. The first round warms up and measures memory; the next ``--repeats`` rounds are timed and the
  table gives their medians.

"Before" variants, written here, show what each optimisation of the trainers buys:
- BAPLe, naive: the reference implementation's step: triggers applied one sample at a time in a Python
  loop, and the whole batch, clean rows included, back-propagated to the input.
- CoOp, padded prompts: the text tower on the padded context (77 or 256 positions) instead of the
  prompts cut to their longest real length.
- eval, two passes: the test set run twice, clean then triggered, as the reference code evaluates.
- eval, no workers: the test loader without worker processes or pinned memory.

Modules: ``harness`` (clock, memory, round-robin), ``variants`` (the trainers, their steps and the
"before" variants), this one (the command line, one backbone's measurements, the acceptance checks and
the report).
"""
import contextlib
import io
import math
import os
import platform
import statistics
import subprocess
import tempfile
import time
import warnings

from benchmarks.harness import round_robin
from common import cli, tables
from common.errors import InputError
from benchmarks.variants import (EXTRAS, REPO, apply_extra, build_method, ensure_standins, evaluation, fixed_batch,
                                 hub_cache, loader_without_workers, naive_baple_step, other_precision,
                                 padded_prompts, prompt_cut_check, train_step, two_pass_evaluation)

PRECISION_CHOICES = ("fp32", "amp_bf16", "amp", "fp16")
# The acceptance thresholds (checked on every run; they are stated for the CPU).
MAX_BAPLE_OVER_COOP = 1.25
MIN_NAIVE_OVER_BAPLE = 1.5
MAX_PROMPT_CUT_DIFFERENCE = 1e-5
MAX_TRAINABLE_FRACTION = 0.002
MAX_EVAL_THROUGHPUT_LOSS = 1.2


def parse_args(argv=None):
    parser = cli.parser("python -m benchmarks.run", __doc__)
    # Checked against the registered backbones (backbone_choices) once the hub settings are made.
    parser.add_argument("--backbones", nargs="+", default=["quiltnet", "biomedclip"],
                        help="registered backbones (clip_models: clip, medclip, biomedclip, plip, quiltnet, ...)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="auto: cuda when available, else cpu")
    parser.add_argument("--precision", choices=PRECISION_CHOICES,
                        help="TRAINER.PREC (default: amp_bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch (one row poisoned)")
    parser.add_argument("--eval-images", type=int, help="synthetic test images (default: 16 on cpu, 400 on cuda)")
    parser.add_argument("--repeats", type=int, help="timed rounds after the warm-up round (default: 3 on cpu, 10 on cuda)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (cpu device only)")
    parser.add_argument("--extras", nargs="*", choices=sorted(EXTRAS), default=[],
                        help="; ".join(f"{k}: {v}" for k, v in EXTRAS.items()))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "baple-benchmark-hub"),
                        help="folder for the random-weight backbones (written once, then reused)")
    parser.add_argument("--tiny", action="store_true",
                        help="tiny stand-ins instead of the real sizes: a quick check that this script runs")
    parser.add_argument("--json", default=os.path.join(REPO, "output", "benchmark.json"),
                        help="where to write the results as JSON")
    args = parser.parse_args(argv)
    if args.batch_size < 2 or (args.repeats is not None and args.repeats < 1):
        parser.error("--batch-size must be at least 2 (one poisoned row and clean ones) and --repeats at least 1")
    return args


# ---- measuring ----------------------------------------------------------------------------------
# ---- one backbone ---------------------------------------------------------------------------------

def bench_backbone(name, args, device, precision, root, output_dir):
    weights = ensure_standins(hub_cache(args), name, full_size=not args.tiny)
    started = time.perf_counter()
    trainers = {method: build_method(method, name, weights, root, output_dir, device, precision, args.batch_size)
                for method in ("CoOp", "BAPLe", "FineTune", "CoCoOp", "BadCLIP")}
    print(f"[{name}] {len(trainers)} trainers built in {time.perf_counter() - started:.0f} s", flush=True)
    coop, baple, finetune = trainers["CoOp"], trainers["BAPLe"], trainers["FineTune"]
    batch = fixed_batch(baple, args.batch_size)
    poisoned_rows = int(baple.poison_mask[batch["index"]].sum())
    backbone_params = sum(p.numel() for p in baple.model.backbone.parameters())
    n_test = len(baple.dm.dataset.test)

    # name: (step, images through the image tower per step, trainer whose parameters it trains, description)
    variants = {
        "CoOp": (train_step(coop, batch), args.batch_size, coop, "prompt learning, clean"),
        "CoOp, padded prompts": (padded_prompts(train_step(coop, batch), coop.model.backbone), args.batch_size,
                                 coop, "before: text tower on the padded context"),
        "BAPLe": (train_step(baple, batch), args.batch_size, baple, f"{poisoned_rows} of {args.batch_size} rows "
                  "poisoned"),
        "BAPLe, naive": (naive_baple_step(baple, batch), args.batch_size, baple,
                         "before: per-sample trigger loop, whole batch back-propagated to the input"),
        "FineTune": (train_step(finetune, batch), args.batch_size, finetune, "image tower trained, clean"),
        "CoCoOp": (train_step(trainers["CoCoOp"], batch), args.batch_size, trainers["CoCoOp"],
                   "per-image prompts: batch x classes through the text tower in one call"),
        "BadCLIP": (train_step(trainers["BadCLIP"], batch), 2 * args.batch_size, trainers["BadCLIP"],
                    "CoCoOp on every image clean and triggered, the trigger learned"),
        "eval": (evaluation(baple), 2 * n_test, None, "clean + triggered in one pass"),
        "eval, clean only": (evaluation(baple, trigger=None), n_test, None, "no trigger"),
        "eval, two passes": (two_pass_evaluation(baple), 2 * n_test, None, "before: clean pass, then triggered pass"),
        "eval, no workers": (evaluation(baple, loader=loader_without_workers(baple.test_loader)), 2 * n_test,
                             None, f"before: DataLoader without the config's {baple.cfg.DATALOADER.NUM_WORKERS} "
                             "workers and pinned memory"),
    }
    if not coop.model.backbone.exact_under_truncation:  # MedCLIP: prompts always run padded
        del variants["CoOp, padded prompts"]
    failed_extras = {}
    for extra in args.extras:
        extra_precision = other_precision(precision) if extra == "precision" else precision
        overrides = ("TRAINER.COOP.BACKBONE_DTYPE", "bf16") if extra == "bf16-backbone" else ()
        trainer = build_method("BAPLe", name, weights, root, output_dir, device, extra_precision, args.batch_size,
                               tag=extra, overrides=overrides)
        apply_extra(extra, trainer)
        step, evaluate = train_step(trainer, batch), evaluation(trainer)
        try:  # an experiment that does not run on this model or device is reported, not fatal
            step()
            evaluate()
        except Exception as error:  # noqa: BLE001
            failed_extras[extra] = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
            print(f"[{name}] --extras {extra} failed: {failed_extras[extra]}", flush=True)
            continue
        label = {"precision": {"fp32": "fp32", "amp_bf16": "bf16 autocast", "amp": "fp16 autocast",
                               "fp16": "fp16"}[extra_precision],
                 "bf16-backbone": "bf16 backbone", "channels-last": "channels_last", "compile": "compiled"}[extra]
        variants[f"BAPLe, {label}"] = (step, args.batch_size, trainer, EXTRAS[extra])
        variants[f"eval, {label}"] = (evaluate, 2 * n_test, None, EXTRAS[extra])

    print(f"[{name}] {len(variants)} variants x (1 warm-up + {args.repeats}) rounds", flush=True)
    measured = round_robin({k: v[0] for k, v in variants.items()}, args.repeats, device)
    rows = {}
    for variant, (_, images, trainer, description) in variants.items():
        seconds = measured[variant]["seconds"]
        median = statistics.median(seconds)
        trainable = trainer.trainable_parameters() if trainer is not None else None
        rows[variant] = {
            "description": description, "median_s": median, "min_s": min(seconds), "max_s": max(seconds),
            "seconds": seconds, "images_per_step": images, "images_per_s": images / median,
            "step_memory_mb": measured[variant]["memory_mb"], "trainable_params": trainable,
            "trainable_fraction": None if trainable is None else trainable / backbone_params,
        }
    prompt_cut = prompt_cut_check(baple)
    return {"backbone_params": backbone_params, "poisoned_rows": poisoned_rows, "batch_size": args.batch_size,
            "test_images": n_test, "prompt_cut": prompt_cut, "variants": rows, "failed_extras": failed_extras,
            **ratios_and_checks(rows, prompt_cut)}


def ratios_and_checks(rows, prompt_cut):
    def ratio(a, b):
        return rows[a]["median_s"] / rows[b]["median_s"] if a in rows and b in rows else None

    ratios = {
        "BAPLe / CoOp": ratio("BAPLe", "CoOp"),
        "BAPLe / FineTune": ratio("BAPLe", "FineTune"),
        "CoCoOp / CoOp": ratio("CoCoOp", "CoOp"),
        "BadCLIP / CoOp": ratio("BadCLIP", "CoOp"),
        "BAPLe naive / BAPLe": ratio("BAPLe, naive", "BAPLe"),
        "CoOp padded / CoOp": ratio("CoOp, padded prompts", "CoOp"),
        "eval two passes / one pass": ratio("eval, two passes", "eval"),
        "eval no workers / workers": ratio("eval, no workers", "eval"),
        # Images through the image tower per second, clean-only over clean + triggered.
        "eval throughput clean only / one pass": rows["eval, clean only"]["images_per_s"] / rows["eval"]["images_per_s"],
    }
    difference = prompt_cut["max_abs_difference"]
    checks = {
        f"BAPLe / CoOp <= {MAX_BAPLE_OVER_COOP}": ratios["BAPLe / CoOp"] <= MAX_BAPLE_OVER_COOP,
        f"BAPLe naive / BAPLe >= {MIN_NAIVE_OVER_BAPLE}": ratios["BAPLe naive / BAPLe"] >= MIN_NAIVE_OVER_BAPLE,
        f"prompt cut max abs difference <= {MAX_PROMPT_CUT_DIFFERENCE}":
            None if difference is None else difference <= MAX_PROMPT_CUT_DIFFERENCE,
        f"BAPLe trainable <= {100 * MAX_TRAINABLE_FRACTION:g} % of the backbone":
            rows["BAPLe"]["trainable_fraction"] <= MAX_TRAINABLE_FRACTION,
        f"eval throughput clean only / one pass <= {MAX_EVAL_THROUGHPUT_LOSS}":
            ratios["eval throughput clean only / one pass"] <= MAX_EVAL_THROUGHPUT_LOSS,
    }
    return {"ratios": ratios, "checks": checks}


# ---- report -----------------------------------------------------------------------------------------

def format_report(name, result):
    lines = [f"\n== {name}: {result['backbone_params'] / 1e6:.1f} M backbone parameters, batch "
             f"{result['batch_size']} with {result['poisoned_rows']} poisoned row, {result['test_images']} test images"]
    rows = []
    for variant, row in result["variants"].items():
        trainable = "" if row["trainable_params"] is None else f"{row['trainable_params']:,}"
        fraction = "" if row["trainable_fraction"] is None else f"{100 * row['trainable_fraction']:.3f}"
        rows.append([variant, f"{row['median_s']:.3f}", f"{row['min_s']:.2f}-{row['max_s']:.2f}",
                     f"{row['images_per_s']:.1f}", f"{row['step_memory_mb']:.0f}", trainable, fraction,
                     row["description"]])
    lines.append(tables.text(rows, ("variant", "s/step", "min-max", "img/s", "step MB", "trainable", "% model", "note"),
                             align=("left",) + ("right",) * 6 + ("left",)))
    cut = result["prompt_cut"]
    if cut["exact_under_truncation"]:
        lines.append(f"prompt cut: {cut['padded_length']} -> {cut['cut_length']} positions, max abs difference "
                     f"{cut['max_abs_difference']:.2e} (features up to {cut['feature_scale']:.2f})")
    else:
        lines.append(f"prompt cut: not exact for this model, prompts run padded to {cut['padded_length']}")
    lines.append("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items() if v is not None))
    for extra, error in result["failed_extras"].items():
        lines.append(f"--extras {extra} failed: {error}")
    for check, ok in result["checks"].items():
        lines.append(f"  [{'n/a' if ok is None else 'ok' if ok else 'FAIL'}] {check}")
    return "\n".join(lines)


def environment(device, precision):
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device.type,
            "precision": precision, "platform": platform.platform(), "load_average_start": os.getloadavg()}
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    else:
        info["threads"] = torch.get_num_threads()
        with contextlib.suppress(OSError):
            with open("/proc/cpuinfo") as f:
                info["device_name"] = next((line.split(":", 1)[1].strip() for line in f
                                            if line.startswith("model name")), platform.processor())
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                        text=True, timeout=10).stdout.strip()
    return info


def backbone_choices():
    """The backbones ``--backbones`` takes: every registered one. Importing ``clip_models`` imports the hub
    libraries, so this runs after ``main`` has set their environment."""
    from clip_models import available_backbones

    return available_backbones()


def main(argv=None):
    args = parse_args(argv)
    # The hub libraries read these when imported: set them before anything imports transformers or open_clip.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_HUB_CACHE"] = hub_cache(args)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from dassl_compat import write_json

    # The configs' 4 loader workers are what users run, also on this benchmark's small CPUs.
    warnings.filterwarnings("ignore", message="This DataLoader will create")
    from datasets.synthetic import generate

    unknown = [name for name in args.backbones if name not in backbone_choices()]
    if unknown:
        raise InputError(f"--backbones {unknown[0]}: not a backbone; choose from {', '.join(backbone_choices())}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available here; use --device cpu (or auto)")
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    precision = args.precision or ("amp_bf16" if device.type == "cuda" else "fp32")
    args.eval_images = args.eval_images or (400 if device.type == "cuda" else 16)
    args.repeats = args.repeats or (10 if device.type == "cuda" else 3)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    report = {"environment": environment(device, precision), "settings": vars(args), "backbones": {}}
    print(f"{report['environment'].get('device_name', device.type)}, {precision}, torch {torch.__version__}", flush=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="baple-benchmark-") as work:
        root = os.path.join(work, "data")
        with contextlib.redirect_stdout(io.StringIO()):
            generate("covid", root, train_per_class=args.batch_size, test_per_class=math.ceil(args.eval_images / 2),
                     size=224)
        for name in args.backbones:
            result = bench_backbone(name, args, device, precision, root, os.path.join(work, "runs", name))
            report["backbones"][name] = result
            print(format_report(name, result), flush=True)
            write_json(report, args.json)  # after each backbone: a cut-short run keeps what it measured
            if device.type == "cuda":
                torch.cuda.empty_cache()
    report["environment"]["load_average_end"] = os.getloadavg()
    report["environment"]["wall_s"] = round(time.perf_counter() - started, 1)
    write_json(report, args.json)
    print(f"\n{report['environment']['wall_s']:.0f} s; load average {report['environment']['load_average_start']} "
          f"-> {report['environment']['load_average_end']}; results written to {args.json}")


INTERRUPTED = "what the finished backbones measured is in --json"


run = cli.command(main, INTERRUPTED)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main, interrupted=INTERRUPTED)
