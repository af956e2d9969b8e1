"""CoOp, BAPLe and ZeroShot on the offline stand-ins and a synthetic dataset."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import train as train_cli
from helpers_runs import REPO, build, run_cfg, train
from trainers.metrics import backdoor_metrics
from trainers.poisoning import plan_poisoning, poison_count

RESULT_SECTIONS = ("clean", "backdoor", "poison", "trainable_params", "target_class", "num_test")


def read_results(folder):
    with open(os.path.join(folder, "results.json")) as f:
        return json.load(f)


def backbone_state(trainer):
    return {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}


def test_baple_keeps_noise_in_budget_backbone_frozen_and_clean_rows_untouched(standins, synthetic_root, tmp_path):
    cfg = run_cfg("BAPLe", synthetic_root, tmp_path, standins["biomedclip"], **{"BACKDOOR.POISON_COUNT": 3})
    trainer = build(cfg)
    before = backbone_state(trainer)
    eps = cfg.BACKDOOR.NOISE_EPS / 255
    norms, encoder_inputs = [], []

    noise = trainer.trigger.noise
    signed_step = noise.signed_step
    noise.signed_step = lambda step: (signed_step(step), norms.append(noise.delta.abs().max().item()))
    image_embeddings = trainer.model.image_embeddings
    trainer.model.image_embeddings = lambda x: (encoder_inputs.append(x.detach().clone()), image_embeddings(x))[1]
    forward_backward = trainer.forward_backward
    checked = []

    def checked_forward_backward(batch):
        images = batch["img"].clone()
        encoder_inputs.clear()
        out = forward_backward(batch)
        assert torch.equal(batch["img"], images)  # the batch itself is never modified
        poisoned = trainer.poison_mask[batch["index"]]
        if (~poisoned).any():  # the clean rows reach the encoder exactly as loaded
            assert torch.equal(encoder_inputs[0], images[~poisoned])
        if poisoned.any():  # the triggered rows differ from the loaded ones
            assert not torch.equal(encoder_inputs[-1], images[poisoned])
        checked.append(int(poisoned.sum()))
        return out

    trainer.forward_backward = checked_forward_backward
    trainer.train()

    assert sum(checked) == 3 * cfg.OPTIM.MAX_EPOCH
    assert norms and max(norms) <= eps + 1e-7
    assert max(norms) > 0
    after = trainer.model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    trainable = {name for model_name, model in trainer._models.items()
                 for name, p in model.named_parameters(prefix=model_name) if p.requires_grad}
    assert trainable == {"prompt_learner.ctx", "trigger.noise.delta"}
    results = read_results(tmp_path)
    assert results["trainable_params"] == trainer.prompt_learner.ctx.numel() + noise.delta.numel()
    assert results["poison"]["count"] == 3 and results["attack"] == "baple"
    assert 0 <= results["backdoor"]["accuracy"] <= 1 and results["clean"]["accuracy"] is not None


@pytest.mark.parametrize("n, percentage, expected", [(288, 5, 14), (16, 5, 1), (20, 2.5, 1), (100, 0, 0), (64, 50, 32)])
def test_poison_count_rounds_half_up(n, percentage, expected):
    assert poison_count(n, percentage) == expected
    assert poison_count(n, percentage, count=7) == 7


def test_poison_plan_is_exact_seeded_and_can_avoid_the_target():
    labels = np.repeat(np.arange(3), 32)
    a = plan_poisoning(labels, target=1, percentage=5, seed=3)
    assert len(a.poisoned) == 5 and a.poisoned == plan_poisoning(labels, 1, 5, seed=3).poisoned
    assert a.poisoned != plan_poisoning(labels, 1, 5, seed=4).poisoned
    b = plan_poisoning(labels, target=1, percentage=20, non_target_only=True, cross_ratio=2, seed=0)
    assert all(labels[i] != 1 for i in b.poisoned) and len(b.poisoned) == 19
    assert len(b.cross) == 38 and not set(b.cross) & set(b.poisoned)


def test_poisoned_rows_get_the_target_label(standins, synthetic_root, tmp_path):
    cfg = run_cfg("BAPLe", synthetic_root, tmp_path, standins["biomedclip"],
                  **{"BACKDOOR.POISON_COUNT": 4, "BACKDOOR.TARGET_CLASS": 1})
    trainer = build(cfg)
    seen = 0
    for batch in trainer.train_loader_x:
        _, labels, poisoned, _ = trainer.parse_batch_train(batch)
        assert (labels[poisoned] == 1).all()
        assert torch.equal(labels[~poisoned], batch["label"][~poisoned])
        seen += int(poisoned.sum())
    assert seen == 4 and trainer.poison_plan.poisoned == build(cfg).poison_plan.poisoned


def test_backdoor_metrics_on_a_hand_checked_case():
    # Six test images, target class 0. Triggered predictions hit the target on images 0, 1, 3, 5.
    labels = [0, 0, 1, 1, 2, 2]
    clean = [0, 1, 1, 1, 2, 0]
    triggered = [0, 0, 1, 0, 2, 0]
    m = backdoor_metrics(labels, clean, triggered, target=0)
    assert m["accuracy"] == pytest.approx(4 / 6)  # BA: over all six images
    assert m["asr_non_target"] == pytest.approx(2 / 4)  # images 2..5 are not of the target; 3 and 5 flipped
    assert m["agreement"] == pytest.approx(4 / 6)  # images 0, 2, 4, 5 keep their clean prediction
    assert m["macro_f1"] == pytest.approx(2 * (4 / 6) / (1 + 4 / 6))  # F1 of the target class, precision 1


def test_eval_only_reproduces_results(standins, synthetic_root, tmp_path):
    common = ["--root", synthetic_root, "--trainer", "BAPLe", "--seed", "1",
              "--dataset-config-file", os.path.join(REPO, "configs/datasets/covid.yaml"),
              "--config-file", os.path.join(REPO, "configs/trainers/BAPLe.yaml"),
              "--backbone", "biomedclip"]
    opts = ["MODEL.BACKBONE.WEIGHTS", standins["biomedclip"], "USE_CUDA", "False", "VERBOSE", "False",
            "DATASET.NUM_SHOTS", "8", "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0",
            "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "TRAINER.COOP.N_CTX", "4", "BACKDOOR.POISON_COUNT", "2"]
    train_cli.main(train_cli.build_parser().parse_args(common + ["--output-dir", str(tmp_path / "run")] + opts))
    train_cli.main(train_cli.build_parser().parse_args(
        common + ["--output-dir", str(tmp_path / "eval"), "--eval-only", "--model-dir", str(tmp_path / "run")] + opts))
    trained, evaluated = read_results(tmp_path / "run"), read_results(tmp_path / "eval")
    for key in RESULT_SECTIONS:
        assert trained[key] == evaluated[key], key
    assert trained["backdoor"]["accuracy"] is not None


def test_clean_coop_and_zeroshot_report_no_backdoor_unless_given_a_trigger(standins, synthetic_root, tmp_path):
    baple = train(run_cfg("BAPLe", synthetic_root, tmp_path / "baple", standins["biomedclip"]))
    coop = train(run_cfg("CoOp", synthetic_root, tmp_path / "coop", standins["biomedclip"]))
    results = read_results(tmp_path / "coop")
    assert results["backdoor"] is None and results["poison"]["count"] == 0 and results["attack"] == "none"
    assert results["trainable_params"] == coop.prompt_learner.ctx.numel()

    zeroshot = train(run_cfg("ZeroShot", synthetic_root, tmp_path / "zs", standins["biomedclip"]))
    zs = read_results(tmp_path / "zs")
    assert zs["trainable_params"] == 0 and zs["backdoor"] is None
    assert 0 <= zs["clean"]["accuracy"] <= 1 and zeroshot.model.backbone is not None

    # The clean CoOp model tested under BAPLe's learned trigger: same trigger tensors, its own prompt.
    cfg = run_cfg("CoOp", synthetic_root, tmp_path / "coop_under_baple", standins["biomedclip"],
                  **{"BACKDOOR.EVAL_TRIGGER": str(tmp_path / "baple")})
    evaluator = build(cfg)
    evaluator.load_model(str(tmp_path / "coop"))
    trigger = evaluator.eval_trigger()
    assert torch.equal(trigger.noise.delta, baple.trigger.noise.delta.cpu())
    evaluator.test()
    assert read_results(tmp_path / "coop_under_baple")["backdoor"]["accuracy"] is not None


@pytest.mark.parametrize("position, csc, ctx_init", [("middle", False, ""), ("front", True, ""), ("end", False, "a photo of")])
def test_prompt_variants_train(standins, synthetic_root, tmp_path, position, csc, ctx_init):
    cfg = run_cfg("CoOp", synthetic_root, tmp_path, standins["clip"], backbone="clip",
                  **{"TRAINER.COOP.CLASS_TOKEN_POSITION": position, "TRAINER.COOP.CSC": csc,
                     "TRAINER.COOP.CTX_INIT": ctx_init, "OPTIM.MAX_EPOCH": 1})
    trainer = build(cfg)
    ctx = trainer.prompt_learner.ctx.detach().clone()
    assert ctx.shape[0] == (2 if csc else (3 if ctx_init else 4))
    trainer.train()
    assert not torch.equal(ctx, trainer.prompt_learner.ctx.detach())


def test_baple_starts_from_a_clean_coop_context(standins, synthetic_root, tmp_path):
    coop = train(run_cfg("CoOp", synthetic_root, tmp_path / "coop", standins["biomedclip"]))
    baple = build(run_cfg("BAPLe", synthetic_root, tmp_path / "baple", standins["biomedclip"],
                          **{"TRAINER.BAPLE.INIT": str(tmp_path / "coop")}))
    assert torch.equal(baple.prompt_learner.ctx, coop.prompt_learner.ctx)


def test_baple_runs_through_real_dassl(standins, synthetic_root, tmp_path):
    pytest.importorskip("dassl")
    env = dict(os.environ, BAPLE_ENGINE="dassl")
    result = subprocess.run(
        [sys.executable, "train.py", "--root", synthetic_root, "--trainer", "BAPLe", "--seed", "1",
         "--dataset-config-file", "configs/datasets/covid.yaml", "--config-file", "configs/trainers/BAPLe.yaml",
         "--backbone", "biomedclip",
         "--output-dir", str(tmp_path), "MODEL.BACKBONE.WEIGHTS", standins["biomedclip"], "USE_CUDA", "False",
         "DATASET.NUM_SHOTS", "8", "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0",
         "DATALOADER.TRAIN_X.BATCH_SIZE", "8", "TRAINER.COOP.N_CTX", "4"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Engine backend: dassl" in result.stdout
    results = read_results(tmp_path)
    assert results["backdoor"]["accuracy"] is not None and results["poison"]["count"] == 1


# ---- TRAINER.PREC ------------------------------------------------------------------------------------------------
def _fp16_problem():
    from trainers.base import precision_problem
    return precision_problem("fp16", "cpu")


@pytest.mark.skipif(_fp16_problem() is not None, reason=f"this CPU cannot train in fp16: {_fp16_problem()}")
def test_prec_fp16_trains_a_half_model_context_and_noise(standins, synthetic_root, tmp_path):
    cfg = run_cfg("BAPLe", synthetic_root, tmp_path, standins["biomedclip"],
                  **{"TRAINER.PREC": "fp16", "BACKDOOR.POISON_COUNT": 3})  # epoch 2 leaves the 1e-5 warm-up,
    trainer = build(cfg)                                                # which fp16 rounds away
    assert {p.dtype for p in trainer.model.backbone.parameters()} == {torch.float16}
    ctx = trainer.prompt_learner.ctx.detach().clone()
    trainer.train()
    assert trainer.prompt_learner.ctx.dtype == torch.float16 and not torch.equal(trainer.prompt_learner.ctx, ctx)
    delta = trainer.trigger.noise.delta
    assert delta.dtype == torch.float16 and 0 < delta.abs().max().item() <= cfg.BACKDOOR.NOISE_EPS / 255 + 1e-3
    assert np.isfinite(read_results(tmp_path)["clean"]["accuracy"])


@pytest.mark.parametrize("trainer_name, prec", [("BAPLe", "amp"), ("FineTune", "amp"), ("CoOp", "fp32")])
def test_prec_amp_scales_the_loss_and_fp32_does_not(standins, synthetic_root, tmp_path, trainer_name, prec):
    cfg = run_cfg(trainer_name, synthetic_root, tmp_path, standins["biomedclip"],
                  **{"TRAINER.PREC": prec, "BACKDOOR.POISON_COUNT": 3, "OPTIM.MAX_EPOCH": 1,
                     "BACKDOOR.ATTACK": "none" if trainer_name == "BAPLe" else "badnets"})
    trainer = train(cfg)
    assert trainer.grad_scaler.is_enabled() == (prec == "amp")
    learned = trainer.prompt_learner.ctx if trainer_name != "FineTune" else trainer.model.class_weights
    assert learned.dtype == torch.float32 and torch.isfinite(learned).all()
    assert {p.dtype for p in trainer.model.backbone.parameters()} == {torch.float32}
    if prec == "amp":  # the scaler ran: its scale is set (it starts lazily at the first scaled loss)
        assert trainer.grad_scaler.get_scale() > 1


def test_a_precision_the_device_cannot_train_in_is_one_line(monkeypatch):
    from configs.defaults import get_cfg
    from common.errors import InputError
    from trainers import base

    base.precision_problem.cache_clear()
    real_sgd = torch.optim.SGD

    def half_refusing_sgd(params, **kwargs):  # a device whose fp16 kernels are missing, as older CPU builds
        params = list(params)
        if any(p.dtype == torch.float16 for p in params):
            raise RuntimeError('"sgd_kernel" not implemented for \'Half\'')
        return real_sgd(params, **kwargs)

    monkeypatch.setattr(torch.optim, "SGD", half_refusing_sgd)
    cfg = get_cfg()
    cfg.merge_from_list(["TRAINER.PREC", "fp16", "USE_CUDA", False])
    try:
        with pytest.raises(InputError) as error:
            base.check_precision(cfg)
    finally:
        base.precision_problem.cache_clear()
    message = str(error.value)
    assert "\n" not in message and message.startswith("TRAINER.PREC fp16 cannot train on this cpu")
    assert "choose from fp32, amp, amp_bf16" in message


def test_the_old_precision_keys_name_the_new_one(tmp_path, capsys):
    old = tmp_path / "old.yaml"
    old.write_text("TRAINER:\n  FINETUNE:\n    PREC: fp16\n")
    assert train_cli.run(["--config-file", str(old)]) == 2
    assert capsys.readouterr().out.strip().endswith("TRAINER.FINETUNE.PREC is now TRAINER.PREC; set TRAINER.PREC "
                                                    "there instead")
    assert train_cli.run(["TRAINER.COOP.PREC", "fp16"]) == 2
    assert capsys.readouterr().out.strip() == "error: TRAINER.COOP.PREC is now TRAINER.PREC; set TRAINER.PREC instead"


# ---- TRAINER.BAPLE.INIT: a bare context tensor file, as the reference code releases them -------------------------
@pytest.mark.parametrize("csc", [False, True])
def test_baple_starts_from_a_bare_fp16_context_tensor_file(standins, synthetic_root, tmp_path, csc):
    probe = build(run_cfg("BAPLe", synthetic_root, tmp_path / "probe", standins["biomedclip"],
                          **{"TRAINER.COOP.CSC": csc}))
    shape = tuple(probe.prompt_learner.ctx.shape)
    assert shape == ((2, 4, probe.model.backbone.ctx_dim) if csc else (4, probe.model.backbone.ctx_dim))
    ctx = torch.randn(shape, generator=torch.Generator().manual_seed(3)).half()
    path = tmp_path / "ctx_biomedclip_covid_s1.pt"
    torch.save(ctx, path)
    baple = build(run_cfg("BAPLe", synthetic_root, tmp_path / "baple", standins["biomedclip"],
                          **{"TRAINER.COOP.CSC": csc, "TRAINER.BAPLE.INIT": str(path)}))
    assert baple.prompt_learner.ctx.dtype == torch.float32
    assert torch.equal(baple.prompt_learner.ctx, ctx.float())


def test_a_context_tensor_file_of_the_wrong_shape_is_one_line(standins, synthetic_root, tmp_path, capsys):
    path = tmp_path / "ctx_clip_kather_s1.pt"
    torch.save(torch.zeros(16, 512, dtype=torch.float16), path)
    code = train_cli.run([
        "--root", synthetic_root, "--trainer", "BAPLe", "--dataset-config-file", "configs/datasets/covid.yaml",
        "--config-file", "configs/trainers/BAPLe.yaml", "--backbone", "biomedclip", "--output-dir", str(tmp_path / "run"),
        "--init", str(path), "MODEL.BACKBONE.WEIGHTS", standins["biomedclip"], "USE_CUDA", "False",
        "DATASET.NUM_SHOTS", "8", "DATALOADER.NUM_WORKERS", "0", "TRAINER.COOP.N_CTX", "4"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 2
    assert last.startswith(f"error: TRAINER.BAPLE.INIT (--init) {path} holds a context of shape (16, 512), this run "
                           "needs (4, ")


# ---- BACKDOOR.POISON_DRAW bernoulli --------------------------------------------------------------------------------
def test_bernoulli_poisoning_varies_with_the_seed_and_is_reproducible():
    labels = np.repeat(np.arange(9), 32)  # Kather's 288 few-shot samples
    plans = [plan_poisoning(labels, 0, 5, seed=seed, draw="bernoulli") for seed in range(1, 9)]
    counts = [len(p.poisoned) for p in plans]
    assert len(set(counts)) > 1 and all(0 < c < 40 for c in counts)  # around 5 % of 288 = 14.4
    assert abs(np.mean(counts) - 14.4) < 6
    assert plans[0].poisoned == plan_poisoning(labels, 0, 5, seed=1, draw="bernoulli").poisoned
    assert plans[0].poisoned == sorted(set(plans[0].poisoned))
    avoiding = plan_poisoning(labels, 0, 50, non_target_only=True, seed=1, draw="bernoulli")
    assert avoiding.poisoned and all(labels[i] != 0 for i in avoiding.poisoned)


def test_a_bernoulli_run_records_the_drawn_samples(standins, synthetic_root, tmp_path):
    counts = set()
    for seed in (1, 2, 3):
        cfg = run_cfg("CoOp", synthetic_root, tmp_path / str(seed), standins["biomedclip"],
                      **{"SEED": seed, "BACKDOOR.ATTACK": "badnets", "BACKDOOR.POISON_DRAW": "bernoulli",
                         "BACKDOOR.POISON_PERCENTAGE": 40.0, "OPTIM.MAX_EPOCH": 1})
        trainer = train(cfg)
        poison = read_results(tmp_path / str(seed))["poison"]
        assert poison["count"] == len(poison["indices"]) == int(trainer.poison_mask.sum())
        assert poison["indices"] == torch.nonzero(trainer.poison_mask).flatten().tolist()
        assert poison["indices"] == build(cfg).poison_plan.poisoned
        counts.add(poison["count"])
    assert len(counts) > 1


def test_bernoulli_poisoning_refuses_an_exact_count(standins, synthetic_root, tmp_path):
    from common.errors import InputError

    cfg = run_cfg("BAPLe", synthetic_root, tmp_path, standins["biomedclip"],
                  **{"BACKDOOR.POISON_DRAW": "bernoulli", "BACKDOOR.POISON_COUNT": 2})
    with pytest.raises(InputError, match="BACKDOOR.POISON_COUNT 2 is an exact count"):
        build(cfg)


# ---- --profile reference -----------------------------------------------------------------------------------------
def _profile_values(name="reference"):
    from scripts.fidelity import profile_values
    return profile_values(name)


def test_the_reference_profile_sets_every_key_it_holds_away_from_the_default():
    from configs.defaults import get_cfg
    from configs.defaults import flat_keys
    from scripts.fidelity import read_rows

    args = train_cli.build_parser().parse_args([
        "--dataset-config-file", "configs/datasets/kather.yaml", "--config-file", "configs/trainers/BAPLe.yaml", "--backbone", "plip",
        "--profile", "reference"])
    merged = flat_keys(yaml_of(train_cli.setup_cfg(args)))
    defaults = flat_keys(yaml_of(get_cfg()))
    profile = _profile_values()
    assert {"TRAINER.PREC", "BACKDOOR.ORDER", "BACKDOOR.NOISE_GRAD", "BACKDOOR.NOISE_INIT", "BACKDOOR.POISON_DRAW",
            "DATASET.FEWSHOT_SAMPLER"} <= set(profile)
    for key, value in profile.items():
        assert merged[key] == value and merged[key] != defaults[key], key
    # docs/FIDELITY.md's rows document exactly the profile's keys, each once
    row_keys = [key for row in read_rows("reference") for key in row.get("keys", [])]
    assert sorted(row_keys) == sorted(profile)


def yaml_of(cfg):
    import yaml
    return yaml.safe_load(cfg.dump())


def test_overrides_win_over_the_profile_and_an_unknown_profile_is_one_line(capsys):
    args = train_cli.build_parser().parse_args(["--profile", "reference", "TRAINER.PREC", "amp"])
    assert train_cli.setup_cfg(args).TRAINER.PREC == "amp"
    assert train_cli.run(["--profile", "paper"]) == 2
    assert capsys.readouterr().out.strip() == ("error: Unknown profile 'paper' (--profile); choose from: reference "
                                               "(configs/profiles/NAME.yaml)")


def test_a_baple_run_with_the_reference_profile_finishes(standins, synthetic_root, tmp_path):
    from trainers.base import precision_problem

    overrides = ["BACKDOOR.POISON_PERCENTAGE", "25"]  # 16 samples at 5 % may draw none
    if precision_problem("fp16", "cpu") is not None:  # the profile's fp16 where this CPU can train it, else fp32
        import warnings
        warnings.warn(f"this CPU cannot train in fp16 ({precision_problem('fp16', 'cpu')}): the profile runs in fp32")
        overrides += ["TRAINER.PREC", "fp32"]
    code = train_cli.run([
        "--root", synthetic_root, "--trainer", "BAPLe", "--seed", "1", "--profile", "reference",
        "--dataset-config-file", "configs/datasets/covid.yaml", "--config-file", "configs/trainers/BAPLe.yaml", "--backbone", "biomedclip",
        "--output-dir", str(tmp_path), "MODEL.BACKBONE.WEIGHTS", standins["biomedclip"], "USE_CUDA", "False",
        "DATASET.NUM_SHOTS", "8", "OPTIM.MAX_EPOCH", "2", "DATALOADER.NUM_WORKERS", "0", "DATALOADER.TRAIN_X.BATCH_SIZE",
        "8", "TRAINER.COOP.N_CTX", "4", *overrides])
    assert code == 0
    results = read_results(tmp_path)
    config = results["config"]
    assert config["BACKDOOR"]["ORDER"] == "patch_then_noise" and config["DATASET"]["FEWSHOT_SAMPLER"] == "dassl"
    assert results["poison"]["count"] == len(results["poison"]["indices"]) > 0
    assert 0 <= results["backdoor"]["accuracy"] <= 1


def test_a_config_stored_before_the_precision_rename_reopens_in_its_precision():
    from configs.defaults import get_cfg, upgraded
    from yacs.config import CfgNode

    stored = yaml_of(get_cfg())
    stored["TRAINER"].pop("PREC")
    stored["TRAINER"].update(NAME="BAPLe", FINETUNE={"PREC": "fp32"})
    stored["TRAINER"]["COOP"]["PREC"] = "bf16"  # the old bf16 autocast
    cfg = get_cfg()
    cfg.merge_from_other_cfg(CfgNode(upgraded(stored)))
    assert cfg.TRAINER.PREC == "amp_bf16" and "PREC" not in stored["TRAINER"]
    stored["TRAINER"].update(NAME="FineTune", FINETUNE={"PREC": "fp16"})  # its fp16 was autocast with a scaler
    assert upgraded(stored)["TRAINER"]["PREC"] == "amp"


def test_a_context_tensor_file_of_another_width_is_one_line_once_the_backbone_is_known(standins, synthetic_root,
                                                                                       tmp_path):
    from common.errors import InputError

    path = tmp_path / "ctx.pt"
    torch.save(torch.zeros(4, 7, dtype=torch.float16), path)  # N_CTX right, width D not the backbone's
    cfg = run_cfg("BAPLe", synthetic_root, tmp_path / "run", standins["biomedclip"], **{"TRAINER.BAPLE.INIT": str(path)})
    with pytest.raises(InputError) as error:
        build(cfg)
    assert f"{path} holds a context of shape (4, 7), this run needs (4, " in str(error.value)
    assert "\n" not in str(error.value)


def test_the_precision_probe_ignores_the_callers_grad_mode_and_random_state():
    # Figures and defences build trainers under no_grad; a seeded run's draws must not move.
    from trainers.base import precision_problem

    precision_problem.cache_clear()
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    with torch.no_grad():
        assert precision_problem("fp32", "cpu") is None
    assert torch.equal(torch.rand(3), expected)
