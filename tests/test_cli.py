"""The one command-line wrapper (``common.cli``): every entry point maps the same errors to the same
exit code and stream, a corrupt checkpoint included, and the older flag spellings stay aliases."""
import ast
import glob
import importlib
import os
import re
import shutil
import signal
import subprocess
import sys

import pytest

import train
from common import cli
from common.errors import CheckpointError, InputError
from helpers_runs import REPO
from scripts import defend, figures, quickstart, report
from scripts.sweep import command as sweep

BACKBONE = "quiltnet"  # the cheapest stand-in
TINY = ["USE_CUDA", "False", "VERBOSE", "False", "DATASET.NUM_SHOTS", "4", "OPTIM.MAX_EPOCH", "1",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "DATALOADER.TEST.BATCH_SIZE", "20",
        "TRAINER.COOP.N_CTX", "4", "BACKDOOR.POISON_COUNT", "1"]


def run_argv(root, output_dir, weights, *flags):
    return [*flags, "--root", root, "--trainer", "BAPLe", "--backbone", BACKBONE, "--seed", "1",
            "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "covid.yaml"),
            "--output-dir", str(output_dir), "MODEL.BACKBONE.WEIGHTS", weights, *TINY]


@pytest.fixture(scope="module")
def baple_run(standins, synthetic_root, tmp_path_factory):
    """A finished BAPLe run (one epoch on the quiltnet stand-in), built through ``train.run``."""
    folder = tmp_path_factory.mktemp("cli") / "baple"
    assert train.run(run_argv(synthetic_root, folder, standins[BACKBONE])) == 0
    return folder


def last_line(text):
    return [line for line in text.splitlines() if line.strip()][-1]


def assert_one_error_line(code, printed, *must_name):
    assert code == cli.EXIT_BAD_INPUT, printed
    assert "Traceback" not in printed, printed
    line = last_line(printed)
    assert line.startswith("error: ") and all(part in line for part in must_name), line


def test_a_corrupt_checkpoint_is_exit_2_and_one_line_in_every_command(baple_run, synthetic_root, standins,
                                                                       tmp_path, capsys):
    damaged = tmp_path / "damaged"
    shutil.copytree(baple_run, damaged)
    checkpoints = glob.glob(str(damaged / "*" / "model.pth.tar-*"))
    assert {os.path.basename(os.path.dirname(p)) for p in checkpoints} >= {"prompt_learner", "trigger"}
    for path in checkpoints:
        with open(path, "wb") as f:
            f.write(b"not a checkpoint")
    capsys.readouterr()

    evaluate = run_argv(synthetic_root, tmp_path / "eval", standins[BACKBONE], "--eval-only", "--model-dir",
                        str(damaged))
    for command in (lambda: train.run(evaluate), lambda: figures.run(["trigger", str(damaged)]),
                    lambda: defend.run([str(damaged), "--quick", "--only", "robustness"])):
        code = command()
        assert_one_error_line(code, capsys.readouterr().out, "Cannot load", str(damaged), "weights_only")

    # report reads no checkpoint: its damaged file is results.json.
    with open(damaged / "results.json", "w") as f:
        f.write('{"clean": {"accuracy": 0.5')  # cut short
    assert_one_error_line(report.run([str(damaged)]), capsys.readouterr().out, str(damaged / "results.json"),
                          "not valid JSON")


NOWHERE = os.path.join(os.sep, "nonexistent-baple-folder")
# One bad input per entry point (each names a folder that does not exist), run as the user runs it.
BAD_COMMANDS = {
    "train.py": [sys.executable, "train.py", "--trainer", "ZeroShot", "--dataset-config-file",
                 os.path.join(NOWHERE, "covid.yaml"), "--output-dir", "{tmp}/out"],
    "scripts.report": [sys.executable, "-m", "scripts.report", NOWHERE],
    "scripts.figures": [sys.executable, "-m", "scripts.figures", "trigger", NOWHERE],
    "scripts.defend": [sys.executable, "-m", "scripts.defend", NOWHERE],
    "scripts.sweep": [sys.executable, "-m", "scripts.sweep", "--root", NOWHERE, "--output-dir", "{tmp}/sweep",
                      "--config-dir", NOWHERE, "--datasets", "covid", "--backbones", BACKBONE, "--methods", "ZeroShot"],
    "datasets.prepare.covid": [sys.executable, "-m", "datasets.prepare.covid", "--raw", NOWHERE,
                               "--root", "{tmp}/data"],
    "scripts.quickstart": [sys.executable, "-m", "scripts.quickstart", "--root", "{tmp}/data",
                           "--output-dir", "{tmp}/out", "--weights", NOWHERE],
}


