"""Sweeps, the report, TensorBoard logging and figures, on the offline stand-ins and synthetic data."""
import glob
import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from helpers_runs import REPO, markdown_rows, run_cfg, train
from scripts import figures, report
from scripts.sweep import command as sweep
from scripts.sweep import lock

BACKBONE = "quiltnet"  # the cheapest stand-in
TINY = ["USE_CUDA=False", "VERBOSE=False", "DATASET.NUM_SHOTS=4", "OPTIM.MAX_EPOCH=1", "DATALOADER.NUM_WORKERS=0",
        "DATALOADER.TRAIN_X.BATCH_SIZE=8", "DATALOADER.TEST.BATCH_SIZE=20", "TRAINER.COOP.N_CTX=4",
        "BACKDOOR.POISON_COUNT=1"]


def sweep_argv(root, out, weights, *options):
    return ["--root", root, "--out", str(out), "--datasets", "covid", "--backbones", BACKBONE, *options,
            "--set", f"MODEL.BACKBONE.WEIGHTS={weights}", *TINY]


def read(path):
    with open(path) as f:
        return json.load(f)


def results_under(out):
    return {os.path.relpath(os.path.dirname(p), out): read(p)
            for p in glob.glob(os.path.join(str(out), "**", "results.json"), recursive=True)}


@pytest.fixture(scope="module", autouse=True)
def one_thread_per_process():
    """The runs here are tiny: one thread each, in this process, in the run processes and submitit
    jobs it starts (they inherit the environment), so that OpenMP pools do not spin against each
    other on a shared 2-core machine (measured 3-100x slower)."""
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch, threadpool_limits(limits=1):
        patch.setenv("OMP_NUM_THREADS", "1")
        torch.set_num_threads(1)
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def swept(standins, synthetic_root, tmp_path_factory):
    """2 attacked methods x 2 target classes, run one after another."""
    out = tmp_path_factory.mktemp("sweep")
    argv = sweep_argv(synthetic_root, out, standins[BACKBONE], "--methods", "BadNets_PL", "BAPLe",
                      "--targets", "0", "1", "--baple-init", "random")
    assert sweep.main(argv) == 0
    return out, argv


def test_sweep_makes_one_folder_per_run_skips_finished_runs_and_reports_their_means(swept, capsys):
    out, argv = swept
    runs = results_under(out)
    assert sorted(runs) == [f"covid/{method}/{BACKBONE}/target{t}/seed1"
                            for method in ("BAPLe", "BadNets_PL") for t in (0, 1)]
    assert {(r["trainer"], r["attack"], r["target_class"]) for r in runs.values()} == {
        ("CoOp", "badnets", 0), ("CoOp", "badnets", 1), ("BAPLe", "baple", 0), ("BAPLe", "baple", 1)}
    assert not glob.glob(os.path.join(str(out), "**", ".lock*"), recursive=True)

    stamps = {p: os.stat(p).st_mtime_ns for p in glob.glob(os.path.join(str(out), "**", "*"), recursive=True)}
    capsys.readouterr()
    assert sweep.main(argv) == 0
    printed = capsys.readouterr().out
    assert "4 run(s) under" in printed and "4 already done" in printed
    assert {p: os.stat(p).st_mtime_ns for p in stamps} == stamps  # nothing ran, nothing was rewritten

    paths, text = report.report(str(out))
    section = text.split("## CA/BA (means)")[1].split("##")[0]
    table = [[cell.strip() for cell in line.strip("|").split("|")] for line in section.strip().splitlines()]
    assert table[0] == ["method", "QuiltNet COVID"]
    assert [row[0] for row in table[2:]] == ["BadNets_PL", "BAPLe"]  # the paper's row order
    for row in table[2:]:
        mine = [r for name, r in runs.items() if name.split("/")[1] == row[0]]
        ca = np.mean([r["clean"]["accuracy"] for r in mine])
        ba = np.mean([r["backdoor"]["accuracy"] for r in mine])
        assert row[1] == f"{report.number(ca)}/{report.number(ba)}"
    asr = text.split("## ASR (non-target)")[1]
    baple_asr = [r["backdoor"]["asr_non_target"] for name, r in runs.items() if "/BAPLe/" in name]
    mean, std = report.number(np.mean(baple_asr)), report.number(np.std(baple_asr, ddof=1))
    assert ["BAPLe", f"{mean} ± {std} (n=2)"] in markdown_rows(asr)
    for path in paths.values():
        assert os.path.getsize(path) > 0
    assert r"BadNets\_PL" in open(paths["tex"]).read()


