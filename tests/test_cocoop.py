"""CoCoOp, BAPLe on CoCoOp and BadCLIP on the offline stand-ins and a synthetic dataset."""
import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dassl_compat.checkpoint import POINTER_FILE, load_checkpoint
from helpers_runs import REPO, build, markdown_rows, run_cfg, train
from trainers.coop import PromptCLIP, PromptLearner

BACKBONE = "quiltnet"  # the cheapest stand-in


def read_json(path):
    with open(path) as f:
        return json.load(f)


def backbone_state(trainer):
    return {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}


def learned(trainer):
    return {n: p.detach().clone() for n, p in trainer.prompt_learner.named_parameters()}


def first_batch(trainer):
    return next(iter(trainer.train_loader_x))


def test_one_text_tower_call_per_batch_on_prompts_cut_to_their_length(standins, synthetic_root, tmp_path):
    """One call of the text tower per batch, on B x C prompts cut to their real length."""
    trainer = build(run_cfg("CoCoOp", synthetic_root, tmp_path, standins[BACKBONE], backbone=BACKBONE))
    backbone = trainer.model.backbone
    calls = []
    encode = backbone._encode_text_embeddings
    backbone._encode_text_embeddings = lambda e, t: (calls.append(tuple(e.shape[:2])), encode(e, t))[1]
    images = first_batch(trainer)["img"][:5]
    with torch.no_grad():
        logits = trainer.model.eval_logits(images, trainer.model.eval_context())
    assert logits.shape == (5, trainer.num_classes)
    assert calls == [(5 * trainer.num_classes, int(trainer.prompt_learner.tokens.lengths.max()))]


def test_cocoop_step_reaches_context_and_meta_net_and_leaves_the_backbone(standins, synthetic_root, tmp_path):
    cfg = run_cfg("CoCoOp", synthetic_root, tmp_path, standins[BACKBONE], backbone=BACKBONE,
                  **{"BACKDOOR.ATTACK": "badnets", "BACKDOOR.POISON_COUNT": 2, "OPTIM.WARMUP_EPOCH": 0})
    trainer = build(cfg)
    assert trainer.prompt_learner.n_ctx == 4  # "a photo of a"
    before, params = backbone_state(trainer), learned(trainer)
    assert {n for n, p in trainer.model.named_parameters() if p.requires_grad} == {
        f"prompt_learner.{n}" for n in params}
    with torch.no_grad():  # the stand-in's bottleneck is one ReLU unit (16 // 16): keep it active
        trainer.prompt_learner.meta_net.linear1.bias.fill_(1.0)
    params = learned(trainer)
    trainer.num_batches, trainer.batch_idx = 2, 0
    trainer.set_model_mode("train")
    trainer.forward_backward(first_batch(trainer))
    for name, p in trainer.prompt_learner.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert not torch.equal(p.detach(), params[name]), name
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.backbone.state_dict().items())
    assert {n for n in params if n.startswith("meta_net.")} == {
        "meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight", "meta_net.linear2.bias"}
    assert trainer.prompt_learner.meta_net.linear1.out_features == trainer.model.backbone.embed_dim // 16


def test_cocoop_with_a_silent_meta_net_is_coop_on_the_same_context(standins, synthetic_root, tmp_path):
    cfg = run_cfg("CoCoOp", synthetic_root, tmp_path, standins[BACKBONE], backbone=BACKBONE)
    trainer = build(cfg)
    learner = trainer.prompt_learner
    with torch.no_grad():
        learner.ctx.normal_(std=0.5)  # a context unlike the words it started from
        learner.meta_net.linear2.weight.zero_()
        learner.meta_net.linear2.bias.zero_()
        coop_learner = PromptLearner(cfg, trainer.dm.dataset.classnames, trainer.model.backbone)
        coop_learner.ctx.copy_(learner.ctx)
        coop = PromptCLIP(trainer.model.backbone, coop_learner).eval()
        images = first_batch(trainer)["img"]
        cocoop_logits = trainer.model.eval_logits(images, trainer.model.eval_context())
        coop_logits = coop.eval_logits(images, coop.eval_context())
    assert (cocoop_logits - coop_logits).abs().max() <= 1e-5


