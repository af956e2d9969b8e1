"""Speed options of the trainers: ``TRAINER.COOP.BACKBONE_DTYPE bf16`` casts the frozen backbone once."""
import copy

import pytest
import torch
import torch.nn.functional as F

import datasets  # noqa: F401  (registers the datasets)
import trainers  # noqa: F401  (registers the trainers)
from clip_models import available_backbones, build_backbone
from common.errors import InputError
from helpers_runs import build, run_cfg

BACKBONES = available_backbones()
TEXTS = ["X X X X covid.", "X X X X normal lung tissue."]


@pytest.mark.parametrize("name", BACKBONES)
def test_a_bf16_backbone_takes_fp32_inputs_and_gives_features_close_to_fp32(standins, name):
    fp32 = build_backbone(name, standins[name])
    bf16 = copy.deepcopy(fp32).to(torch.bfloat16)
    assert (fp32.dtype, bf16.dtype) == (torch.float32, torch.bfloat16)
    torch.manual_seed(0)
    images = torch.rand(3, 3, fp32.image_size, fp32.image_size)
    tokens = fp32.tokenize(TEXTS)
    with torch.no_grad():
        embeddings = fp32.token_embedding(tokens.input_ids)  # fp32, as a prompt learner's are
        pairs = [(fp32.encode_image(images), bf16.encode_image(images)),
                 (fp32.encode_text_embeddings(embeddings, tokens), bf16.encode_text_embeddings(embeddings, tokens))]
    for reference, cast in pairs:
        assert reference.dtype == torch.float32 and cast.dtype == torch.bfloat16
        assert F.cosine_similarity(reference, cast.float(), dim=-1).min() > 0.99


def test_baple_on_a_bf16_backbone_trains_fp32_context_and_noise_and_leaves_the_backbone(standins, synthetic_root,
                                                                                      tmp_path):
    cfg = run_cfg("BAPLe", synthetic_root, tmp_path, standins["quiltnet"], backbone="quiltnet",
                  **{"TRAINER.COOP.BACKBONE_DTYPE": "bf16", "BACKDOOR.POISON_COUNT": 4, "OPTIM.MAX_EPOCH": 1})
    trainer = build(cfg)
    backbone = trainer.model.backbone
    assert {p.dtype for p in backbone.parameters()} == {torch.bfloat16}
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    ctx = trainer.prompt_learner.ctx.detach().clone()
    trainer.train()  # two steps, then the evaluation pass, on the cast backbone

    assert trainer.prompt_learner.ctx.dtype == torch.float32 and not torch.equal(trainer.prompt_learner.ctx, ctx)
    assert trainer.trigger.noise.delta.dtype == torch.float32 and trainer.trigger.noise.delta.abs().max() > 0
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())


def test_an_unknown_backbone_dtype_is_one_clear_error(standins, synthetic_root, tmp_path):
    cfg = run_cfg("CoOp", synthetic_root, tmp_path, standins["clip"], backbone="clip",
                  **{"TRAINER.COOP.BACKBONE_DTYPE": "fp16"})
    with pytest.raises(InputError, match="TRAINER.COOP.BACKBONE_DTYPE 'fp16' is unknown; choose from fp32, bf16"):
        build(cfg)
