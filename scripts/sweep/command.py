"""The sweep's command line (``python -m scripts.sweep``, ``baple-sweep``); see ``scripts.sweep``."""
import os.path as osp
import shlex

from common import cli
from scripts.methods import methods
from scripts.sweep import __doc__ as sweep_doc
from scripts.sweep.executors import (EXIT_FAILED, check_configs, class_counts, finished, in_project_process,
                                     keys_read_by, make_executor, run_sequential, run_submitit, summarise)
from scripts.sweep.plan import configs_to_check, plan

CONFIGS = osp.dirname(osp.abspath(__import__("configs").__file__))
INTERRUPTED = ("run the same command again to go on (finished runs are kept, the interrupted one resumes from "
               "its last checkpoint)")


def build_parser():
    p = cli.parser("python -m scripts.sweep", sweep_doc)
    cli.add_root(p, required=True, help="datasets root (DATASET.ROOT)")
    cli.add_output_dir(p, required=True, help="sweep root: one folder per run under it")
    p.add_argument("--datasets", nargs="+", required=True, help="dataset config names (configs/datasets/<name>.yaml)")
    p.add_argument("--backbones", nargs="+", required=True, help="clip, medclip, biomedclip, plip, quiltnet")
    p.add_argument("--methods", nargs="+", required=True,
                   help=f"all, or any of: {', '.join(m.name for m in methods())}")
    p.add_argument("--targets", nargs="+", default=["all"], help="target classes: numbers or all (default)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], help="seeds (default 1)")
    p.add_argument("--vary", nargs="+", action="extend", default=[], metavar="KEY=V1,V2",
                   help="config values to sweep over, one folder level per key")
    cli.add_overrides(p, help="config values for every run whose trainer reads them: KEY VALUE pairs (after --, "
                              "or --set KEY=VALUE)")
    p.add_argument("--baple-init", choices=("clean-pl", "random"), default="clean-pl",
                   help="BAPLe's context: from the matching Clean_PL (BAPLe_CoCoOp: Clean_CoCoOp) run "
                        "(default, the paper's) or random")
    p.add_argument("--profile", default="", help="train.py --profile for every run (configs/profiles/NAME.yaml)")
    p.add_argument("--config-dir", default=CONFIGS, help="folder with datasets/ and trainers/ config files")
    p.add_argument("--dry-run", action="store_true", help="print the runs and their commands, run nothing")
    p.add_argument("--executor", choices=("sequential", "local", "slurm"), default="sequential",
                   help="one run after another here (default), submitit's local executor, or SLURM")
    slurm = p.add_argument_group("submitit (--executor slurm or local)")
    slurm.add_argument("--partition", default=None, help="SLURM partition")
    slurm.add_argument("--time", type=int, default=240, help="time limit per run in minutes (default 240)")
    slurm.add_argument("--gpus", type=int, default=1, help="GPUs per run (default 1)")
    slurm.add_argument("--cpus", type=int, default=8, help="CPU cores per run (default 8)")
    slurm.add_argument("--mem", type=int, default=32, help="memory per run in GB (default 32)")
    slurm.add_argument("--array-parallelism", type=int, default=64, help="runs at once per job array (default 64)")
    slurm.add_argument("--wait", action="store_true", help="SLURM: follow the jobs until they end")
    return p


def main(argv=None):
    args = build_parser().parse_args(argv)
    runs = plan(args, cli.overrides(args), lambda *counted: in_project_process(class_counts, *counted),
                lambda *asked: in_project_process(keys_read_by, *asked))
    done = set(in_project_process(finished, [run.folder for run in runs]))
    pending = [run for run in runs if run.folder not in done]
    print(f"{len(runs)} run(s) under {osp.abspath(args.output_dir)}: {len(runs) - len(pending)} already done")
    if pending:
        in_project_process(check_configs, configs_to_check(pending))
    executor = make_executor(args) if pending and args.executor != "sequential" and not args.dry_run else None
    if args.dry_run:
        for run in runs:
            print(f"{run.label}: python -m train {shlex.join(run.argv)}")
        return 0
    if not pending:
        return 0
    try:
        outcomes = run_sequential(pending) if executor is None else run_submitit(pending, args, executor)
    except KeyboardInterrupt:
        print(f"Interrupted; {INTERRUPTED}", flush=True)
        return EXIT_FAILED
    return 0 if outcomes is None else summarise(outcomes)


run = cli.command(main, INTERRUPTED)  # the console command (setup.py)