@pytest.mark.parametrize("position", ["end", "middle"])
def test_batched_per_image_prompts_equal_a_loop_over_images(standins, synthetic_root, tmp_path, position):
    cfg = run_cfg("CoCoOp", synthetic_root, tmp_path, standins[BACKBONE], backbone=BACKBONE,
                  **{"TRAINER.COOP.CLASS_TOKEN_POSITION": position})
    trainer = build(cfg)
    model, learner = trainer.model, trainer.prompt_learner
    backbone = model.backbone
    with torch.no_grad():
        learner.meta_net.linear2.weight.normal_(std=1.0)  # a bias that matters
        images = first_batch(trainer)["img"][:4]
        batched = model.eval_logits(images, model.eval_context())
        looped = []
        for image in images:
            embedding = F.normalize(backbone.encode_image(image[None]), dim=-1)
            bias = learner.meta_net(embedding)[0]
            prompts = learner.assemble(learner.class_contexts() + bias)
            text = F.normalize(backbone.encode_text_embeddings(prompts, learner.tokens), dim=-1)
            looped.append(backbone.logit_scale.exp() * embedding[0] @ text.t())
    assert (batched - torch.stack(looped)).abs().max() <= 1e-5
    assert batched.std(0).abs().sum() > 0  # per-image prompts: the rows differ


def test_baple_on_cocoop_starts_from_a_clean_cocoop_run_and_keeps_its_noise_budget(standins, synthetic_root,
                                                                                   tmp_path):
    clean = train(run_cfg("CoCoOp", synthetic_root, tmp_path / "clean", standins[BACKBONE], backbone=BACKBONE,
                          **{"OPTIM.MAX_EPOCH": 1}))
    cfg = run_cfg("BAPLeCoCoOp", synthetic_root, tmp_path / "baple", standins[BACKBONE], backbone=BACKBONE,
                  **{"OPTIM.MAX_EPOCH": 1, "BACKDOOR.POISON_COUNT": 3, "TRAINER.BAPLE.INIT": str(tmp_path / "clean")})
    trainer = build(cfg)
    assert all(torch.equal(p.detach(), q.detach()) for p, q in
               zip(trainer.prompt_learner.parameters(), clean.prompt_learner.parameters()))
    before = backbone_state(trainer)
    trainer.train()
    assert trainer.trigger.noise.delta.abs().max() <= cfg.BACKDOOR.NOISE_EPS / 255 + 1e-7
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.backbone.state_dict().items())
    results = read_json(tmp_path / "baple" / "results.json")
    assert (results["trainer"], results["attack"], results["poison"]["count"]) == ("BAPLeCoCoOp", "baple", 3)
    assert results["backdoor"]["accuracy"] is not None


def badclip_cfg(standins, synthetic_root, output_dir, **overrides):
    return run_cfg("BadCLIP", synthetic_root, output_dir, standins[BACKBONE], backbone=BACKBONE,
                   **{"TRAINER.BADCLIP.INIT_EPOCHS": 1, **overrides})


