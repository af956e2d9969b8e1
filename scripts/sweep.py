"""Sweep: datasets x backbones x methods x target classes x seeds x varied config values, one run
folder each; finished runs (a ``results.json``) are skipped, so the same command resumes a sweep.

    python -m scripts.sweep --root DATA --out output/table1 \\
        --datasets covid rsna18 mimic --backbones medclip biomedclip \\
        --methods all --targets all --seeds 1 [--vary KEY=V1,V2 ...] [--set KEY=VALUE ...]

Layout: ``OUT/<dataset>/<method>/<backbone>[/<KEY>=<VALUE>...][/target<k>]/seed<s>``. A clean
method (ZeroShot, Clean_PL, Clean_FT) does not depend on the target class and runs once per seed,
without the target level. BAPLe starts from the Clean_PL run of the same dataset, backbone,
varied values and seed (the paper's protocol; ``--baple-init clean-pl``), which the sweep adds
and runs first; ``--baple-init random`` starts from CoOp's random context instead. BAPLe_CoCoOp
starts from the Clean_CoCoOp run in the same way.

Each run is ``python -m train`` in a process of its own, forked from a server process that has
imported the project once, with its console output in ``<run folder>/sweep.log``: a run that
crashes does not stop the sweep, and failed runs are listed at the end (exit code 1). A lock file
``<run folder>/.lock`` (created with O_EXCL, refreshed every minute) keeps two sweeps on the same
``OUT`` from running one run twice; a lock whose process is gone, or that has not been refreshed
for 10 minutes, is taken over.

Executors: ``sequential`` (default) runs one run after another here; ``slurm`` submits job arrays
through submitit (one job per run) and returns, or with ``--wait`` follows them; ``local`` is
submitit's local executor, the same path on this machine (every run of a stage at once).
Exit codes: 0 nothing failed, 1 some run failed, 2 bad input (one line naming the problem).
"""
import argparse
import contextlib
import itertools
import json
import multiprocessing
import os
import os.path as osp
import shlex
import socket
import sys
import time
import uuid
from dataclasses import dataclass

from configs.errors import InputError
from scripts.methods import METHOD_BY_NAME, METHODS, method_file

CONFIGS = osp.dirname(osp.abspath(__import__("configs").__file__))
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2
HEARTBEAT_S = 60  # a running run's lock file is touched this often ...
STALE_LOCK_S = 600  # ... and taken over when untouched this long (its holder died on another host)
POLL_S = 5  # waiting for a run another sweep holds, or for submitit jobs
RESULTS, LOCK, LOG = "results.json", ".lock", "sweep.log"
# What the run processes import once, in the server process they are forked from.
PRELOAD = ["train", "datasets", "trainers", "clip_models", "open_clip", "transformers"]


@dataclass(frozen=True)
class Run:
    method: str
    dataset: str  # the dataset config file's name: configs/datasets/<dataset>.yaml
    backbone: str
    target: object  # int, or None for a clean method
    seed: int
    variant: tuple  # ((KEY, VALUE), ...) of the varied config values
    folder: str
    argv: tuple  # the arguments of ``python -m train``
    needs: str = ""  # a run folder whose results this run starts from (BAPLe's Clean_PL run)

    @property
    def label(self):
        parts = [self.dataset, self.method, self.backbone, *(f"{k}={v}" for k, v in self.variant)]
        return "/".join(parts + ([f"target{self.target}"] if self.target is not None else []) + [f"seed{self.seed}"])


@dataclass
class Outcome:
    run: Run
    status: str  # ran | done (already finished) | busy (another sweep holds it) | failed
    seconds: float = 0.0
    message: str = ""
    log: str = ""

    def line(self):
        text = f"[{self.status}] {self.run.folder}"
        if self.status == "ran":
            text += f" ({self.seconds:.1f} s)"
        return text + (f": {self.message}" if self.message else "")


# ---- planning ------------------------------------------------------------------------------------
def _key_value(text, flag):
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise InputError(f"{flag} {text!r} is not KEY=VALUE; write e.g. {flag} OPTIM.MAX_EPOCH=10")
    return key, value