def test_report_statistics_rows_paper_numbers_and_mixed_settings(tmp_path, capsys):
    def write_run(folder, trainer, attack, backbone, target, seed, ca, ba=None, asr=None, eps=8.0):
        os.makedirs(tmp_path / folder)
        backdoor = None if ba is None else {"accuracy": ba, "asr_non_target": asr}
        config = {"SEED": seed, "OUTPUT_DIR": str(tmp_path / folder), "BACKDOOR": {"TARGET_CLASS": target,
                                                                                   "NOISE_EPS": eps},
                  "TRAINER": {"BAPLE": {"INIT": f"clean_pl_{folder}" if trainer == "BAPLe" else ""}}}
        with open(tmp_path / folder / "results.json", "w") as f:
            json.dump({"trainer": trainer, "attack": attack, "backbone": backbone, "dataset": "Covid",
                       "clean": {"accuracy": ca}, "backdoor": backdoor, "config": config}, f)

    write_run("a", "BAPLe", "baple", "biomedclip", 0, 1, 0.8, 1.0, 1.0)
    write_run("b", "BAPLe", "baple", "biomedclip", 1, 1, 0.6, 0.5, 0.25)
    write_run("c", "CoOp", "none", "biomedclip", 0, 1, 0.7)
    write_run("d", "BAPLe", "baple", "biomedclip", 0, 1, 0.9, 0.9, 0.8, eps=4.0)
    paths, text = report.report(str(tmp_path), by=["BACKDOOR.NOISE_EPS"], with_paper=True)
    rows = markdown_rows(text)
    assert ["Clean_PL (NOISE_EPS=8.0)", ".700/- (paper .843/-)"] in rows
    assert ["BAPLe (NOISE_EPS=4.0)", ".900/.900 (paper .841/1.000)"] in rows
    assert ["BAPLe (NOISE_EPS=8.0)", ".700/.750 (paper .841/1.000)"] in rows
    assert ["BAPLe (NOISE_EPS=8.0)", ".700 ± .141 (n=2)"] in rows  # sample std of 0.8 and 0.6
    assert ["BAPLe (NOISE_EPS=4.0)", ".800 (n=1)"] in rows  # one run: no spread
    assert "BAPLe,,BACKDOOR.NOISE_EPS=8.0,biomedclip,Covid,ba,.750,.354,2,1.000" in open(paths["csv"]).read()

    capsys.readouterr()
    report.report(str(tmp_path))
    warnings = capsys.readouterr().err  # different init folders are no different settings
    assert "BAPLe on biomedclip/Covid averages runs that differ in BACKDOOR.NOISE_EPS;" in warnings
    assert len(report.load_paper()) == 2 * 9 * 6