def test_badclip_trigger_stays_in_budget_and_every_step_reaches_learner_and_trigger(standins, synthetic_root,
                                                                                   tmp_path):
    cfg = badclip_cfg(standins, synthetic_root, tmp_path, **{"TRAINER.BADCLIP.EPS": 2.0, "OPTIM.WARMUP_EPOCH": 0})
    trainer = build(cfg)
    with torch.no_grad():  # the stand-in's bottleneck is one ReLU unit (16 // 16): keep it active
        trainer.prompt_learner.meta_net.linear1.bias.fill_(1.0)
    trigger = trainer.trigger
    eps = cfg.TRAINER.BADCLIP.EPS / 255
    assert torch.allclose(trigger.std.flatten(), torch.tensor(trainer.model.backbone.image_std))
    before = backbone_state(trainer)
    pixel_linf, checked = [], []
    project = trigger.project
    trigger.project = lambda: (project(), pixel_linf.append(trigger.pixel_delta().abs().max().item()))
    forward_backward = trainer.forward_backward

    def checked_forward_backward(batch):
        params, delta = learned(trainer), trigger.delta.detach().clone()
        out = forward_backward(batch)
        for name, p in trainer.prompt_learner.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
            assert not torch.equal(p.detach(), params[name]), name
        assert trigger.delta.grad is not None and trigger.delta.grad.abs().sum() > 0
        assert not torch.equal(trigger.delta.detach(), delta)
        checked.append(len(batch["img"]))
        return out

    trainer.forward_backward = checked_forward_backward
    init_steps = []
    initialise = trainer.initialise_trigger

    def checked_initialise():
        params, delta = learned(trainer), trigger.delta.detach().clone()
        initialise()
        init_steps.append(len(pixel_linf))
        assert all(torch.equal(p.detach(), params[n]) for n, p in trainer.prompt_learner.named_parameters())
        assert not torch.equal(trigger.delta.detach(), delta)

    trainer.initialise_trigger = checked_initialise
    trainer.train()
    steps_per_epoch = len(trainer.train_loader_x)
    assert init_steps == [steps_per_epoch]  # one projection per initialisation step, then the joint stage
    assert len(checked) == cfg.OPTIM.MAX_EPOCH * steps_per_epoch
    assert len(pixel_linf) == (1 + cfg.OPTIM.MAX_EPOCH) * steps_per_epoch and max(pixel_linf) <= eps + 1e-7
    images = first_batch(trainer)["img"]
    assert (trigger(images) - images).abs().max() <= eps + 1e-6
    assert all(torch.equal(v, before[k]) for k, v in trainer.model.backbone.state_dict().items())


def test_badclip_resumed_from_an_epoch_checkpoint_ends_as_an_uninterrupted_run_and_evaluates_again(
        standins, synthetic_root, tmp_path):
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(badclip_cfg(standins, synthetic_root, whole))
    # The state a run killed during epoch 2 leaves: epoch 1's checkpoints, nothing after.
    for model in ("prompt_learner", "trigger"):
        os.makedirs(resumed / model)
        shutil.copy(whole / model / "model.pth.tar-1", resumed / model / "model.pth.tar-1")
        (resumed / model / POINTER_FILE).write_text("model.pth.tar-1\n")
    trainer = build(badclip_cfg(standins, synthetic_root, resumed))
    calls = []
    trainer.initialise_trigger = lambda: calls.append("init")
    trainer.train()
    assert not calls  # the resumed run's trigger was initialised before its checkpoint
    a, b = read_json(whole / "results.json"), read_json(resumed / "results.json")
    assert (a["clean"], a["backdoor"]) == (b["clean"], b["backdoor"])
    assert a["attack"] == "badclip" and a["poison"]["count"] == a["num_train"]
    for model in ("prompt_learner", "trigger"):
        x, y = (load_checkpoint(str(d / model / "model.pth.tar-2"))["state_dict"] for d in (whole, resumed))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    assert set(load_checkpoint(str(whole / "trigger" / "model.pth.tar-2"))["state_dict"]) == {"delta", "std"}

    # --eval-only on the finished run, and a clean CoCoOp model tested under BadCLIP's trigger
    evaluated = build(badclip_cfg(standins, synthetic_root, tmp_path / "eval"))
    evaluated.load_model(str(whole))
    evaluated.test()
    c = read_json(tmp_path / "eval" / "results.json")
    assert (c["clean"], c["backdoor"]) == (a["clean"], a["backdoor"])
    clean = build(run_cfg("CoCoOp", synthetic_root, tmp_path / "clean", standins[BACKBONE], backbone=BACKBONE,
                          **{"BACKDOOR.EVAL_TRIGGER": str(whole)}))
    assert torch.equal(clean.eval_trigger().delta.detach(), evaluated.trigger.delta.detach())
    clean.test()
    assert read_json(tmp_path / "clean" / "results.json")["backdoor"]["accuracy"] is not None
    assert glob.glob(str(whole / "events.out.tfevents.*"))


