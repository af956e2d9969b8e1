"""Tiny, randomly initialised stand-ins of every backbone, written where the real loading code looks.

Each stand-in is the real model's architecture (the same classes and configuration fields, with small
widths and depths) saved in the real release's format: hub repos under the real hub ids in a hub-cache
layout (``models--ORG--NAME/refs/main`` + ``snapshots/REV/``), and a MedCLIP folder with a
``pytorch_model.bin`` in the released (transformers 4) key format. With ``HF_HUB_OFFLINE=1`` and
``HF_HUB_CACHE=DIR`` set before transformers / open_clip are imported, ``build_backbone(name,
standins[name])`` loads them through the same calls that load the real weights.

    python -m clip_models.standins --cache DIR [--full-size] [--only biomedclip quiltnet]

``full_size=True`` writes the real widths and depths instead (ViT-B/32 and its 12-layer text tower,
ViT-B/16 + BERT-base, Swin-T + BERT-base): random weights of the real models' cost, for benchmarks
(hundreds of MB per model). Only the BERT vocabulary stays the small stand-in one, so class names may
split into more tokens than under the real vocabularies.

Tokenizers build offline: the CLIP BPE vocabulary from open_clip's bundled merges, and a small
WordPiece vocabulary for the BERT towers. Everything is seeded, so two runs write the same files.
"""
import gzip
import hashlib
import json
import os

import torch

from common import cli

from .registry import BACKBONE_REGISTRY, backbone_class

# The BERT tower BiomedCLIP's open_clip_config.json names.
BIOMEDCLIP_BERT_ID = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
CLIP_VOCAB_SIZE = 49408  # the CLIP tokenizer emits ids up to 49407, so the stand-in keeps the full table
WORDPIECE_WORDS = (
    "a an and of the with in on at is are this photo image picture scan slide ray chest lung lungs opacity "
    "normal not no pneumonia covid tissue tumor tumour cancer benign malignant colon colorectal adenocarcinoma "
    "epithelium adipose background debris lymphocytes mucus smooth muscle mucosa stroma associated "
    "atelectasis cardiomegaly consolidation edema pleural effusion histopathology microscopy"
).split()


def _clip_preprocess():
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    return {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD)}


def write_hub_repo(cache_dir, repo_id, write_files):
    """Creates ``repo_id``'s snapshot in a hub-cache layout; ``write_files(folder)`` fills it."""
    revision = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = os.path.join(cache_dir, "models--" + repo_id.replace("/", "--"))
    snapshot = os.path.join(repo, "snapshots", revision)
    os.makedirs(snapshot, exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    write_files(snapshot)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(revision)
    return snapshot


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)


def _save_safetensors(model, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)


def clip_bpe_files():
    """(vocab, merges) of OpenAI's CLIP tokenizer, rebuilt from open_clip's bundled BPE merges file the
    way open_clip's SimpleTokenizer builds them."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    # 512 byte symbols (plain and word-final) + 48894 merges + 2 special tokens = CLIP_VOCAB_SIZE.
    merges = gzip.open(default_bpe()).read().decode("utf-8").split("\n")[1:CLIP_VOCAB_SIZE - 512 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == CLIP_VOCAB_SIZE
    return {token: i for i, token in enumerate(tokens)}, merges


def wordpiece_vocab():
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:!?'\"()-/%+&")
    return specials + characters + ["##" + c for c in characters] + sorted(set(WORDPIECE_WORDS))


# Sizes of ViT-B/32 with its 12-layer text tower (the real CLIP and QuiltNet), and of the tiny stand-in
# (a 2-layer ViT, patch 32, 224 input, and a 2-layer text transformer; head_width lets width 32 have heads).
VIT_B32_SIZES = {"embed_dim": 512, "vision": {"layers": 12, "width": 768}, "text": {"width": 512, "heads": 8,
                                                                                    "layers": 12}}
TINY_CLIP_SIZES = {"embed_dim": 16, "vision": {"layers": 2, "width": 32, "head_width": 16},
                   "text": {"width": 8, "heads": 2, "layers": 2}}


def open_clip_clip_config(full_size, quick_gelu):
    """``open_clip_config.json`` of an open_clip CLIP with an OpenAI-style text tower, laid out as the
    real hub configs are: QuiltNet's (``wisdomik/QuiltNet-B-32``) has no ``quick_gelu`` key (open_clip
    then builds GELU), OpenAI CLIP's sets ``quick_gelu: true``."""
    sizes = VIT_B32_SIZES if full_size else TINY_CLIP_SIZES
    model_cfg = {"embed_dim": sizes["embed_dim"]}
    if quick_gelu:
        model_cfg["quick_gelu"] = True
    model_cfg["vision_cfg"] = {"image_size": 224, **sizes["vision"], "patch_size": 32}
    model_cfg["text_cfg"] = {"context_length": 77, "vocab_size": CLIP_VOCAB_SIZE, **sizes["text"]}
    return {"model_cfg": model_cfg, "preprocess_cfg": _clip_preprocess()}