@pytest.mark.parametrize("name", sorted(BAD_COMMANDS))
def test_bad_input_is_exit_2_and_one_line_on_stdout_in_every_entry_point(name, tmp_path):
    if name == "scripts.quickstart":  # a dataset already there, so that the demo stops at the weights
        from datasets.synthetic import generate

        generate("kather", str(tmp_path / "data"), train_per_class=32, test_per_class=1, size=8)
    argv = [part.replace("{tmp}", str(tmp_path)) for part in BAD_COMMANDS[name]]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == cli.EXIT_BAD_INPUT, done.stdout + done.stderr
    assert last_line(done.stdout).startswith("error: ") and NOWHERE in last_line(done.stdout), done.stdout
    assert "Traceback" not in done.stdout + done.stderr and "error" not in done.stderr.lower(), done.stderr


def test_internal_errors_and_interruptions_exit_1(capsys):
    def broken(argv):
        return {}["missing"]

    assert cli.run(broken, []) == cli.EXIT_INTERNAL
    printed = capsys.readouterr().out
    assert "Traceback" in printed and last_line(printed).startswith("error: internal error (KeyError")

    def stopped(argv):
        os.kill(os.getpid(), signal.SIGTERM)

    assert cli.run(stopped, [], interrupted="run it again") == cli.EXIT_INTERNAL
    assert last_line(capsys.readouterr().out) == "error: interrupted (SIGTERM); run it again"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored

    def corrupt(argv):
        raise CheckpointError("first line\nsecond line: the message")

    assert cli.run(corrupt, []) == cli.EXIT_BAD_INPUT and issubclass(CheckpointError, InputError)
    assert capsys.readouterr().out == "error: second line: the message\n"
    assert cli.run(lambda argv: 3, []) == 3 and cli.run(lambda argv: None, []) == cli.EXIT_OK


def test_older_flag_spellings_are_aliases_of_one_vocabulary(capsys):
    canonical = train.build_parser().parse_args(["--root", "R", "--output-dir", "O", "A.B", "1", "C.D", "2"])
    for spelling in (["--data", "R", "--out", "O", "--set", "A.B=1", "C.D", "2"],
                     ["--data-root", "R", "--output", "O", "--set", "A.B", "1", "--set", "C.D=2"],
                     ["--root", "R", "--output-dir", "O", "--set", "A.B=1", "--", "C.D", "2"]):
        args = train.build_parser().parse_args(spelling)
        assert (args.root, args.output_dir, cli.overrides(args)) == ("R", "O", ["A.B", "1", "C.D", "2"])
    assert cli.overrides(canonical) == ["A.B", "1", "C.D", "2"]

    sweep_args = sweep.build_parser().parse_args(["--data", "R", "--out", "O", "--datasets", "covid", "--backbones",
                                                  "clip", "--methods", "all", "--seeds", "1", "--", "A.B", "1"])
    assert (sweep_args.root, sweep_args.output_dir, cli.overrides(sweep_args)) == ("R", "O", ["A.B", "1"])
    defend_args = defend.build_parser().parse_args(["RUN", "--data-root", "R", "--out", "O"])
    assert (defend_args.root, defend_args.output_dir) == ("R", "O")

    with pytest.raises(SystemExit):
        train.build_parser().parse_args(["--set", "A.B"])  # neither KEY VALUE nor KEY=VALUE
    assert "--set A.B: give KEY VALUE or KEY=VALUE" in capsys.readouterr().err

    help_text = " ".join(train.build_parser().format_help().split())
    assert "--root ROOT " in help_text and "(aliases: --data, --data-root)" in help_text
    assert "--data ROOT" not in help_text and "--out OUTPUT_DIR" not in help_text  # shown once, by its name
    assert "--data" not in quickstart.__doc__ and "--output-dir" in quickstart.__doc__


def console_scripts():
    """{command: "module:function"} of setup.py's console_scripts, read without running setup()."""
    with open(os.path.join(REPO, "setup.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "console_scripts":
                    return dict(item.value.replace(" ", "").split("=") for item in value.elts)
    raise AssertionError("setup.py declares no console_scripts")


def entry_point_modules():
    """Every module of the project that runs as a command (``if __name__ == "__main__"``)."""
    modules = set()
    for path in glob.glob(os.path.join(REPO, "**", "*.py"), recursive=True):
        relative = os.path.relpath(path, REPO)
        if relative.startswith(("tests", ".")) or not os.path.isfile(path):
            continue
        module = relative[:-3].replace(os.sep, ".")
        if module.endswith(".__main__"):  # a package's command: its command module holds run()
            modules.add(module[:-len("__main__")] + "command")
            continue
        with open(path, encoding="utf-8") as f:
            if re.search(r'^if __name__ == "__main__":', f.read(), re.MULTILINE):
                modules.add(module)
    return modules


def test_every_entry_point_has_a_console_command_through_the_wrapper():
    commands = console_scripts()
    assert {"baple-train", "baple-sweep", "baple-report", "baple-figures", "baple-defend",
            "baple-quickstart"} <= set(commands)
    targets = {}
    for command, target in commands.items():
        module, function = target.split(":")
        targets[module] = importlib.import_module(module)
        assert function == "run" and callable(getattr(targets[module], "run")), command
    assert entry_point_modules() == set(targets)
