"""Every Med-FM backbone, loaded from its offline stand-in through the real loading code."""
import json
import os
import re

import pytest
import torch
import torch.nn.functional as F

import clip_models
from clip_models import TokenizedText, available_backbones, build_backbone
from clip_models.registry import _check_placeholder
from clip_models.standins import write_hub_repo
from common.errors import InputError

# Every registered backbone (a model added in one adapter file is tested as well).
BACKBONES = available_backbones()
PAPER_BACKBONES = ["biomedclip", "clip", "medclip", "plip", "quiltnet"]
CLASS_NAMES = ["normal lung", "covid", "colorectal adenocarcinoma epithelium"]
CONTEXT_WORDS = ["a", "photo", "of", "the"]  # one token each in every tokenizer
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
FIXTURE = os.path.join(FIXTURES, "medclip_vit_keys.json")


def _medclip_own(backbone, texts):
    # MedCLIP's prompt code pads a group to its longest prompt, so a prompt alone is not padded at all.
    rows = []
    for text in texts:
        encoded = backbone.tokenizer([text], return_tensors="pt")
        rows.append(backbone.model.text_model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]))
    return torch.cat(rows)


@pytest.fixture(scope="module")
def backbones(standins):
    return {name: build_backbone(name, standins[name]) for name in BACKBONES}


def _prompt_embeddings(backbone, ctx, class_names, position="end"):
    """CoOp's splice, as the trainers do it: "X X .. X <name>." prompts with the n_ctx placeholder
    embeddings replaced by ``ctx`` ([n_ctx, ctx_dim]); the class name moved to the front if asked."""
    n_ctx = ctx.shape[0]
    tokens = backbone.tokenize([" ".join([backbone.placeholder] * n_ctx) + f" {name}." for name in class_names])
    with torch.no_grad():
        embedded = backbone.token_embedding(tokens.input_ids)
    prefix, suffix = embedded[:, :1], embedded[:, 1 + n_ctx:]
    ctx = ctx.unsqueeze(0).expand(len(class_names), -1, -1)
    if position == "end":
        return torch.cat([prefix, ctx, suffix], dim=1), tokens
    rows = []
    for i, name in enumerate(class_names):
        name_len = backbone.count_tokens(name)
        rows.append(torch.cat([prefix[i:i + 1], suffix[i:i + 1, :name_len], ctx[i:i + 1], suffix[i:i + 1, name_len:]],
                              dim=1))
    return torch.cat(rows), tokens