def _varied(specs):
    """``--vary KEY=V1,V2`` -> [(KEY, [V1, V2]), ...] (each value names a folder)."""
    axes = []
    for spec in specs:
        key, values = _key_value(spec, "--vary")
        values = values.split(",")
        bad = [v for v in values if not v or "/" in v or v in (".", "..")]
        if bad:
            raise InputError(f"--vary {spec}: {bad[0]!r} cannot name a run folder; give values without '/' or "
                             "empty parts")
        axes.append((key, values))
    return axes


def class_counts(data_root, names, config_dir):
    """{dataset: number of classes} of prepared datasets, from their ``classnames.txt``."""
    import yaml

    import datasets  # noqa: F401  (registers the datasets)
    from dassl_compat import DATASET_REGISTRY
    from datasets.folder import read_classnames

    counts = {}
    for dataset in names:
        with open(osp.join(config_dir, "datasets", f"{dataset}.yaml"), encoding="utf-8") as f:
            name = yaml.safe_load(f)["DATASET"]["NAME"]
        folder = DATASET_REGISTRY.get(name).dataset_dir
        counts[dataset] = len(read_classnames(osp.join(data_root, folder, "classnames.txt")))
    return counts


def _methods(names, baple_init):
    if names == ["all"]:
        return list(METHODS)
    unknown = [n for n in names if n not in METHOD_BY_NAME]
    if unknown:
        raise InputError(f"Unknown method {unknown[0]!r}; choose from {', '.join(METHOD_BY_NAME)} or all")
    if baple_init == "clean-pl":
        for name in list(names):
            init_from = METHOD_BY_NAME[name].init_from
            if init_from and init_from not in names:
                print(f"{name} starts from the {init_from} runs (--baple-init clean-pl): adding {init_from} to the "
                      "sweep")
                names = names + [init_from]
    return [m for m in METHODS if m.name in names]  # the table's order: Clean_PL before BAPLe


def plan(args):
    """Every run of the sweep, in the order a sequential sweep runs them."""
    config_dir = osp.abspath(args.config_dir)
    out, data_root = osp.abspath(args.out), osp.abspath(args.root)
    methods = _methods(args.methods, args.baple_init)
    axes = _varied(args.vary)
    fixed = [item for spec in args.set for item in _key_value(spec, "--set")]
    for dataset in args.datasets:
        if not osp.isfile(osp.join(config_dir, "datasets", f"{dataset}.yaml")):
            raise InputError(f"No dataset config {osp.join(config_dir, 'datasets', dataset + '.yaml')}; "
                             f"--datasets takes names of files in {osp.join(config_dir, 'datasets')}")
    for method, backbone in itertools.product(methods, args.backbones):
        path = method_file(method.trainer, backbone, config_dir)
        if not osp.isfile(path):
            raise InputError(f"No method file {path} for {method.name} on {backbone}; --backbones takes names of "
                             f"files in {osp.dirname(path)}")

    counts = in_project_process(class_counts, data_root, args.datasets, config_dir) \
        if any(m.targeted for m in methods) else {}
    seeds = list(dict.fromkeys(args.seeds))
    runs = []
    for dataset in args.datasets:
        targets = list(dict.fromkeys(args.targets))
        if dataset in counts:
            num_classes = counts[dataset]
            targets = list(range(num_classes)) if targets == ["all"] else [_target(t, num_classes, dataset)
                                                                          for t in targets]
        for backbone, method in itertools.product(args.backbones, methods):
            for values in itertools.product(*(vs for _, vs in axes)):
                variant = tuple(zip((k for k, _ in axes), values))
                for target, seed in itertools.product(targets if method.targeted else [None], seeds):
                    runs.append(_run(method, dataset, backbone, target, seed, variant, out, data_root, config_dir,
                                     fixed, args.baple_init))
    return runs


def _target(text, num_classes, dataset):
    if not text.isdigit() or int(text) >= num_classes:
        raise InputError(f"--targets {text} is not a class of {dataset} (0..{num_classes - 1}); give class "
                         "numbers or all")
    return int(text)


def _folder(out, method, dataset, backbone, variant, target, seed):
    parts = [out, dataset, method, backbone, *(f"{k}={v}" for k, v in variant)]
    return osp.join(*parts, *([f"target{target}"] if target is not None else []), f"seed{seed}")