def write_open_clip_clip(cache_dir, repo_id, seed, full_size, quick_gelu):
    """An open_clip CLIP with an OpenAI-style text tower (CLIP ViT-B/32, QuiltNet)."""
    import open_clip

    config = open_clip_clip_config(full_size, quick_gelu)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**config["model_cfg"])
    return _write_open_clip_repo(cache_dir, repo_id, config["model_cfg"], model)


def _write_open_clip_repo(cache_dir, repo_id, model_cfg, model):
    """A hub repo in open_clip's format: ``open_clip_config.json`` and the weights. Returns ``repo_id``."""
    def write(folder):
        _write_json(os.path.join(folder, "open_clip_config.json"),
                    {"model_cfg": model_cfg, "preprocess_cfg": _clip_preprocess()})
        _save_safetensors(model, os.path.join(folder, "open_clip_model.safetensors"))

    write_hub_repo(cache_dir, repo_id, write)
    return repo_id


def _write_bert_repo(cache_dir, repo_id, config, tokenizer_config=None):
    def write(folder):
        _write_json(os.path.join(folder, "config.json"), config)
        with open(os.path.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("\n".join(wordpiece_vocab()) + "\n")
        if tokenizer_config is not None:
            _write_json(os.path.join(folder, "tokenizer_config.json"), tokenizer_config)

    return write_hub_repo(cache_dir, repo_id, write)


def _bert_config(layers, full_size_vocab=None):
    """A tiny BERT with ``layers`` layers, or BERT-base with a ``full_size_vocab``-row embedding table."""
    if full_size_vocab:
        size = {"vocab_size": full_size_vocab, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                "intermediate_size": 3072}
    else:
        size = {"vocab_size": len(wordpiece_vocab()), "hidden_size": 32, "num_hidden_layers": layers,
                "num_attention_heads": 2, "intermediate_size": 64}
    return {**size, "max_position_embeddings": 512, "type_vocab_size": 2, "pad_token_id": 0}


def write_biomedclip(cache_dir, repo_id, seed, full_size):
    """open_clip CustomTextCLIP: timm ViT (ViT-B/16, or timm's smallest test ViT, patch 16) + HF BERT tower."""
    import open_clip

    bert = _bert_config(2, full_size_vocab=30522 if full_size else None)  # PubMedBERT's vocabulary size
    bert_folder = _write_bert_repo(cache_dir, BIOMEDCLIP_BERT_ID, {"model_type": "bert", **bert},
                                   {"do_lower_case": True, "model_max_length": 512})
    model_cfg = {
        "embed_dim": 512 if full_size else 16,
        "vision_cfg": {"timm_model_name": "vit_base_patch16_224" if full_size else "test_vit",
                       "timm_model_pretrained": False, "timm_pool": "", "timm_proj": "linear", "image_size": 224},
        "text_cfg": {"hf_model_name": BIOMEDCLIP_BERT_ID, "hf_tokenizer_name": BIOMEDCLIP_BERT_ID,
                     "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                     "context_length": 256},
    }
    # Built from the tower folder just written: this process's hub cache may be elsewhere.
    build_cfg = json.loads(json.dumps(model_cfg))
    build_cfg["text_cfg"].update(hf_model_name=bert_folder, hf_model_pretrained=False)
    torch.manual_seed(seed)
    model = open_clip.CustomTextCLIP(**build_cfg)

    return _write_open_clip_repo(cache_dir, repo_id, model_cfg, model)


def write_plip(cache_dir, repo_id, seed, full_size):
    """transformers CLIPModel with CLIP's BPE tokenizer files."""
    from transformers import CLIPConfig, CLIPModel

    if full_size:  # transformers' CLIPConfig defaults are CLIP ViT-B/32's sizes
        text_size, vision_size, projection_dim = {}, {}, 512
    else:
        text_size = {"hidden_size": 8, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
        vision_size = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2}
        projection_dim = 16
    config = CLIPConfig(
        text_config={"vocab_size": CLIP_VOCAB_SIZE, "max_position_embeddings": 77, "bos_token_id": 0,
                     "eos_token_id": 2, "pad_token_id": 1, **text_size},
        vision_config={"image_size": 224, "patch_size": 32, **vision_size},
        projection_dim=projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    vocab, merges = clip_bpe_files()

    def write(folder):
        model.save_pretrained(folder)
        _write_json(os.path.join(folder, "vocab.json"), vocab)
        with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
        _write_json(os.path.join(folder, "tokenizer_config.json"), {
            "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>", "model_max_length": 77, "do_lower_case": True})

    write_hub_repo(cache_dir, repo_id, write)
    return repo_id


def write_medclip(cache_dir, seed, full_size):
    """The two tower repos (configs, BERT vocabulary) and a released-format MedCLIP-ViT folder."""
    from transformers import BertConfig, SwinConfig

    from .medclip import BERT_ID, CHECKPOINT_NAME, SWIN_ID, MedCLIPModel

    if full_size:  # swin-tiny-patch4-window7-224
        swin_size = {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]}
    else:
        swin_size = {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}
    swin = {"model_type": "swin", "image_size": 224, "patch_size": 4, "num_channels": 3, "window_size": 7,
            **swin_size}
    write_hub_repo(cache_dir, SWIN_ID, lambda folder: _write_json(os.path.join(folder, "config.json"), swin))
    # Bio_ClinicalBERT ships config.json and vocab.txt only; three layers keep hidden states 1, 2 and
    # the last apart.
    bert = _bert_config(3, full_size_vocab=28996 if full_size else None)  # Bio_ClinicalBERT's vocabulary size
    _write_bert_repo(cache_dir, BERT_ID, bert)
    torch.manual_seed(seed)
    model = MedCLIPModel(SwinConfig(**swin), BertConfig(**bert))
    folder = os.path.join(cache_dir, "medclip-vit")
    os.makedirs(folder, exist_ok=True)
    torch.save(model.released_state_dict(), os.path.join(folder, CHECKPOINT_NAME))
    return folder


def standin_names():
    """Every registered backbone, in registration order: each has a stand-in (``write_standin``)."""
    return BACKBONE_REGISTRY.registered_names()


def write_standins(cache_dir, full_size=False, names=None):
    """Writes the stand-ins of ``names`` (default: every registered backbone; tiny, or at the real sizes)
    under ``cache_dir``; returns {backbone name: MODEL.BACKBONE.WEIGHTS value}: the hub id, or for
    MedCLIP its released-format folder."""
    names = standin_names() if names is None else list(names)
    unknown = sorted(set(names) - set(standin_names()))
    if unknown:
        raise ValueError(f"no stand-in for {', '.join(unknown)}; choose from {', '.join(standin_names())}")
    cache_dir = os.path.abspath(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    return {name: backbone_class(name).write_standin(cache_dir, full_size=full_size) for name in names}


def main(argv=None):
    parser = cli.parser("python -m clip_models.standins", __doc__.split("\n\n")[0])
    parser.add_argument("--cache", required=True, help="hub-cache folder to write (use it as HF_HUB_CACHE)")
    parser.add_argument("--full-size", action="store_true", help="the real models' sizes (random weights)")
    parser.add_argument("--only", nargs="+", choices=standin_names(), default=None, help="these backbones")
    args = parser.parse_args(argv)
    for name, weights in write_standins(args.cache, args.full_size, args.only).items():
        print(f"{name}: MODEL.BACKBONE.WEIGHTS={weights}")
    print(f"load them with HF_HUB_OFFLINE=1 HF_HUB_CACHE={os.path.abspath(args.cache)}")



run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