def test_registry_lists_the_five_backbones_and_rejects_unknown_names():
    assert set(PAPER_BACKBONES) <= set(available_backbones()) and available_backbones() == sorted(BACKBONES)
    with pytest.raises(InputError) as error:
        build_backbone("clipp")
    assert "clipp" in str(error.value) and all(name in str(error.value) for name in BACKBONES)
    assert clip_models.backbone_class("medclip").exact_under_truncation is True  # its own padding: see below


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_loads_and_gives_image_and_class_text_features(backbones, name):
    backbone = backbones[name]
    assert not backbone.training
    assert all(p.requires_grad for p in backbone.parameters()), "building must not freeze: trainers decide"
    images = torch.rand(3, 3, backbone.image_size, backbone.image_size)
    with torch.no_grad():
        image_features = backbone.encode_image(images)
        text_features = backbone.encode_text([f"a photo of {c}." for c in CLASS_NAMES])
        # Normalisation with the model's mean/std happens inside encode_image.
        mean = torch.tensor(backbone.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(backbone.image_std).view(1, 3, 1, 1)
        by_hand = backbone.encode_normalized_image((images - mean) / std)
    assert image_features.shape == (3, backbone.embed_dim)
    assert text_features.shape == (len(CLASS_NAMES), backbone.embed_dim)
    assert torch.isfinite(image_features).all() and torch.isfinite(text_features).all()
    torch.testing.assert_close(image_features, by_hand)
    assert not torch.allclose(text_features[0], text_features[1])
    assert backbone.token_embedding(backbone.tokenize(["x"]).input_ids).shape == (1, backbone.context_length,
                                                                                  backbone.ctx_dim)
    assert backbone.logit_scale.ndim == 0 or backbone.logit_scale.numel() == 1
    image_params = {id(p) for p in backbone.image_encoder_parameters()}
    assert image_params and image_params < {id(p) for p in backbone.parameters()}


@pytest.mark.parametrize("truncate", [False, True])
@pytest.mark.parametrize("position", ["end", "front"])
@pytest.mark.parametrize("name", BACKBONES)
def test_context_set_to_real_words_gives_the_models_own_text_features(backbones, name, position, truncate):
    backbone = backbones[name]
    ctx = backbone.word_embeddings(" ".join(CONTEXT_WORDS))  # CTX_INIT
    assert ctx.shape == (len(CONTEXT_WORDS), backbone.ctx_dim) and not ctx.requires_grad
    embeddings, tokens = _prompt_embeddings(backbone, ctx, CLASS_NAMES, position)
    context = " ".join(CONTEXT_WORDS)
    sentences = [f"{context} {c}." if position == "end" else f"{c} {context}." for c in CLASS_NAMES]
    backbone.truncate_prompts = truncate
    try:
        with torch.no_grad():
            spliced = backbone.encode_text_embeddings(embeddings, tokens)
            own = backbone.library_text_features(sentences)
    finally:
        backbone.truncate_prompts = backbone.exact_under_truncation
    assert spliced.shape == own.shape == (len(CLASS_NAMES), backbone.embed_dim)
    assert (spliced - own).abs().max() <= 1e-5


@pytest.mark.parametrize("name", BACKBONES)
def test_prompt_learning_step_reaches_context_and_noise_and_leaves_backbone_untouched(backbones, name):
    backbone = backbones[name]
    for p in backbone.parameters():
        p.requires_grad_(False)
    try:
        before = {k: v.clone() for k, v in backbone.state_dict().items()}
        torch.manual_seed(0)
        ctx = torch.nn.Parameter(0.02 * torch.randn(4, backbone.ctx_dim))
        noise = torch.zeros(1, 3, backbone.image_size, backbone.image_size, requires_grad=True)
        images = torch.rand(2, 3, backbone.image_size, backbone.image_size)
        optimizer = torch.optim.SGD([ctx], lr=0.1)

        embeddings, tokens = _prompt_embeddings(backbone, ctx, CLASS_NAMES)
        text = F.normalize(backbone.encode_text_embeddings(embeddings, tokens), dim=-1)
        image = F.normalize(backbone.encode_image((images + noise).clamp(0, 1)), dim=-1)
        logits = backbone.logit_scale.exp() * image @ text.t()
        F.cross_entropy(logits, torch.tensor([0, 2])).backward()
        optimizer.step()

        assert ctx.grad is not None and ctx.grad.abs().sum() > 0
        assert noise.grad is not None and noise.grad.abs().sum() > 0
        assert all(p.grad is None for p in backbone.parameters())
        after = backbone.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)
    finally:
        for p in backbone.parameters():
            p.requires_grad_(True)


@pytest.mark.parametrize("name", BACKBONES)
def test_fine_tuning_trains_the_image_encoder(backbones, name):
    backbone = backbones[name]
    images = torch.rand(2, 3, backbone.image_size, backbone.image_size)
    backbone.zero_grad()
    backbone.encode_image(images).square().sum().backward()
    grads = [p.grad for p in backbone.image_encoder_parameters()]
    backbone.zero_grad()
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ["plip", "quiltnet"])
def test_a_local_folder_works_as_weights(standins, name):
    from huggingface_hub import snapshot_download

    folder = snapshot_download(standins[name])
    assert os.path.isdir(folder)
    backbone = build_backbone(name, folder)
    with torch.no_grad():
        assert backbone.encode_text(["covid."]).shape == (1, backbone.embed_dim)


def _assert_one_line_input_error(build, *must_name):
    with pytest.raises(InputError) as error:
        build()
    message = str(error.value)
    assert "\n" not in message and error.value.__cause__ is None
    for text in must_name:
        assert text in message, (text, message)


