"""Configs as data: one method file per trainer, a per-backbone file only where a model has its own
values, merged after the method file for the run's backbone; keys a trainer does not read refused."""
import os

import pytest

import train
import trainers  # noqa: F401  (registers the trainers)
from clip_models import available_backbones
from common.errors import InputError
from helpers_runs import REPO
from trainers.validation import check_keys_read

TRAINERS = ("ZeroShot", "CoOp", "BAPLe", "FineTune")


def cfg_of(*argv):
    return train.setup_cfg(train.build_parser().parse_args(list(argv)))


def method(trainer):
    return os.path.join(REPO, "configs", "trainers", f"{trainer}.yaml")


@pytest.mark.parametrize("backbone", available_backbones())
@pytest.mark.parametrize("trainer", TRAINERS)
def test_the_method_file_and_the_backbones_own_values_give_the_papers_settings(trainer, backbone):
    cfg = cfg_of("--trainer", trainer, "--config-file", method(trainer), "--backbone", backbone)
    assert cfg.MODEL.BACKBONE.NAME == backbone and cfg.INPUT.INTERPOLATION == "bicubic"
    if trainer in ("CoOp", "BAPLe"):
        assert cfg.OPTIM.LR == (0.1 if backbone == "medclip" else 0.02)  # the paper: MedCLIP 0.1
        assert (cfg.OPTIM.NAME, cfg.OPTIM.MAX_EPOCH, cfg.DATASET.NUM_SHOTS, cfg.TRAIN.CHECKPOINT_FREQ) == ("sgd", 50, 32, 1)
    if trainer == "FineTune":
        assert (cfg.OPTIM.NAME, cfg.OPTIM.LR, cfg.TRAIN.CHECKPOINT_FREQ) == ("adamw", 5e-5, 0)
    check_keys_read(cfg)


def test_the_per_backbone_file_follows_the_backbone_the_run_ends_up_with():
    by_override = cfg_of("--trainer", "CoOp", "--config-file", method("CoOp"), "MODEL.BACKBONE.NAME", "medclip")
    assert by_override.OPTIM.LR == 0.1
    overridden = cfg_of("--trainer", "CoOp", "--config-file", method("CoOp"), "--backbone", "medclip", "OPTIM.LR", "0.5")
    assert overridden.OPTIM.LR == 0.5  # trailing overrides come last


def test_a_coop_repository_method_file_merges_and_a_per_backbone_file_is_not_a_method_file(tmp_path):
    coop_style = tmp_path / "configs" / "trainers" / "CoOp" / "rn50_ep50.yaml"
    coop_style.parent.mkdir(parents=True)
    coop_style.write_text("DATALOADER:\n  TRAIN_X:\n    BATCH_SIZE: 32\nOPTIM:\n  NAME: sgd\n  LR: 0.002\n"
                          "TRAINER:\n  COOP:\n    N_CTX: 4\n    CSC: True\n")
    cfg = cfg_of("--trainer", "CoOp", "--config-file", str(coop_style), "--backbone", "clip")
    assert (cfg.OPTIM.LR, cfg.TRAINER.COOP.N_CTX, cfg.TRAINER.COOP.CSC) == (0.002, 4, True)
    with pytest.raises(InputError, match="is not a method file: use --config-file .*CoOp.yaml --backbone medclip"):
        cfg_of("--trainer", "CoOp", "--config-file", os.path.join(REPO, "configs", "trainers", "CoOp", "medclip.yaml"))


# A key of each trainer's own, and whether each trainer reads it.
OWN_KEYS = {"TRAINER.COOP.N_CTX": ("4", {"CoOp", "BAPLe"}), "TRAINER.BAPLE.INIT": ("/somewhere", {"BAPLe"}),
            "BACKDOOR.ATTACK": ("badnets", {"ZeroShot", "CoOp", "FineTune"}),
            "BACKDOOR.WANET.K": ("8", {"ZeroShot", "CoOp", "FineTune"}),
            "BACKDOOR.NOISE_EPS": ("4.0", {"BAPLe"}), "BACKDOOR.POISON_COUNT": ("3", {"CoOp", "BAPLe", "FineTune"}),
            "BACKDOOR.TARGET_CLASS": ("1", set(TRAINERS))}


@pytest.mark.parametrize("key", OWN_KEYS)
@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_key_the_trainer_does_not_read_is_refused_in_one_line(trainer, key):
    value, readers = OWN_KEYS[key]
    cfg = cfg_of("--trainer", trainer, "--config-file", method(trainer), "--backbone", "clip", key, value)
    if trainer in readers:
        check_keys_read(cfg)
        return
    with pytest.raises(InputError) as error:
        check_keys_read(cfg)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{key} ") and f"trainer {trainer} does not read it" in message
    assert all(reader in message for reader in readers)