def _run(method, dataset, backbone, target, seed, variant, out, data_root, config_dir, fixed, baple_init):
    folder = _folder(out, method.name, dataset, backbone, variant, target, seed)
    needs = ""
    if method.init_from and baple_init == "clean-pl":
        needs = _folder(out, method.init_from, dataset, backbone, variant, None, seed)
    argv = ["--root", data_root, "--trainer", method.trainer, "--backbone", backbone, "--seed", str(seed),
            "--dataset-config-file", osp.join(config_dir, "datasets", f"{dataset}.yaml"),
            "--config-file", method_file(method.trainer, backbone, config_dir),
            "--output-dir", folder, *(["--init", needs] if needs else []), *method.overrides,
            *(["BACKDOOR.TARGET_CLASS", str(target)] if target is not None else []),
            *(item for kv in variant for item in kv), *fixed]
    return Run(method.name, dataset, backbone, target, seed, variant, folder, tuple(argv), needs)


def check_configs(argvs):
    """Build the config of each ``python -m train`` argument list: bad keys or values fail here, in
    one line, before anything runs."""
    import train

    import datasets  # noqa: F401  (registers the datasets)
    import trainers  # noqa: F401  (registers the trainers)

    for argv in argvs:
        train.check_names(train.setup_cfg(train.build_parser().parse_args(argv)))


def configs_to_check(runs):
    """The arguments of one run per (method, dataset, backbone, variant): the others differ only in
    target class, seed and folder."""
    first = {}
    for run in runs:
        first.setdefault((run.method, run.dataset, run.backbone, run.variant), list(run.argv))
    return list(first.values())


# ---- locks ---------------------------------------------------------------------------------------
def _read_lock(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}  # gone, or its holder died between creating and filling it


def _stale(path, holder):
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return True
    if age > STALE_LOCK_S:
        return True
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
    return False


def _create_exclusive(path, content=""):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(content)
    return True


class RunLock:
    """``<run folder>/.lock``: who runs it (host, pid, a token); refreshed while the run goes on."""

    def __init__(self, folder):
        self.path = osp.join(folder, LOCK)
        self.token = uuid.uuid4().hex

    def acquire(self):
        """True when this process now holds the lock; False when a live holder has it."""
        content = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "token": self.token,
                              "started": time.strftime("%Y-%m-%d %H:%M:%S")})
        if _create_exclusive(self.path, content):
            return True
        if not self._break_if_stale():
            return False
        return _create_exclusive(self.path, content)

    def _break_if_stale(self):
        # One breaker at a time (its own O_EXCL file), re-checking under it, so that two sweeps
        # finding the same stale lock cannot both remove it, the second one removing a fresh lock.
        breaker = self.path + ".break"
        if not _create_exclusive(breaker):
            if _stale(breaker, {}):  # a breaker that died midway
                _remove(breaker)
            return False
        try:
            if not _stale(self.path, _read_lock(self.path)):
                return False
            print(f"Taking over the stale lock {self.path} ({_read_lock(self.path) or 'unreadable'})")
            _remove(self.path)
            return True
        finally:
            _remove(breaker)

    def holder(self):
        return _read_lock(self.path)

    def refresh(self):
        with contextlib.suppress(FileNotFoundError):  # taken over after a long stall: the run goes on
            os.utime(self.path)

    def release(self):
        if self.holder().get("token") == self.token:  # never remove a lock someone else took over
            _remove(self.path)


def _remove(path):
    with contextlib.suppress(FileNotFoundError):  # another sweep removed it first
        os.remove(path)


def held_elsewhere(folder):
    path = osp.join(folder, LOCK)
    return osp.exists(path) and not _stale(path, _read_lock(path))