@pytest.mark.parametrize("name", ["clip", "biomedclip", "plip"])
def test_missing_hub_weights_offline_is_one_line_naming_model_id_and_remedy(standins, name):
    _assert_one_line_input_error(lambda: build_backbone(name, "nobody/no-such-model"),
                                 name, "nobody/no-such-model", "HF_HUB_CACHE", "MODEL.BACKBONE.WEIGHTS")


def test_missing_text_tower_repo_is_named(standins):
    # A BiomedCLIP-style repo whose BERT tower repo is not in the cache.
    config = {"model_cfg": {"embed_dim": 16, "vision_cfg": {"timm_model_name": "test_vit"},
                            "text_cfg": {"hf_model_name": "nobody/no-such-bert",
                                         "hf_tokenizer_name": "nobody/no-such-bert"}}}
    write_hub_repo(os.environ["HF_HUB_CACHE"], "test/tower-missing", lambda folder: json.dump(
        config, open(os.path.join(folder, "open_clip_config.json"), "w")))
    _assert_one_line_input_error(lambda: build_backbone("biomedclip", "test/tower-missing"),
                                 "biomedclip", "nobody/no-such-bert", "HF_HUB_CACHE")


def test_missing_medclip_folder_is_one_line(standins, tmp_path):
    missing = str(tmp_path / "medclip-vit")
    _assert_one_line_input_error(lambda: build_backbone("medclip", missing), "medclip", missing, "MEDCLIP_WEIGHTS")


def test_mistyped_local_path_is_one_line(standins):
    _assert_one_line_input_error(lambda: build_backbone("plip", "./weights/plip/typo"), "./weights/plip/typo")


def test_a_placeholder_of_several_tokens_is_refused(backbones):
    backbone = backbones["plip"]
    backbone.placeholder = "zzqxv"
    try:
        _assert_one_line_input_error(lambda: _check_placeholder(backbone), "plip", "zzqxv")
    finally:
        del backbone.placeholder


def test_released_medclip_checkpoint_format_loads_with_no_missing_or_unexpected_keys():
    """The fixture holds the keys and shapes of the released MedCLIP-ViT checkpoint (real tower configs,
    medclip 0.0.3 under transformers 4.23.1); a state dict of that format, on the meta device to skip
    0.5 GB of random weights, must load into the transformers-5 rebuild exactly."""
    from transformers import BertConfig, SwinConfig

    from clip_models.medclip import MedCLIPModel

    fixture = json.load(open(FIXTURE))
    released = {key: torch.empty(shape, device="meta") for key, shape in fixture["keys"].items()}
    assert any(".attention.self.query." in key for key in released), "the fixture must hold transformers-4 Swin keys"
    with torch.device("meta"):
        model = MedCLIPModel(SwinConfig(**fixture["swin_config"]), BertConfig(**fixture["bert_config"]))
    incompatible = model.load_released_state_dict(released)  # a shape mismatch raises
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []


def test_medclip_rebuild_computes_what_the_medclip_package_computes():
    """The fixture is a small released-format checkpoint with the medclip package's own image and text
    features on fixed inputs (see fixtures/medclip_make_fixtures.py)."""
    import importlib.util

    from safetensors import safe_open
    from transformers import BertConfig, SwinConfig

    from clip_models.medclip import MedCLIPModel

    spec = importlib.util.spec_from_file_location("medclip_make_fixtures",
                                                  os.path.join(FIXTURES, "medclip_make_fixtures.py"))
    make_fixtures = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_fixtures)
    with safe_open(os.path.join(FIXTURES, "medclip_package_reference.safetensors"), "pt") as f:
        meta = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}
    checkpoint = {k[len("checkpoint/"):]: v for k, v in tensors.items() if k.startswith("checkpoint/")}
    model = MedCLIPModel(SwinConfig(**json.loads(meta["swin_config"])), BertConfig(**json.loads(meta["bert_config"])),
                         embed_dim=int(meta["embed_dim"])).eval()
    incompatible = model.load_released_state_dict(checkpoint)
    assert incompatible.missing_keys == [] and incompatible.unexpected_keys == []
    with torch.no_grad():
        image = model.vision_model(make_fixtures.reference_pixels(torch))
        text = model.text_model(input_ids=tensors["input_ids"], attention_mask=tensors["attention_mask"])
    assert (image - tensors["image_features"]).abs().max() <= 1e-5
    assert (text - tensors["text_features"]).abs().max() <= 1e-5