def test_defend_and_figures_run_on_badclip_and_cocoop_runs(standins, synthetic_root, tmp_path):
    from scripts import defend, figures

    root = tmp_path / "runs"
    train(badclip_cfg(standins, synthetic_root, root / "badclip", **{"OPTIM.MAX_EPOCH": 1}))
    train(run_cfg("CoCoOp", synthetic_root, root / "cocoop", standins[BACKBONE], backbone=BACKBONE,
                  **{"OPTIM.MAX_EPOCH": 1}))
    reports = defend.main([str(root), "--quick", "--trigger-from", str(root / "badclip"), "--countermeasures", "jpeg"])
    assert set(reports) == {"badclip", "cocoop"}
    learner_params = sum(p.numel() for p in build(run_cfg("CoCoOp", synthetic_root, tmp_path / "x", standins[BACKBONE],
                                                          backbone=BACKBONE)).prompt_learner.parameters())
    for name in ("badclip", "cocoop"):
        report = read_json(root / name / "defences" / "defences.json")
        assert report["reference"]["matches_results_json"] is True
        assert report["reference"]["unpurified"]["backdoor_accuracy"] is not None
        assert 0 <= report["strip"]["auc"] <= 1
        assert [c["class"] for c in report["reconstruct"]["classes"]] == [0, 1]
        for variant in ("received", "from_words"):
            assert report["retune"][variant]["backbone_unchanged"] is True
            assert report["retune"][variant]["trainable_params"] == learner_params  # re-tuned as CoCoOp
    table = (root / "defences.md").read_text()
    assert {tuple(row[:2]) for row in markdown_rows(table)} >= {("badclip", "BadCLIP"), ("cocoop", "Clean_CoCoOp")}

    assert figures.main(["trigger", str(root / "badclip")]) == 0
    assert figures.main(["tsne", str(root / "cocoop"), "--max-images", "12", "--trigger-from",
                         str(root / "badclip")]) == 0
    for picture in (root / "badclip" / "trigger.png", root / "cocoop" / "tsne.png"):
        assert os.path.getsize(picture) > 1000


def test_sweep_runs_the_cocoop_methods_and_the_report_has_their_rows(standins, synthetic_root, tmp_path,
                                                                     monkeypatch):
    from scripts import report
    from scripts.sweep import command as sweep

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # tiny runs in forked processes on a shared machine
    out = tmp_path / "sweep"
    tiny = ["USE_CUDA=False", "VERBOSE=False", "DATASET.NUM_SHOTS=4", "OPTIM.MAX_EPOCH=1", "DATALOADER.NUM_WORKERS=0",
            "DATALOADER.TRAIN_X.BATCH_SIZE=8", "DATALOADER.TEST.BATCH_SIZE=20", "BACKDOOR.POISON_COUNT=1",
            "TRAINER.BADCLIP.INIT_EPOCHS=1", f"MODEL.BACKBONE.WEIGHTS={standins[BACKBONE]}"]
    assert sweep.main(["--root", synthetic_root, "--out", str(out), "--datasets", "covid", "--backbones", BACKBONE,
                       "--methods", "BadNets_CoCoOp", "BAPLe_CoCoOp", "BadCLIP", "--targets", "1",
                       "--set", *tiny]) == 0
    runs = {os.path.relpath(os.path.dirname(p), out): read_json(p)
            for p in glob.glob(os.path.join(str(out), "**", "results.json"), recursive=True)}
    assert {k: (r["trainer"], r["attack"]) for k, r in runs.items()} == {
        f"covid/Clean_CoCoOp/{BACKBONE}/seed1": ("CoCoOp", "none"),  # BAPLe_CoCoOp starts from it
        f"covid/BadNets_CoCoOp/{BACKBONE}/target1/seed1": ("CoCoOp", "badnets"),
        f"covid/BAPLe_CoCoOp/{BACKBONE}/target1/seed1": ("BAPLeCoCoOp", "baple"),
        f"covid/BadCLIP/{BACKBONE}/target1/seed1": ("BadCLIP", "badclip")}
    baple = runs[f"covid/BAPLe_CoCoOp/{BACKBONE}/target1/seed1"]
    assert baple["config"]["TRAINER"]["BAPLE"]["INIT"] == str(out / "covid" / "Clean_CoCoOp" / BACKBONE / "seed1")
    _, text = report.report(str(out))
    rows = markdown_rows(text)
    assert [r for r in dict.fromkeys(row[0] for row in rows) if r.endswith("CoCoOp") or r == "BadCLIP"] == [
        "Clean_CoCoOp", "BadNets_CoCoOp", "BAPLe_CoCoOp", "BadCLIP"]
    ca = runs[f"covid/BadCLIP/{BACKBONE}/target1/seed1"]["clean"]["accuracy"]
    assert next(row for row in rows if row[0] == "BadCLIP")[1].startswith(f"{ca:.3f}/".replace("0.", "."))


