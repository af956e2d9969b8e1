"""Where the sweep's runs go: each run is ``python -m train`` in a process of its own, forked from a
server process that has imported the project once (``in_project_process``), its console output in
``<run folder>/sweep.log``; one after another here (``run_sequential``) or as submitit job arrays
(``run_submitit``: SLURM, or submitit's local executor)."""
import multiprocessing
import os
import os.path as osp
import shlex
import sys
import time
from dataclasses import dataclass

from common.errors import InputError
from scripts.sweep.lock import HEARTBEAT_S, RunLock, held_elsewhere
from scripts.sweep.plan import Run

EXIT_FAILED = 1
POLL_S = 5  # waiting for a run another sweep holds, or for submitit jobs
LOG = "sweep.log"
# What the run processes import once, in the server process they are forked from.
PRELOAD = ["train", "datasets", "trainers", "clip_models", "open_clip", "transformers"]


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
    This process (the sweep, or a SLURM submission) thus loads no model, dataset or trainer."""
    with _process_context().Pool(1) as pool:
        return pool.apply(function, args)

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

def check_configs(argvs):
    """Build the config of each ``python -m train`` argument list: bad keys or values fail here, in
    one line, before anything runs."""
    import train

    import datasets  # noqa: F401  (registers the datasets)
    import trainers  # noqa: F401  (registers the trainers)

    from clip_models import backbone_class
    from trainers.validation import check_keys_read

    for argv in argvs:
        cfg = train.setup_cfg(train.build_parser().parse_args(argv))
        train.check_names(cfg)
        backbone_class(cfg.MODEL.BACKBONE.NAME)
        check_keys_read(cfg)


def keys_read_by(trainer_names, keys):
    """{trainer: the ``keys`` it reads} (run in the project's process); an unknown key is refused."""
    import train
    import trainers  # noqa: F401  (registers the trainers)
    from configs.defaults import get_cfg
    from dassl_compat import TRAINER_REGISTRY
    from trainers.validation import reads_key

    defaults = get_cfg()
    for key in keys:
        train._check_key(defaults, key)
    return {t: [k for k in keys if reads_key(TRAINER_REGISTRY.get(t), k)] for t in trainer_names}

def finished(folders):
    """Those of ``folders`` that hold a finished run (``trainers.run.Run``, the one reader of run folders)."""
    from trainers.run import Run as RunFolder

    return [folder for folder in folders if RunFolder.is_run(folder)]


def is_finished(folder):
    return bool(in_project_process(finished, [folder]))


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
    if is_finished(run.folder):
        return Outcome(run, "done")
    os.makedirs(run.folder, exist_ok=True)
    lock = RunLock(run.folder)
    if not lock.acquire():
        holder = lock.holder()
        return Outcome(run, "busy", message=f"another sweep runs it (host {holder.get('host')}, pid "
                                            f"{holder.get('pid')}; lock {lock.path})")
    start = time.time()
    try:
        if is_finished(run.folder):  # finished by another sweep just before we took the lock
            return Outcome(run, "done")
        if run.needs:
            while held_elsewhere(run.needs):
                time.sleep(POLL_S)
                lock.refresh()
            if not is_finished(run.needs):
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
        if process.exitcode == 0 and is_finished(run.folder):
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
    folder = osp.join(osp.abspath(args.output_dir), ".submitit", "%j")
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