def test_medclip_standin_is_written_in_the_released_format(standins):
    def patterns(keys):
        return {re.sub(r"\.\d+\.", ".N.", key) for key in keys}

    written = torch.load(os.path.join(standins["medclip"], "pytorch_model.bin"), weights_only=True)
    assert patterns(written) == patterns(json.load(open(FIXTURE))["keys"])


def test_tokenized_text_lengths_count_real_tokens(backbones):
    for backbone in backbones.values():
        tokens = backbone.tokenize(["covid.", "a photo of the covid."])
        assert isinstance(tokens, TokenizedText)
        assert tokens.input_ids.shape == tokens.attention_mask.shape == (2, backbone.context_length)
        assert (tokens.lengths == torch.tensor([2 + backbone.count_tokens("covid."),
                                                2 + backbone.count_tokens("a photo of the covid.")])).all()


# ---- fidelity settings: each model's own behaviour by default, the reference code's on request ----------------

QUILTNET_HUB_CONFIG = os.path.join(FIXTURES, "quiltnet_open_clip_config.json")
SIZE_KEYS = {"embed_dim", "layers", "width", "heads", "head_width"}  # the tiny stand-in's own sizes


def _activations(model):
    """The activation module kinds in ``model``."""
    from open_clip.transformer import QuickGELU

    return {"quick_gelu" if isinstance(m, QuickGELU) else "gelu" for m in model.modules()
            if isinstance(m, (QuickGELU, torch.nn.GELU))}


def _without(config, keys):
    if isinstance(config, dict):
        return {k: _without(v, keys) for k, v in config.items() if k not in keys and not k.startswith("_")}
    return config


def test_quiltnet_standin_config_is_the_public_hub_config(standins):
    from huggingface_hub import hf_hub_download

    from clip_models.standins import open_clip_clip_config

    public = _without(json.load(open(QUILTNET_HUB_CONFIG)), ())
    assert open_clip_clip_config(full_size=True, quick_gelu=False) == public
    written = json.load(open(hf_hub_download(standins["quiltnet"], "open_clip_config.json")))
    assert "quick_gelu" not in written["model_cfg"]
    assert _without(written, SIZE_KEYS) == _without(public, SIZE_KEYS)


def test_quiltnet_runs_gelu_by_default_and_the_setting_switches_activation(backbones, standins):
    assert _activations(backbones["quiltnet"].model) == {"gelu"}
    assert _activations(backbones["clip"].model) == {"quick_gelu"}  # OpenAI's config: QuickGELU
    forced = build_backbone("quiltnet", standins["quiltnet"], {"ACTIVATION": "quick_gelu"})
    assert _activations(forced.model) == {"quick_gelu"}
    assert _activations(build_backbone("clip", standins["clip"], {"ACTIVATION": "gelu"}).model) == {"gelu"}
    # Same weights, other activation: other features.
    text = ["an H&E image patch of tumor tissue."]
    with torch.no_grad():
        assert not torch.allclose(forced.encode_text(text), backbones["quiltnet"].encode_text(text))
    _assert_one_line_input_error(lambda: build_backbone("quiltnet", standins["quiltnet"], {"ACTIVATION": "relu"}),
                                 "MODEL.BACKBONE.ACTIVATION", "relu", "quick_gelu")


MEDCLIP_NAMES = ["covid", "normal lung", "pneumothorax with colorectal adenocarcinoma"]  # 1 to 22 tokens


def _medclip_unpadded(backbone, embeddings, tokens):
    """MedCLIP's own text tower (mean over every position) on each prompt cut to its own length."""
    return torch.cat([backbone.model.text_model(inputs_embeds=embeddings[i:i + 1, :n],
                                                attention_mask=tokens.attention_mask[i:i + 1, :n])
                      for i, n in enumerate(tokens.lengths.tolist())])


