"""Test-only: runs ``train.run(argv)`` in forked processes of one interpreter that imported the project
once, and kills them at chosen points.

``Zygote(env)`` starts ``python zygote.py`` with ``env``; the script imports the project and answers
one JSON line per job it reads on stdin. For each job it forks a child that sends its output to the
job's log file, arms the job's fault and calls ``train.run(argv)``; the answer is the child's pid and
exit status (its exit code, or minus the signal that ended it). Forking spares each run the seconds of
imports; the child is a process of its own, ended by a real signal as a run on a cluster would be. The
zygote itself runs no torch operation before forking, so forking it is safe.

Faults (patches made in the child only; the project's code has no hooks for them):

- ``("sigterm_in_step", n)`` / ``("sigkill_in_step", n)``: the signal arrives in the n-th training step.
- ``("sigkill_in_checkpoint", n)``: the n-th ``torch.save`` writes its file, the file is cut to half its
  size (a write in progress), then the process is killed.
- ``("sigkill_in_results", 0)``: ``results.json``'s temporary file is cut to half its size, then the
  process is killed before the file is renamed into place.
"""
import json
import os
import signal
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class Zygote:
    def __init__(self, env):
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__)], cwd=REPO, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        ready = self.process.stdout.readline()
        if ready.strip() != "ready":
            raise RuntimeError(f"zygote did not start: {ready!r}")

    def run(self, argv, log, fault=None):
        """(pid, status) of one run: status is the exit code, or -signal when a signal ended it."""
        self.process.stdin.write(json.dumps({"argv": argv, "log": str(log), "fault": fault}) + "\n")
        self.process.stdin.flush()
        answer = json.loads(self.process.stdout.readline())
        return answer["pid"], answer["status"]

    def close(self):
        self.process.stdin.close()
        self.process.wait(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- the zygote process ---------------------------------------------------------------------------
def _cut_in_half(path):
    with open(path, "rb+") as f:
        f.truncate(os.path.getsize(path) // 2)


def _arm(kind, n):
    import torch

    import trainers.base

    calls = {"count": 0}

    def nth_call():
        calls["count"] += 1
        return calls["count"] == n

    if kind in ("sigterm_in_step", "sigkill_in_step"):
        sig = signal.SIGTERM if kind == "sigterm_in_step" else signal.SIGKILL
        parse_batch_train = trainers.base.BackdoorTrainer.parse_batch_train

        def step(self, batch):  # every trainer's step starts by parsing its batch
            if nth_call():
                os.kill(os.getpid(), sig)
            return parse_batch_train(self, batch)

        trainers.base.BackdoorTrainer.parse_batch_train = step
    elif kind == "sigkill_in_checkpoint":
        save = torch.save

        def save_then_die(obj, path, *args, **kwargs):
            save(obj, path, *args, **kwargs)
            if nth_call():
                _cut_in_half(path)
                os.kill(os.getpid(), signal.SIGKILL)

        torch.save = save_then_die
    elif kind == "sigkill_in_results":
        replace = os.replace

        def die_before_rename(src, dst, *args, **kwargs):
            if os.path.basename(dst) == "results.json":
                _cut_in_half(src)
                os.kill(os.getpid(), signal.SIGKILL)
            return replace(src, dst, *args, **kwargs)

        os.replace = die_before_rename
    else:
        raise ValueError(f"unknown fault {kind!r}")


def _child(job):
    code = 70
    try:
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        if job["fault"]:
            _arm(*job["fault"])
        import train

        code = train.run(job["argv"])
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve():
    sys.path.insert(0, REPO)
    # The imports every run needs, done once (the project imports some lazily, inside functions).
    import open_clip  # noqa: F401
    import torch.utils.tensorboard  # noqa: F401

    import clip_models  # noqa: F401
    import datasets  # noqa: F401
    import train  # noqa: F401
    import trainers.validation  # noqa: F401

    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(job)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "status": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve()