# ---- running one run -----------------------------------------------------------------------------
def _process_context():
    """Run processes are forked from a server that imported the project once (``PRELOAD``), never
    from this process: it may hold threads or an OpenMP pool that a plain fork would break."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def in_project_process(function, *args):
    """``function(*args)`` in a process forked from that server; its exceptions are raised here.
    This process (the sweep, or a SLURM submission) thus never imports torch and the project."""
    with _process_context().Pool(1) as pool:
        return pool.apply(function, args)


def _train_in_child(argv, log_path):
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    print("python -m train " + shlex.join(argv), flush=True)
    import train

    sys.exit(train.run(argv))


def _last_line(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def execute(run):
    """Run ``run`` unless it is finished or another sweep holds it; returns its Outcome."""
    results = osp.join(run.folder, RESULTS)
    if osp.isfile(results):
        return Outcome(run, "done")
    os.makedirs(run.folder, exist_ok=True)
    lock = RunLock(run.folder)
    if not lock.acquire():
        holder = lock.holder()
        return Outcome(run, "busy", message=f"another sweep runs it (host {holder.get('host')}, pid "
                                            f"{holder.get('pid')}; lock {lock.path})")
    start = time.time()
    try:
        if osp.isfile(results):  # finished by another sweep just before we took the lock
            return Outcome(run, "done")
        if run.needs:
            while held_elsewhere(run.needs):
                time.sleep(POLL_S)
                lock.refresh()
            if not osp.isfile(osp.join(run.needs, RESULTS)):
                return Outcome(run, "failed", message=f"it starts from {run.needs}, which has not finished "
                                                      f"(see {osp.join(run.needs, LOG)})")
        log = osp.join(run.folder, LOG)
        process = _process_context().Process(target=_train_in_child, args=(list(run.argv), log))
        process.start()
        try:
            while process.exitcode is None:
                process.join(HEARTBEAT_S)
                lock.refresh()
        finally:
            if process.exitcode is None:  # interrupted: stop the run before giving up its lock
                process.terminate()
                process.join()
        seconds = time.time() - start
        if process.exitcode == 0 and osp.isfile(results):
            return Outcome(run, "ran", seconds, log=log)
        return Outcome(run, "failed", seconds, f"exit code {process.exitcode}: {_last_line(log)} (log: {log})", log)
    finally:
        lock.release()


# ---- executors -----------------------------------------------------------------------------------
def _progress(total):
    from tqdm import tqdm

    return tqdm(total=total, unit="run", desc="sweep", dynamic_ncols=True, file=sys.stderr)


def run_sequential(runs):
    outcomes = []
    with _progress(len(runs)) as bar:
        for run in runs:
            bar.set_postfix_str(run.label)
            outcome = execute(run)
            bar.write(outcome.line())
            outcomes.append(outcome)
            bar.update()
    return outcomes


def _stages(runs):
    """Runs that need no other run of this sweep first, then the rest (BAPLe after Clean_PL)."""
    folders = {run.folder for run in runs}
    later = [run for run in runs if run.needs in folders]
    return [stage for stage in ([run for run in runs if run not in later], later) if stage]


def make_executor(args):
    try:
        import submitit
    except ImportError:
        raise InputError(f"--executor {args.executor} needs submitit; pip install submitit (or the "
                         "project's [slurm] extra)") from None
    folder = osp.join(osp.abspath(args.out), ".submitit", "%j")
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster="local" if args.executor == "local" else "slurm")
    except RuntimeError as e:  # no srun: not a SLURM machine
        raise InputError(f"--executor {args.executor}: {e}") from None
    executor.update_parameters(name="baple-sweep", timeout_min=args.time, cpus_per_task=args.cpus,
                               gpus_per_node=args.gpus, mem_gb=args.mem, slurm_partition=args.partition,
                               slurm_array_parallelism=args.array_parallelism)
    return executor


def run_submitit(runs, args, executor):
    """One job per run, a job array per stage. SLURM: the second stage waits for the first
    (afterany), and this returns once submitted unless ``--wait``; local: one stage after the other."""
    stages = _stages(runs)
    if args.executor == "local":
        with _progress(len(runs)) as bar:
            return [outcome for stage in stages for outcome in _follow(_submit(executor, stage), bar)]
    jobs = []
    for stage in stages:
        if jobs:
            arrays = sorted({job.job_id.split("_")[0] for _, job in jobs})
            executor.update_parameters(slurm_additional_parameters={"dependency": "afterany:" + ":".join(arrays)})
        jobs += _submit(executor, stage)
    if not args.wait:
        print("Follow them with squeue; run the same command again to resubmit what failed, and "
              "python -m scripts.report when they are done")
        return None
    with _progress(len(runs)) as bar:
        return _follow(jobs, bar)


def _submit(executor, runs):
    jobs = list(zip(runs, executor.map_array(execute, runs)))
    ids = sorted({job.job_id.split("_")[0] for _, job in jobs})
    print(f"Submitted {len(runs)} run(s) as job(s) {', '.join(ids)}; submitit logs in {executor.folder.parent}")
    return jobs


def _follow(jobs, bar):
    """Wait for ``jobs``, advancing the sweep's progress bar; their outcomes in job order."""
    outcomes = {}
    while True:
        for run, job in jobs:
            if run.folder not in outcomes and job.done():
                outcomes[run.folder] = _job_outcome(run, job)
                bar.write(outcomes[run.folder].line())
                bar.update()
        if len(outcomes) == len(jobs):
            return [outcomes[run.folder] for run, _ in jobs]
        bar.set_postfix_str(f"{len(jobs) - len(outcomes)} job(s) of this stage left")
        time.sleep(POLL_S)