@pytest.mark.parametrize("truncate", [False, True])
def test_medclip_prompt_embedding_does_not_depend_on_the_other_prompts(backbones, truncate):
    backbone = backbones["medclip"]
    torch.manual_seed(0)
    ctx = 0.02 * torch.randn(16, backbone.ctx_dim)
    embeddings, tokens = _prompt_embeddings(backbone, ctx, MEDCLIP_NAMES)
    backbone.truncate_prompts = truncate
    try:
        with torch.no_grad():
            together = backbone.encode_text_embeddings(embeddings, tokens)
            alone = backbone.encode_text_embeddings(embeddings[:1], TokenizedText(tokens.input_ids[:1],
                                                                                   tokens.attention_mask[:1]))
            own = _medclip_unpadded(backbone, embeddings, tokens)
            plain = backbone.encode_text(["covid.", "a photo of the colorectal adenocarcinoma epithelium."])
    finally:
        backbone.truncate_prompts = True
    assert tokens.lengths.tolist()[0] < tokens.lengths.tolist()[-1] < backbone.context_length
    assert (together[0] - alone[0]).abs().max() <= 1e-5
    assert (together - own).abs().max() <= 1e-5
    assert (plain - _medclip_own(backbone, ["covid.", "a photo of the colorectal adenocarcinoma epithelium."])
            ).abs().max() <= 1e-5
    # MedCLIP's pooling run over the padding instead (the project's former 77-token padding) is not that.
    with torch.no_grad():
        padded = backbone.model.text_model(inputs_embeds=embeddings, attention_mask=tokens.attention_mask)
    assert (padded - own).abs().max() > 1e-3


def test_medclip_reference_padding_is_the_reference_codes_25_tokens(standins, backbones):
    backbone = build_backbone("medclip", standins["medclip"], {"MEDCLIP_PADDING": "reference"})
    assert backbone.exact_under_truncation is False and backbone.truncate_prompts is False
    torch.manual_seed(0)
    ctx = 0.02 * torch.randn(16, backbone.ctx_dim)
    embeddings, tokens = _prompt_embeddings(backbone, ctx, MEDCLIP_NAMES)
    prompts = [" ".join([backbone.placeholder] * 16) + f" {name}." for name in MEDCLIP_NAMES]
    # The reference's call: padded and cut to 25, the last kept token then [SEP].
    reference = backbone.tokenizer(prompts, padding="max_length", max_length=25, truncation=True, return_tensors="pt")
    assert torch.equal(tokens.input_ids, reference["input_ids"])
    assert torch.equal(tokens.attention_mask, reference["attention_mask"])
    assert tokens.lengths.tolist()[-1] == 25 < 2 + backbone.count_tokens(prompts[-1])  # the long name is cut
    with torch.no_grad():
        features = backbone.encode_text_embeddings(embeddings, tokens)
        by_hand = backbone.model.text_model(inputs_embeds=embeddings, attention_mask=reference["attention_mask"])
        own = backbones["medclip"].encode_text_embeddings(*_prompt_embeddings(backbones["medclip"], ctx, MEDCLIP_NAMES))
    assert (features - by_hand).abs().max() <= 1e-6
    assert (features[:2] - own[:2]).abs().max() > 1e-3  # 25 positions of padding averaged in


def test_medclip_logit_scale_clamp_is_a_setting(standins):
    import math

    clamped = build_backbone("medclip", standins["medclip"])
    plain = build_backbone("medclip", standins["medclip"], {"MEDCLIP_LOGIT_SCALE_CLAMP": False})
    for backbone in (clamped, plain):
        with torch.no_grad():
            backbone.model.logit_scale.fill_(5.0)
    assert clamped.logit_scale.item() == pytest.approx(math.log(100))
    assert plain.logit_scale.item() == pytest.approx(5.0)
    _assert_one_line_input_error(lambda: build_backbone("medclip", standins["medclip"], {"MEDCLIP_PADDING": "77"}),
                                 "MODEL.BACKBONE.MEDCLIP_PADDING", "own", "reference")