def test_two_sweeps_on_one_root_at_once_run_each_run_once(standins, synthetic_root, tmp_path):
    argv = sweep_argv(synthetic_root, tmp_path, standins[BACKBONE], "--methods", "ZeroShot",
                      "--seeds", "1", "2", "3", "4")
    processes = [subprocess.Popen([sys.executable, "-m", "scripts.sweep", *argv], cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    folders = [os.path.join(str(tmp_path), "covid", "ZeroShot", BACKBONE, f"seed{s}") for s in (1, 2, 3, 4)]
    ran = [m for text in outputs for m in re.findall(r"\[ran\] (\S+)", text)]
    assert sorted(ran) == folders, outputs  # every run ran, and only once
    assert all(read(os.path.join(f, "results.json"))["seed"] == s for f, s in zip(folders, (1, 2, 3, 4)))
    assert not glob.glob(os.path.join(str(tmp_path), "**", ".lock*"), recursive=True)


def test_a_failed_run_is_reported_and_the_sweep_goes_on(standins, synthetic_root, tmp_path, capsys):
    argv = sweep_argv(synthetic_root, tmp_path, standins[BACKBONE], "--methods", "BAPLe", "--targets", "0",
                      "--baple-init", "random", "--vary", "BACKDOOR.ORDER=bogus,patch_then_noise")
    assert sweep.main(argv) == sweep.EXIT_FAILED
    printed = capsys.readouterr()
    base = os.path.join(str(tmp_path), "covid", "BAPLe", BACKBONE)
    failed = os.path.join(base, "BACKDOOR.ORDER=bogus", "target0", "seed1")
    assert f"[failed] {failed}: exit code 2: error: BACKDOOR.ORDER 'bogus' is unknown" in printed.out
    assert os.path.join(failed, "sweep.log") in printed.out
    assert os.path.isfile(os.path.join(base, "BACKDOOR.ORDER=patch_then_noise", "target0", "seed1", "results.json"))

    assert sweep.run(sweep_argv(synthetic_root, tmp_path, standins[BACKBONE], "--methods", "BadNets")) == 2
    assert sweep.run(sweep_argv(synthetic_root, tmp_path, standins[BACKBONE], "--methods", "BAPLe",
                                 "--targets", "2")) == 2
    assert sweep.run(sweep_argv(synthetic_root, tmp_path, standins[BACKBONE], "--methods", "ZeroShot",
                                 "--set", "BACKDOOR.TARGT_CLASS=1")) == 2  # found in the project process
    printed = capsys.readouterr().out
    assert "error: Unknown method 'BadNets'" in printed and "error: --targets 2 is not a class of covid" in printed
    assert "error: Unknown config key BACKDOOR.TARGT_CLASS (did you mean TARGET_CLASS?)" in printed


def test_run_locks_keep_live_holders_and_take_over_dead_ones(tmp_path):
    held = lock.RunLock(str(tmp_path))
    assert held.acquire()
    assert not lock.RunLock(str(tmp_path)).acquire()  # a live holder keeps it
    held.release()

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    with open(tmp_path / lock.LOCK, "w") as f:
        json.dump({"host": socket.gethostname(), "pid": int(dead.stdout), "token": "gone"}, f)
    taker = lock.RunLock(str(tmp_path))
    assert taker.acquire() and taker.holder()["token"] == taker.token

    os.utime(tmp_path / lock.LOCK, (time.time() - 2 * lock.STALE_LOCK_S,) * 2)  # not refreshed: stale
    assert lock.RunLock(str(tmp_path)).acquire()
    taker.release()  # no longer its lock: left alone
    assert os.path.exists(tmp_path / lock.LOCK)


def test_submitit_local_executor_runs_clean_pl_then_baple_from_it(standins, synthetic_root, tmp_path):
    argv = sweep_argv(synthetic_root, tmp_path, standins[BACKBONE], "--methods", "BAPLe", "--targets", "1",
                      "--executor", "local", "--gpus", "0", "--cpus", "1", "--mem", "4")
    assert sweep.main(argv) == 0
    runs = results_under(tmp_path)
    clean_pl = os.path.join(str(tmp_path), "covid", "Clean_PL", BACKBONE, "seed1")
    assert sorted(runs) == [f"covid/BAPLe/{BACKBONE}/target1/seed1", f"covid/Clean_PL/{BACKBONE}/seed1"]
    assert runs[f"covid/BAPLe/{BACKBONE}/target1/seed1"]["config"]["TRAINER"]["BAPLE"]["INIT"] == clean_pl


def test_slurm_submission_sets_resources_arrays_and_the_dependency(standins, synthetic_root, tmp_path, monkeypatch):
    # Stand-ins for SLURM's commands: sbatch keeps each script and answers with a job id.
    bin_dir, scripts_dir = tmp_path / "bin", tmp_path / "scripts"
    bin_dir.mkdir()
    scripts_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(
        f"#!/bin/sh\nn=$(ls {scripts_dir} | wc -l)\ncp \"$1\" {scripts_dir}/$((n + 100)).sh\n"
        "echo \"Submitted batch job $((n + 100))\"\n")
    for tool in ("srun", "sbatch"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    argv = sweep_argv(synthetic_root, tmp_path / "out", standins[BACKBONE], "--methods", "BAPLe", "--targets", "0", "1",
                      "--executor", "slurm", "--partition", "gpu", "--time", "30", "--gpus", "2",
                      "--array-parallelism", "1")
    assert sweep.main(argv) == 0
    first, second = (open(scripts_dir / name).read() for name in ("100.sh", "101.sh"))
    assert "#SBATCH --partition=gpu" in first and "#SBATCH --time=30" in first
    assert "#SBATCH --gpus-per-node=2" in first
    assert "--array" not in first and "--dependency" not in first  # stage 1: the one Clean_PL run
    assert "#SBATCH --array=0-1%1" in second and "#SBATCH --dependency=afterany:100" in second  # BAPLe x 2


def test_tensorboard_logs_losses_lr_noise_evaluations_and_trigger_images(standins, synthetic_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def run(folder, eval_freq):
        return train(run_cfg("BAPLe", synthetic_root, tmp_path / folder, standins[BACKBONE], backbone=BACKBONE,
                             **{"TEST.EVAL_FREQ": eval_freq, "OPTIM.MAX_EPOCH": 3, "DATASET.NUM_SHOTS": 4,
                                "BACKDOOR.POISON_COUNT": 2}))

    evaluated, plain = run("eval", 1), run("plain", 0)
    assert not (tmp_path / "eval" / "tensorboard").exists()  # events in the run folder: TensorBoard names runs by it
    events = EventAccumulator(str(tmp_path / "eval"))
    events.Reload()
    tags = events.Tags()
    assert {"train/loss_clean", "train/loss_poison", "train/lr", "train/noise_linf", "eval/clean_accuracy",
            "eval/backdoor_accuracy", "eval/backdoor_asr_non_target"} <= set(tags["scalars"])
    assert [e.step for e in events.Scalars("eval/backdoor_accuracy")] == [1, 2, 3]
    final = read(tmp_path / "eval" / "results.json")
    assert events.Scalars("eval/backdoor_accuracy")[-1].value == pytest.approx(final["backdoor"]["accuracy"])
    assert max(e.value for e in events.Scalars("train/noise_linf")) <= 8 / 255 + 1e-6
    assert {"trigger/delta", "trigger/clean_triggered"} <= set(tags["images"])
    pair = events.Images("trigger/clean_triggered")[-1]
    assert (pair.width, pair.height) == (448, 224)  # clean | triggered

    # Evaluating along the way changes nothing in the training itself.
    assert torch.equal(evaluated.prompt_learner.ctx, plain.prompt_learner.ctx)
    assert torch.equal(evaluated.trigger.noise.delta, plain.trigger.noise.delta)
    assert "test/clean_accuracy" not in tags["scalars"]  # the final test is eval/*'s last point, not a copy of it
    plain_events = EventAccumulator(str(tmp_path / "plain"))
    plain_events.Reload()
    assert [e.step for e in plain_events.Scalars("eval/backdoor_accuracy")] == [3]  # EVAL_FREQ 0: the end only


def _event_steps(run_dir):
    """{scalar tag: [steps]} of the event file directly in ``run_dir`` (TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert glob.glob(os.path.join(run_dir, "events.out.tfevents.*")), f"no event file in {run_dir}"
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [e.step for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_every_run_writes_curves_by_default_on_a_recorded_subset(standins, synthetic_root, tmp_path, monkeypatch):
    from helpers_runs import build

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    baple = train(run_cfg("BAPLe", synthetic_root, tmp_path / "baple", standins[BACKBONE], backbone=BACKBONE,
                          **{"OPTIM.MAX_EPOCH": 5, "DATASET.NUM_SHOTS": 4, "BACKDOOR.POISON_COUNT": 2,
                             "TEST.EVAL_SUBSET": 6}))
    # The epoch bar on a terminal (which counts tqdm shows between refreshes depends on timing: not asserted).
    assert "0/5 [" in terminal.getvalue() and "epoch/s" in terminal.getvalue()
    steps = _event_steps(tmp_path / "baple")  # TEST.EVAL_FREQ auto: every max(1, 5 // 5) epochs
    for tag in ("eval/clean_accuracy", "eval/backdoor_accuracy", "eval/backdoor_asr_non_target"):
        assert steps[tag] == [1, 2, 3, 4, 5], tag
    assert not any(tag.startswith("test/") for tag in steps)
    results = read(tmp_path / "baple" / "results.json")
    subset = results["eval_subset"]
    assert subset["size"] == 6 and subset["seed"] == 1 and len(set(subset["indices"])) == 6
    assert [len(e.labels) for _, e in baple.evaluations] == [6, 6, 6, 6, 20]  # the final test: every image
    assert results["num_test"] == 20

    zero_shot = build(run_cfg("ZeroShot", synthetic_root, tmp_path / "zeroshot", standins[BACKBONE], backbone=BACKBONE))
    zero_shot.train()
    assert _event_steps(tmp_path / "zeroshot")["eval/clean_accuracy"] == [1]
    cross = build(run_cfg("CoOp", synthetic_root, tmp_path / "cross", standins[BACKBONE], backbone=BACKBONE,
                          **{"BACKDOOR.EVAL_TRIGGER": str(tmp_path / "baple")}))
    cross.test()  # what train.py --eval-only does after loading the weights
    assert _event_steps(tmp_path / "cross")["eval/backdoor_accuracy"] == [1]


@pytest.mark.parametrize("key, value", [("TEST.EVAL_FREQ", -2), ("TEST.EVAL_SUBSET", -1)])
def test_impossible_evaluation_schedule_is_one_line_input_error(standins, synthetic_root, tmp_path, key, value):
    from common.errors import InputError
    from trainers.base import BackdoorTrainer

    cfg = run_cfg("CoOp", synthetic_root, tmp_path, standins[BACKBONE], backbone=BACKBONE, **{key: value})
    with pytest.raises(InputError, match=f"{key} {value}") as error:
        BackdoorTrainer.check_cfg(cfg)
    assert "\n" not in str(error.value)


def _check_png(path):
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("L"), dtype=float)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100 and pixels.std() > 0


def test_figures_draw_the_trigger_grid_and_the_tsne(swept, tmp_path):
    out, _ = swept
    assert figures.main(["grid", str(out), "--out", str(tmp_path / "grid.png"), "--cols", "2"]) == 0
    _check_png(tmp_path / "grid.png")
    run = os.path.join(str(out), "covid", "BAPLe", BACKBONE, "target0", "seed1")
    assert figures.main(["tsne", run, "--max-images", "12"]) == 0
    _check_png(os.path.join(run, "tsne.png"))
    assert figures.main(["trigger", run]) == 0
    _check_png(os.path.join(run, "trigger.png"))


def test_sweep_passes_its_profile_to_every_run_and_refuses_an_unknown_one(standins, synthetic_root, tmp_path, capsys):
    argv = sweep_argv(synthetic_root, tmp_path, standins[BACKBONE], "--methods", "Clean_PL", "BAPLe", "--targets", "0",
                      "--profile", "reference", "--dry-run")
    assert sweep.main(argv) == 0
    commands = [line for line in capsys.readouterr().out.splitlines() if "python -m train" in line]
    assert len(commands) == 2 and all(" --profile reference " in line for line in commands)
    assert sweep.run(argv[:-3] + ["--profile", "paper", "--dry-run"]) == 2
    assert "Unknown profile 'paper' (--profile); choose from: reference" in capsys.readouterr().out