def _job_outcome(run, job):
    try:
        return job.result()
    except Exception as e:  # the job itself died (time limit, node failure, ...)
        return Outcome(run, "failed", message=f"job {job.job_id}: {str(e).strip().splitlines()[-1]} "
                                              f"(log: {job.paths.stderr})", log=str(job.paths.stderr))


def summarise(outcomes):
    counts = {status: sum(o.status == status for o in outcomes) for status in ("ran", "done", "busy", "failed")}
    print(f"{len(outcomes)} run(s): {counts['ran']} ran, {counts['done']} already done, {counts['busy']} held by "
          f"another sweep, {counts['failed']} failed")
    for outcome in outcomes:
        if outcome.status == "failed":
            print(outcome.line())
    return EXIT_FAILED if counts["failed"] else 0


# ---- command line --------------------------------------------------------------------------------
def build_parser():
    p = argparse.ArgumentParser(prog="python -m scripts.sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="datasets root (DATASET.ROOT)")
    p.add_argument("--out", required=True, help="sweep root: one folder per run under it")
    p.add_argument("--datasets", nargs="+", required=True, help="dataset config names (configs/datasets/<name>.yaml)")
    p.add_argument("--backbones", nargs="+", required=True, help="clip, medclip, biomedclip, plip, quiltnet")
    p.add_argument("--methods", nargs="+", required=True,
                   help=f"all, or any of: {', '.join(m.name for m in METHODS)}")
    p.add_argument("--targets", nargs="+", default=["all"], help="target classes: numbers or all (default)")
    p.add_argument("--seeds", nargs="+", type=int, default=[1], help="seeds (default 1)")
    p.add_argument("--vary", nargs="+", action="extend", default=[], metavar="KEY=V1,V2",
                   help="config values to sweep over, one folder level per key")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="config values for every run")
    p.add_argument("--baple-init", choices=("clean-pl", "random"), default="clean-pl",
                   help="BAPLe's context: from the matching Clean_PL (BAPLe_CoCoOp: Clean_CoCoOp) run "
                        "(default, the paper's) or random")
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
    try:
        runs = plan(args)
        pending = [run for run in runs if not osp.isfile(osp.join(run.folder, RESULTS))]
        print(f"{len(runs)} run(s) under {osp.abspath(args.out)}: {len(runs) - len(pending)} already done")
        if pending:
            in_project_process(check_configs, configs_to_check(pending))
        executor = make_executor(args) if pending and args.executor != "sequential" and not args.dry_run else None
    except InputError as e:
        print(f"error: {e}", flush=True)
        return EXIT_BAD_INPUT
    if args.dry_run:
        for run in runs:
            print(f"{run.label}: python -m train {shlex.join(run.argv)}")
        return 0
    if not pending:
        return 0
    try:
        outcomes = run_sequential(pending) if executor is None else run_submitit(pending, args, executor)
    except KeyboardInterrupt:
        print("Interrupted; run the same command again to go on (finished runs are kept, the interrupted one "
              "resumes from its last checkpoint)", flush=True)
        return EXIT_FAILED
    return 0 if outcomes is None else summarise(outcomes)


if __name__ == "__main__":
    from scripts import sweep  # run processes and submitit jobs find execute() under its module name

    sys.exit(sweep.main())
