"""End-to-end runs of the baselines of Tables 1-2 on the offline stand-ins and a tiny synthetic set:
BadNets, WaNet and FIBA with prompt learning (CoOp, PL) and full fine-tuning (FineTune, FT)."""
import json
import os

import pytest
import torch

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)
from clip_models import available_backbones
from configs.defaults import get_cfg
from configs.files import method_file, method_files
from dassl_compat import build_trainer, load_checkpoint, set_random_seed
from datasets.synthetic import generate

SHOTS, TEST_PER_CLASS = 8, 4  # Covid has 2 classes: 16 training and 8 test images
POISON_PERCENTAGE = 25.0  # 4 of 16 poisoned (WaNet: 8 more cross samples)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines-data")
    generate("covid", str(root), train_per_class=SHOTS, test_per_class=TEST_PER_CLASS, size=224, seed=0)
    return str(root)


def make_cfg(trainer, attack, data_root, standins, output_dir, backbone="clip"):
    cfg = get_cfg()
    for path in method_files(method_file(trainer), backbone):
        cfg.merge_from_file(path)
    cfg.merge_from_list([
        "TRAINER.NAME", trainer, "MODEL.BACKBONE.NAME", backbone, "DATASET.NAME", "Covid", "DATASET.ROOT", data_root,
        "DATASET.NUM_SHOTS", SHOTS, "MODEL.BACKBONE.WEIGHTS", standins[backbone], "OUTPUT_DIR", output_dir,
        "SEED", 1, "VERBOSE", False, "USE_CUDA", False,
        "DATALOADER.NUM_WORKERS", 0, "DATALOADER.TRAIN_X.BATCH_SIZE", 8, "DATALOADER.TEST.BATCH_SIZE", 8,
        "OPTIM.MAX_EPOCH", 1, "OPTIM.WARMUP_EPOCH", 0, "TRAIN.PRINT_FREQ", 100,
        "BACKDOOR.ATTACK", attack, "BACKDOOR.TARGET_CLASS", 1, "BACKDOOR.POISON_PERCENTAGE", POISON_PERCENTAGE,
    ])
    if trainer == "CoOp":
        cfg.TRAINER.COOP.N_CTX = 4
    cfg.freeze()
    return cfg


def run(trainer_name, attack, data_root, standins, tmp_path, backbone="clip"):
    """Train one epoch, recording what each training batch looked like; returns (trainer, records,
    backbone state before training, results.json)."""
    cfg = make_cfg(trainer_name, attack, data_root, standins, str(tmp_path / f"{trainer_name}-{attack}"), backbone)
    set_random_seed(cfg.SEED)
    trainer = build_trainer(cfg)
    before = {k: v.detach().clone() for k, v in trainer.model.backbone.state_dict().items()}
    records = []
    parse, apply = trainer.parse_batch_train, trainer.apply_trigger

    def recording_parse(batch):
        images, labels, poisoned, cross = parse(batch)
        records.append({"true": batch["label"].clone(), "labels": labels.clone(), "poisoned": poisoned.clone(),
                        "cross": cross.clone(), "image_tower_training": trainer.model.backbone.training})
        return images, labels, poisoned, cross

    def recording_apply(images, poisoned, cross):
        out = apply(images, poisoned, cross)
        records[-1]["changed"] = (out != images).flatten(1).any(dim=1)
        return out

    trainer.parse_batch_train, trainer.apply_trigger = recording_parse, recording_apply
    trainer.train()
    with open(os.path.join(cfg.OUTPUT_DIR, "results.json")) as f:
        results = json.load(f)
    return trainer, records, before, results


def check_poisoning(records, results, attack, target=1):
    """Exact counts; poisoned rows relabelled to the target, cross rows keep their true labels, and only
    those rows' pixels change."""
    cat = {key: torch.cat([r[key] for r in records]) for key in ("true", "labels", "poisoned", "cross", "changed")}
    n_poison = 0 if attack == "none" else round(POISON_PERCENTAGE / 100 * 2 * SHOTS)
    n_cross = 2 * n_poison if attack == "wanet" else 0
    assert len(cat["true"]) == 2 * SHOTS  # one epoch saw every training image once
    assert int(cat["poisoned"].sum()) == results["poison"]["count"] == n_poison
    assert int(cat["cross"].sum()) == results["poison"]["cross_count"] == n_cross
    assert not (cat["poisoned"] & cat["cross"]).any()
    assert (cat["labels"][cat["poisoned"]] == target).all()
    assert torch.equal(cat["labels"][~cat["poisoned"]], cat["true"][~cat["poisoned"]])  # cross rows included
    assert torch.equal(cat["changed"], cat["poisoned"] | cat["cross"])


def check_results(results, trainer_name, attack):
    assert results["trainer"] == trainer_name and results["attack"] == attack
    assert 0 <= results["clean"]["accuracy"] <= 1
    if attack == "none":
        assert results["backdoor"] is None
    else:
        assert 0 <= results["backdoor"]["accuracy"] <= 1
        assert 0 <= results["backdoor"]["asr_non_target"] <= 1


@pytest.mark.parametrize("attack", ["badnets", "wanet", "fiba"])
def test_prompt_learning_baseline_changes_no_backbone_weight(attack, data_root, standins, tmp_path):
    trainer, records, before, results = run("CoOp", attack, data_root, standins, tmp_path)
    check_poisoning(records, results, attack)
    check_results(results, "CoOp", attack)
    assert not any(r["image_tower_training"] for r in records)  # the frozen backbone stays in eval mode
    after = trainer.model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert results["trainable_params"] == trainer.prompt_learner.ctx.numel()


def check_only_image_encoder_trained(trainer, before, results):
    backbone = trainer.model.backbone
    image_params = list(backbone.image_encoder_parameters())
    image_names = {name for name, p in backbone.named_parameters() if any(p is q for q in image_params)}
    after = backbone.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed <= image_names  # the text tower and the logit scale stay as loaded, bitwise
    assert len(changed) >= 0.9 * len(image_names)
    assert results["trainable_params"] == sum(p.numel() for p in image_params) + trainer.model.class_weights.numel()


@pytest.mark.parametrize("attack", ["none", "badnets", "wanet", "fiba"])
def test_fine_tuning_baseline_changes_only_the_image_encoder(attack, data_root, standins, tmp_path):
    trainer, records, before, results = run("FineTune", attack, data_root, standins, tmp_path)
    check_poisoning(records, results, attack)
    check_results(results, "FineTune", attack)
    assert all(r["image_tower_training"] for r in records)  # dropout and the like active while training
    check_only_image_encoder_trained(trainer, before, results)


@pytest.mark.parametrize("backbone", [name for name in available_backbones() if name != "clip"])  # clip: above
def test_fine_tuning_checkpoint_holds_what_is_trained_on_every_backbone(backbone, data_root, standins, tmp_path):
    trainer, _, before, results = run("FineTune", "none", data_root, standins, tmp_path, backbone)
    check_only_image_encoder_trained(trainer, before, results)
    output_dir = trainer.cfg.OUTPUT_DIR
    saved = set(load_checkpoint(os.path.join(output_dir, "model", "model.pth.tar-1"))["state_dict"])
    params = dict(trainer.model.named_parameters())
    assert {name for name, p in params.items() if p.requires_grad} <= saved
    assert not saved & {name for name, p in params.items() if not p.requires_grad}

    reloaded = build_trainer(trainer.cfg)
    reloaded.load_model(output_dir)
    trained = trainer.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in reloaded.model.state_dict().items())
