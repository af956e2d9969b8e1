"""A run stopped at any point and started again with the same command ends with the same results as a
run never stopped, and no stop leaves a half-written file under a real name.

One BAPLe run (two models, ``prompt_learner`` and ``trigger``, saved one after the other each epoch) is
stopped four times, each time by a real signal in a real process (``zygote.py`` forks the runs), then
finished by the same command; its results.json and last checkpoints are compared with a run that was
never stopped. The runs use a local weights folder with ``HF_HUB_OFFLINE`` unset, under the network
guard: local weights must need no network either.
"""
import json
import os
import re

import pytest
import torch

from dassl_compat.checkpoint import latest_epoch, load_checkpoint
from helpers_reliability import REPO, guarded_env
from zygote import Zygote

EPOCHS = 2
MODELS = ("prompt_learner", "trigger")
# (fault, exit status, what the stopped run's log says about resuming). 8 training images in batches of
# 4: two steps per epoch; each epoch saves prompt_learner, then trigger.
STOPS = [
    (("sigterm_in_step", 1), 1, "No checkpoint found"),  # a scheduler's stop in the first step
    (("sigkill_in_step", 3), -9, "No checkpoint found"),  # killed in epoch 2, epoch 1 saved
    (("sigkill_in_checkpoint", 2), -9, "resume training from epoch 1"),  # killed writing epoch 2's trigger
    (("sigkill_in_results", 0), -9, "resume training from epoch 1"),  # killed writing results.json
]


def command(root, weights, output_dir):
    return ["--root", root, "--trainer", "BAPLe", "--dataset-config-file",
            os.path.join(REPO, "configs/datasets/covid.yaml"), "--config-file",
            os.path.join(REPO, "configs/trainers/BAPLe.yaml"), "--backbone", "clip", "--output-dir", str(output_dir), "--seed", "1",
            "MODEL.BACKBONE.WEIGHTS", weights, "DATASET.NUM_SHOTS", "4", "BACKDOOR.POISON_COUNT", "2",
            "OPTIM.MAX_EPOCH", str(EPOCHS), "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "4",
            "DATALOADER.TEST.BATCH_SIZE", "20", "TRAINER.COOP.N_CTX", "4", "USE_CUDA", "False", "VERBOSE", "False"]


def last_line(path):
    return path.read_text().strip().splitlines()[-1]


def assert_nothing_half_written(run_dir, killed_pids):
    """Every file under a real name is whole; temporary files are only those of killed processes (a
    process that ends, even on SIGTERM, removes its own)."""
    for folder, _, names in os.walk(run_dir):
        for name in names:
            path = os.path.join(folder, name)
            temporary = re.fullmatch(r".+\.tmp-(\d+)", name)
            if temporary:
                assert int(temporary.group(1)) in killed_pids, path
            elif name.startswith(("model.pth.tar-", "model-best.pth.tar")):
                load_checkpoint(path)
            elif name == "checkpoint":
                assert latest_epoch(folder) is not None, f"{path} names a missing checkpoint"
            elif name.endswith(".json"):
                with open(path) as f:
                    json.load(f)


def results_without_run_specifics(run_dir):
    with open(run_dir / "results.json") as f:
        results = json.load(f)
    del results["wall_time_s"], results["config"]["OUTPUT_DIR"]
    return results


@pytest.fixture
def clip_folder(standins):
    from huggingface_hub import snapshot_download

    return snapshot_download(standins["clip"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the runs are forked (POSIX)")
def test_runs_killed_at_several_points_resume_to_the_uninterrupted_results(clip_folder, synthetic_root, tmp_path):
    net_log = tmp_path / "net.log"
    reference, stopped = tmp_path / "reference", tmp_path / "stopped"
    killed = set()
    with Zygote(guarded_env(net_log, drop=("HF_HUB_OFFLINE",))) as zygote:
        _, status = zygote.run(command(synthetic_root, clip_folder, reference), tmp_path / "reference.out")
        assert status == 0, last_line(tmp_path / "reference.out")
        for number, (fault, expected_status, resume_line) in enumerate(STOPS):
            out = tmp_path / f"stop{number}.out"
            pid, status = zygote.run(command(synthetic_root, clip_folder, stopped), out, fault)
            assert status == expected_status, (fault, out.read_text()[-2000:])
            assert resume_line in out.read_text(), fault
            if status < 0:
                killed.add(pid)
                newest_log = max(stopped.glob("log.txt*"), key=lambda path: path.stat().st_mtime_ns)
                assert resume_line in newest_log.read_text(), "a killed run lost its log"
            else:  # stopped cleanly: the message says how to go on
                assert last_line(out) == ("error: interrupted (SIGTERM); run the same command again to resume "
                                          "from the last checkpoint")
            assert_nothing_half_written(stopped, killed)
            if fault[0] == "sigkill_in_checkpoint":  # one model saved epoch 2, the other not: resume from 1
                assert [latest_epoch(stopped / name) for name in MODELS] == [2, 1]
            if fault[0] == "sigkill_in_results":
                assert not (stopped / "results.json").exists()
        _, status = zygote.run(command(synthetic_root, clip_folder, stopped), tmp_path / "last.out")
    assert status == 0 and f"resume training from epoch {EPOCHS}" in (tmp_path / "last.out").read_text()
    assert killed and not net_log.exists(), net_log.read_text() if net_log.exists() else "no process was killed"

    assert results_without_run_specifics(stopped) == results_without_run_specifics(reference)
    for name in MODELS:
        expected = load_checkpoint(reference / name / f"model.pth.tar-{EPOCHS}")["state_dict"]
        resumed = load_checkpoint(stopped / name / f"model.pth.tar-{EPOCHS}")["state_dict"]
        assert expected.keys() == resumed.keys()
        for key in expected:
            assert torch.equal(expected[key], resumed[key]), (name, key)