def test_badclip_runs_through_real_dassl(standins, synthetic_root, tmp_path):
    pytest.importorskip("dassl")
    result = subprocess.run(
        [sys.executable, "train.py", "--root", synthetic_root, "--trainer", "BadCLIP", "--backbone", BACKBONE,
         "--seed", "1", "--dataset-config-file", "configs/datasets/covid.yaml",
         "--config-file", "configs/trainers/BadCLIP.yaml", "--output-dir", str(tmp_path),
         "MODEL.BACKBONE.WEIGHTS", standins[BACKBONE], "USE_CUDA", "False", "DATASET.NUM_SHOTS", "4",
         "OPTIM.MAX_EPOCH", "1", "TRAINER.BADCLIP.INIT_EPOCHS", "1", "DATALOADER.NUM_WORKERS", "0",
         "DATALOADER.TRAIN_X.BATCH_SIZE", "4"],
        cwd=REPO, env=dict(os.environ, BAPLE_ENGINE="dassl"), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Engine backend: dassl" in result.stdout and "trigger init epoch [1/1]" in result.stdout
    results = read_json(tmp_path / "results.json")
    assert results["attack"] == "badclip" and results["backdoor"]["accuracy"] is not None


@pytest.mark.parametrize("key, value, phrase", [
    ("TRAINER.BADCLIP.EPS", 0.0, "TRAINER.BADCLIP.EPS 0.0 is outside (0, 255]"),
    ("TRAINER.BADCLIP.INIT_EPOCHS", -1, "TRAINER.BADCLIP.INIT_EPOCHS -1 is negative"),
    ("TRAINER.BADCLIP.INIT_LR", 0.0, "TRAINER.BADCLIP.INIT_LR 0.0 must be > 0"),
])
def test_badclip_settings_are_checked_before_anything_is_built(key, value, phrase, tmp_path):
    from common.errors import InputError
    from trainers.badclip import BadCLIP

    cfg = run_cfg("BadCLIP", str(tmp_path), tmp_path, "", backbone=BACKBONE, **{key: value})
    with pytest.raises(InputError, match=phrase.replace("(", r"\(").replace(")", r"\)")) as error:
        BadCLIP.check_cfg(cfg)
    assert "\n" not in str(error.value)


def test_baple_on_cocoop_refuses_a_coop_run_as_its_start(standins, synthetic_root, tmp_path):
    from common.errors import InputError

    train(run_cfg("CoOp", synthetic_root, tmp_path / "coop", standins[BACKBONE], backbone=BACKBONE,
                  **{"OPTIM.MAX_EPOCH": 1, "TRAINER.COOP.CTX_INIT": "a photo of a"}))
    cfg = run_cfg("BAPLeCoCoOp", synthetic_root, tmp_path / "baple", standins[BACKBONE], backbone=BACKBONE,
                  **{"TRAINER.BAPLE.INIT": str(tmp_path / "coop")})
    with pytest.raises(InputError, match="is not this run's .*; use a CoCoOp run for BAPLeCoCoOp"):
        build(cfg)