def test_biomedclip_double_embedding_is_the_reference_codes_second_pass(standins, backbones):
    single = backbones["biomedclip"]
    double = build_backbone("biomedclip", standins["biomedclip"], {"BIOMEDCLIP_DOUBLE_EMBEDDING": True})
    torch.manual_seed(0)
    ctx = 0.02 * torch.randn(4, double.ctx_dim)
    prompts = [" ".join([double.placeholder] * 4) + f" {name}." for name in CLASS_NAMES]
    tokens = double.tokenize(prompts)
    bert = double.text.transformer
    with torch.no_grad():
        spliced, _ = _prompt_embeddings(double, ctx, CLASS_NAMES)
        features = double.encode_text_embeddings(spliced, tokens)
        # By hand: the fixed tokens through the whole embedding layer, the context spliced in, then BertModel
        # (whose embedding layer is the second pass), pooled and projected as open_clip does.
        fixed = bert.embeddings(input_ids=tokens.input_ids)
        prompt = torch.cat([fixed[:, :1], ctx.expand(len(prompts), -1, -1), fixed[:, 5:]], dim=1)
        out = bert(inputs_embeds=prompt, attention_mask=tokens.attention_mask)
        by_hand = double.text.proj(double.text.pooler(out, tokens.attention_mask))
        once = single.encode_text_embeddings(*_prompt_embeddings(single, ctx, CLASS_NAMES))
        plain = [b.encode_text(["an H&E image patch of tumor tissue."]) for b in (single, double)]
    assert (features - by_hand).abs().max() <= 1e-5
    assert (features - once).abs().max() > 1e-3
    torch.testing.assert_close(plain[0], plain[1])  # plain texts: open_clip's single pass either way
    _assert_one_line_input_error(
        lambda: build_backbone("biomedclip", standins["biomedclip"], {"BIOMEDCLIP_DOUBLE_EMBEDDING": "yes"}),
        "MODEL.BACKBONE.BIOMEDCLIP_DOUBLE_EMBEDDING", "True")


def test_each_backbone_takes_its_own_settings_from_the_config():
    from clip_models.registry import backbone_options
    from configs.defaults import get_cfg

    settings = get_cfg().MODEL.BACKBONE
    assert backbone_options("quiltnet", settings) == backbone_options("clip", settings) == {"activation": "auto"}
    assert backbone_options("medclip", settings) == {"padding": "own", "clamp_logit_scale": True}
    assert backbone_options("biomedclip", settings) == {"double_embedding": False}
    assert backbone_options("plip", settings) == {}
    settings.MEDCLIP_PADDING = "25"
    assert backbone_options("plip", settings) == {}  # not its key
    _assert_one_line_input_error(lambda: backbone_options("medclip", settings), "MEDCLIP_PADDING", "'25'")


@pytest.mark.parametrize("padding", ["own", "reference"])
def test_medclip_coop_prompts_take_the_chosen_padding(standins, backbones, padding):
    """CoOp's prompt learner (16 context tokens) gives what the padding setting's encoding gives."""
    from configs.defaults import get_cfg
    from trainers.coop import PromptCLIP, PromptLearner

    backbone = backbones["medclip"] if padding == "own" else build_backbone(
        "medclip", standins["medclip"], {"MEDCLIP_PADDING": padding})
    cfg = get_cfg()
    torch.manual_seed(0)
    learner = PromptLearner(cfg, MEDCLIP_NAMES, backbone)
    with torch.no_grad():
        learned = PromptCLIP(backbone, learner).class_embeddings()
        embeddings, tokens = _prompt_embeddings(backbone, learner.ctx.detach(), MEDCLIP_NAMES)
        if padding == "own":
            by_hand = _medclip_unpadded(backbone, embeddings, tokens)
        else:
            assert tokens.input_ids.shape[1] == 25
            by_hand = backbone.model.text_model(inputs_embeds=embeddings, attention_mask=tokens.attention_mask)
    assert (learned - F.normalize(by_hand, dim=-1)).abs().max() <= 1e-5
