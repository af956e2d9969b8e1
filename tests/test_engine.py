"""The Dassl-compatible engine: lifecycle, outputs, schedule, checkpoints, resume, command line."""
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from common.errors import CheckpointError
import dassl_compat
import train
from configs.defaults import get_cfg
from dassl_compat import (DATASET_REGISTRY, TRAINER_REGISTRY, DatasetBase, Datum, TrainerX, build_lr_scheduler,
                          build_optimizer, build_trainer, compute_accuracy, load_checkpoint, set_random_seed)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@DATASET_REGISTRY.register()
class ToyBrightness(DatasetBase):
    """Two classes of 8x8 images: dark and bright, with noise."""

    def __init__(self, cfg):
        def split(name):
            folder = os.path.join(cfg.DATASET.ROOT, name)
            return [Datum(os.path.join(folder, label, f), int(label), classname=["dark", "bright"][int(label)])
                    for label in sorted(os.listdir(folder)) for f in sorted(os.listdir(os.path.join(folder, label)))]

        super().__init__(train_x=split("train"), test=split("test"))


@TRAINER_REGISTRY.register()
class ToyLinear(TrainerX):
    crash_at = None  # (epoch, batch) at which to simulate the process being stopped

    def build_model(self):
        self.model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, self.num_classes)).to(self.device)
        self.optim = build_optimizer(self.model, self.cfg.OPTIM)
        self.sched = build_lr_scheduler(self.optim, self.cfg.OPTIM)
        self.register_model("model", self.model, self.optim, self.sched)
        self.lr_per_epoch = {}

    def forward_backward(self, batch):
        if self.crash_at == (self.epoch, self.batch_idx):
            raise KeyboardInterrupt
        self.lr_per_epoch[self.epoch] = self.get_current_lr()
        image, label, _ = self.parse_batch_train(batch)
        output = self.model(image)
        loss = F.cross_entropy(output, label)
        self.model_backward_and_update(loss)
        if (self.batch_idx + 1) == self.num_batches:
            self.update_lr()
        return {"loss": loss.item(), "acc": compute_accuracy(output, label)[0].item()}


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    for split, n in (("train", 24), ("test", 20)):
        for label in (0, 1):
            folder = root / split / str(label)
            folder.mkdir(parents=True)
            for i in range(n):
                base = 60 + 120 * label
                pixels = np.clip(base + rng.normal(0, 50, (8, 8, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return str(root)


def toy_cfg(root, output_dir, **overrides):
    cfg = get_cfg()
    cfg.merge_from_list([
        "DATASET.NAME", "ToyBrightness", "DATASET.ROOT", root, "TRAINER.NAME", "ToyLinear",
        "OUTPUT_DIR", str(output_dir), "SEED", 1, "USE_CUDA", False, "VERBOSE", False,
        "INPUT.SIZE", (8, 8), "INPUT.TRANSFORMS", ("random_flip",), "DATALOADER.NUM_WORKERS", 0,
        "DATALOADER.TRAIN_X.BATCH_SIZE", 8, "DATALOADER.TEST.BATCH_SIZE", 16,
        "OPTIM.NAME", "sgd", "OPTIM.LR", 0.05, "OPTIM.MAX_EPOCH", 5, "OPTIM.LR_SCHEDULER", "cosine",
        "OPTIM.WARMUP_EPOCH", 1, "OPTIM.WARMUP_TYPE", "constant", "OPTIM.WARMUP_CONS_LR", 1e-3,
        "TRAIN.CHECKPOINT_FREQ", 1,
    ] + [item for kv in overrides.items() for item in kv])
    return cfg


def run_toy(cfg):
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    trainer.train()
    return trainer


def test_train_writes_dassl_outputs_and_lr_follows_dassl_schedule(toy_root, tmp_path, capsys):
    trainer = run_toy(toy_cfg(toy_root, tmp_path))
    out = capsys.readouterr().out
    assert re.search(r"\* accuracy: \d+\.\d%", out)
    for epoch in range(1, 6):
        ckpt = load_checkpoint(str(tmp_path / "model" / f"model.pth.tar-{epoch}"))
        assert ckpt["epoch"] == epoch and set(ckpt["state_dict"]) == {"1.weight", "1.bias"}
    assert (tmp_path / "model" / "checkpoint").read_text().strip() == "model.pth.tar-5"
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path / "tensorboard"))
    assert not [f for f in os.listdir(tmp_path / "model") if ".tmp-" in f]

    # Dassl's constant warm-up then cosine, recounted: epoch 0 at the warm-up rate, epoch e >= 1 at
    # cosine step e - 1 of MAX_EPOCH.
    expected = [1e-3] + [0.5 * 0.05 * (1 + math.cos(math.pi * (e - 1) / 5)) for e in range(1, 5)]
    assert [trainer.lr_per_epoch[e] for e in range(5)] == pytest.approx(expected, rel=1e-12)


def test_scheduler_matches_dassl_linear_warmup():
    cfg = get_cfg().OPTIM
    cfg.merge_from_list(["NAME", "sgd", "LR", 0.1, "MAX_EPOCH", 6, "LR_SCHEDULER", "cosine",
                         "WARMUP_EPOCH", 3, "WARMUP_TYPE", "linear", "WARMUP_MIN_LR", 1e-4])
    optim = build_optimizer([nn.Parameter(torch.zeros(1))], cfg)
    sched = build_lr_scheduler(optim, cfg)
    lrs = []
    for _ in range(6):
        lrs.append(optim.param_groups[0]["lr"])
        optim.step()
        sched.step()
    # Dassl's LinearWarmupScheduler: min_lr at epoch 0, base * e / W for 0 < e < W, then cosine from 0.
    expected = [1e-4, 0.1 / 3, 0.2 / 3] + [0.05 * (1 + math.cos(math.pi * t / 6)) for t in range(3)]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_checkpoint_loads_with_weights_only(toy_root, tmp_path):
    run_toy(toy_cfg(toy_root, tmp_path, **{"OPTIM.MAX_EPOCH": 2}))
    path = tmp_path / "model" / "model.pth.tar-2"
    ckpt = torch.load(path, weights_only=True)
    assert {"state_dict", "epoch", "optimizer", "scheduler", "val_result", "rng_state"} <= set(ckpt)
    # A checkpoint holding an arbitrary Python object is refused, not unpickled.
    torch.save({"state_dict": {}, "epoch": 1, "evil": subprocess.Popen}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(str(path))


def test_resume_after_stop_matches_uninterrupted_run(toy_root, tmp_path):
    reference = run_toy(toy_cfg(toy_root, tmp_path / "full"))
    ref_acc = reference.test()

    cfg = toy_cfg(toy_root, tmp_path / "stopped")
    ToyLinear.crash_at = (3, 1)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_toy(cfg)
    finally:
        ToyLinear.crash_at = None
    assert (tmp_path / "stopped" / "model" / "checkpoint").read_text().strip() == "model.pth.tar-3"

    resumed = run_toy(cfg)  # same command again: resumes from epoch 3
    assert resumed.start_epoch == 3
    assert resumed.test() == ref_acc
    for key, value in reference.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def test_eval_only_reproduces_test_accuracy(toy_root, tmp_path, capsys):
    common = ["--root", toy_root, "--trainer", "ToyLinear", "--seed", "1"]
    opts = ["DATASET.NAME", "ToyBrightness", "USE_CUDA", "False", "VERBOSE", "False", "INPUT.SIZE", "(8, 8)",
            "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "OPTIM.MAX_EPOCH", "3",
            "OPTIM.NAME", "sgd", "OPTIM.LR", "0.05"]
    train.main(train.build_parser().parse_args(common + ["--output-dir", str(tmp_path / "run")] + opts))
    trained = re.findall(r"\* accuracy: ([\d.]+)%", capsys.readouterr().out)
    train.main(train.build_parser().parse_args(
        common + ["--output-dir", str(tmp_path / "eval"), "--eval-only", "--model-dir", str(tmp_path / "run"),
                  "--load-epoch", "3"] + opts))
    evaluated = re.findall(r"\* accuracy: ([\d.]+)%", capsys.readouterr().out)
    assert trained and evaluated == trained[-1:]
    assert "accuracy" in (tmp_path / "run" / "log.txt").read_text()


def _cli(*args):
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_help_lists_coop_flags():
    result = _cli("--help")
    assert result.returncode == 0
    for flag in ("--root", "--seed", "--trainer", "--dataset-config-file", "--config-file", "--output-dir",
                 "--resume", "--eval-only", "--model-dir", "--load-epoch", "--no-train"):
        assert flag in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["--trainer", "NoSuchTrainer"], r"Unknown trainer 'NoSuchTrainer' \(TRAINER.NAME\); choose from: .+"),
    (["OPTIM.LRR", "0.1"], r"Unknown config key OPTIM.LRR \(did you mean LR\?\); keys under OPTIM: .*LR_SCHEDULER.*"),
    (["--config-file", "missing.yaml"], r"Config file missing.yaml does not exist; pass an existing YAML file .*"),
])
def test_bad_command_line_exits_2_with_one_line(args, expected):
    result = _cli(*args)
    assert result.returncode == 2
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch("error: " + expected, last), last
    assert "Traceback" not in result.stdout + result.stderr
