"""Rebuild the demo Med-FM: a small BiomedCLIP-style model pretrained contrastively on synthetic
histology with captions naming the tissue class and how the slide was acquired.

    python -m scripts.build_demo_model [--output-dir clip_models/demo/model] [--steps N]

Architecture: open_clip ``CustomTextCLIP`` = CLIP's ViT image tower (ViT-B/32-style as in QuiltNet
and PLIP, scaled down) + BiomedCLIP's Hugging Face BERT text tower ([CLS] pooling, MLP projection)
with a small WordPiece vocabulary, and a trained logit scale. The folder written is a plain open_clip
model folder (``open_clip_config.json``, ``open_clip_model.safetensors``, the BERT ``config.json``,
``vocab.txt``), loaded by ``build_backbone("biomedclip", folder)``.

Pretraining data: images of ``datasets.synthetic``'s Kather generator (random streams disjoint from
the ones ``generate`` uses), each with random acquisition conditions that its caption names, as real
image-text pairs often do: stain strength, focus, sensor grain, and marks on the slide (pen strokes,
handwritten-like text labels, stickers). A real Med-FM's features carry much more than the classes
of one downstream task; these conditions give the demo model's features such directions too.
"""
import itertools
import json
import math
import os
import os.path as osp
import string
import time
from dataclasses import asdict, dataclass

import numpy as np

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS, read when CUDA starts
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from clip_models.demo import MODEL_DIR as DEFAULT_OUT  # noqa: E402
from common import cli  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Recipe:
    """Everything that decides the weights (with the torch version and the machine's arithmetic)."""

    # image tower: CLIP ViT
    image_size: int = 224
    patch_size: int = 32
    vision_width: int = 160
    vision_layers: int = 4
    vision_head_width: int = 40
    # text tower: BERT
    text_width: int = 128
    text_layers: int = 2
    context_length: int = 77
    embed_dim: int = 64
    # pretraining
    images_per_class: int = 150
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_crop_scale: float = 0.35
    acquisition: bool = True  # random acquisition conditions, named in the captions
    scale_lr_factor: float = 10.0  # the logit scale learns this much faster than the weights
    seed: int = 0


CAPTION_TEMPLATES = (
    "{}",
    "a histopathology image of {}",
    "h&e stained section showing {}",
    "a microscopy patch of {} from a colon slide",
    "colon tissue: {}",
    "this slide region is {}",
)
# Acquisition conditions: (caption phrase, probability); "" is the plain condition.
STAIN = (("", 0.6), ("faintly stained", 0.2), ("darkly stained", 0.2))
FOCUS = (("", 0.75), ("blurry", 0.25))
GRAIN = (("", 0.65), ("grainy", 0.35))
MARK = (("", 0.64), ("with a pen mark", 0.12), ("with a text label", 0.12), ("with a sticker", 0.12))
CONDITIONS = (STAIN, FOCUS, GRAIN, MARK)
STAIN_POWER = {"": 1.0, "faintly stained": 0.55, "darkly stained": 1.6}  # optical density scale
BLUR_SIGMAS = (1.0, 1.6, 2.4)  # pixels
MARK_SIZE = 72  # pixels: the side of a pen mark's canvas
MIN_IMAGE_SIZE = 128  # pixels: every slide mark fits (the widest text labels reach 120)


def kather_classes():
    from datasets.kather import Kather

    return [Kather.classes[folder] for folder in sorted(Kather.classes)]


def caption(template, class_name, condition):
    phrases = [phrase for phrase in condition if phrase]
    return template.format(class_name) + "".join(", " + p for p in phrases) + "."


def vocabulary():
    """WordPiece vocabulary: BERT's specials, single characters (so any text tokenizes), and the whole
    words of every dataset's class names and prompt templates and of the captions."""
    from datasets.synthetic import folder_datasets

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    characters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:!?'\"()-/%+&")
    texts = list(CAPTION_TEMPLATES) + ["a photo of a {}."]
    texts += [phrase for condition in CONDITIONS for phrase, _ in condition]
    for dataset in folder_datasets().values():
        texts.append(dataset.prompt_template)
        texts.extend(dataset.classes.values())
    words = set()
    for text in texts:
        for word in text.lower().replace("{}", " ").replace("&", " & ").split():
            word = word.strip(".,:;!?'\"()")
            if len(word) > 1 and word.isalpha():
                words.add(word)
    return specials + characters + ["##" + c for c in characters] + sorted(words)


def bert_config(recipe, vocab_size):
    return {"model_type": "bert", "architectures": ["BertModel"], "vocab_size": vocab_size,
            "hidden_size": recipe.text_width, "num_hidden_layers": recipe.text_layers,
            "num_attention_heads": max(1, recipe.text_width // 64), "intermediate_size": 4 * recipe.text_width,
            "hidden_act": "gelu", "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
            "max_position_embeddings": recipe.context_length, "type_vocab_size": 2, "pad_token_id": 0,
            "layer_norm_eps": 1e-12}


def open_clip_config(recipe, text_tower):
    """open_clip's ``model_cfg``; ``text_tower`` is where the BERT config lives ("." = this folder)."""
    return {
        "embed_dim": recipe.embed_dim,
        "vision_cfg": {"image_size": recipe.image_size, "patch_size": recipe.patch_size,
                       "width": recipe.vision_width, "layers": recipe.vision_layers,
                       "head_width": recipe.vision_head_width},
        "text_cfg": {"hf_model_name": text_tower, "hf_tokenizer_name": text_tower, "hf_proj_type": "mlp",
                     "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": recipe.context_length},
    }


def _write_json(path, data):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.write("\n")


def write_config_files(folder, recipe):
    """Everything but the weights: open_clip's config, BERT's config and the tokenizer's files."""
    _write_json(osp.join(folder, "open_clip_config.json"),
                {"model_cfg": open_clip_config(recipe, "."),
                 "preprocess_cfg": {"mean": list(CLIP_MEAN), "std": list(CLIP_STD)},
                 "recipe": asdict(recipe)})
    vocab = vocabulary()
    with open(osp.join(folder, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(vocab) + "\n")
    _write_json(osp.join(folder, "config.json"), bert_config(recipe, len(vocab)))
    _write_json(osp.join(folder, "tokenizer_config.json"),
                {"tokenizer_class": "BertTokenizer", "do_lower_case": True,
                 "model_max_length": recipe.context_length})


# ---- pretraining images ---------------------------------------------------------------------------
def render_pool(recipe, num_classes):
    """[N, 3, S, S] uint8 images and [N] labels: ``images_per_class`` synthetic Kather-like images per
    class, from random streams disjoint from ``datasets.synthetic.generate``'s (which use 4 seeds)."""
    from datasets.synthetic import render_histology

    images, labels = [], []
    for label in range(num_classes):
        for index in range(recipe.images_per_class):
            rng = np.random.default_rng([recipe.seed, label, index])
            picture = np.asarray(render_histology(rng, label, num_classes, recipe.image_size))
            images.append(torch.from_numpy(picture.copy()).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def mark_stamps(rng, count, kind):
    """``count`` RGBA stamps ([4, h, w] float tensors) of one kind of slide mark."""
    from PIL import Image, ImageDraw, ImageFont

    inks = [(20, 110, 40), (30, 50, 160), (20, 20, 20), (240, 240, 240)]
    stamps = []
    for _ in range(count):
        ink = inks[rng.integers(len(inks))] + (255,)
        if kind == "with a text label":
            letters = "".join(rng.choice(list(string.ascii_letters + string.digits), size=rng.integers(2, 5)))
            font = ImageFont.load_default(size=int(rng.integers(14, 32)))
            left, top, right, bottom = font.getbbox(letters)
            canvas = Image.new("RGBA", (right - left, bottom - top), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((-left, -top), letters, font=font, fill=ink)
        elif kind == "with a pen mark":
            canvas = Image.new("RGBA", (MARK_SIZE, MARK_SIZE), (0, 0, 0, 0))
            points = [tuple(p) for p in rng.uniform(6, MARK_SIZE - 6, size=(int(rng.integers(2, 5)), 2))]
            ImageDraw.Draw(canvas).line(points, fill=ink, width=int(rng.integers(3, 8)), joint="curve")
        else:  # a sticker: a plain coloured rectangle
            colour = tuple(int(c) for c in rng.integers(0, 256, size=3)) + (255,)
            canvas = Image.new("RGBA", tuple(int(s) for s in rng.integers(12, 36, size=2)), colour)
        stamps.append(torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1))
    return stamps


def augment(images, generator, min_scale):
    """Random resized crops (area min_scale..1, aspect 3/4..4/3) and horizontal flips, batched."""
    from torchvision.ops import roi_align

    n, _, size, _ = images.shape
    area = torch.empty(n).uniform_(min_scale, 1.0, generator=generator)
    log_ratio = torch.empty(n).uniform_(math.log(3 / 4), math.log(4 / 3), generator=generator)
    w = (area * log_ratio.exp()).sqrt().clamp(max=1.0) * size
    h = (area / log_ratio.exp()).sqrt().clamp(max=1.0) * size
    x0 = torch.rand(n, generator=generator) * (size - w)
    y0 = torch.rand(n, generator=generator) * (size - h)
    boxes = torch.stack([torch.arange(n, dtype=torch.float32), x0, y0, x0 + w, y0 + h], dim=1)
    out = roi_align(images, boxes.to(images.device), output_size=size, aligned=True)
    flip = torch.rand(n, generator=generator) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


class Acquisition:
    """Draws acquisition conditions and applies them to a batch of [0, 1] images."""

    def __init__(self, seed, stamps_per_kind=48):
        rng = np.random.default_rng([seed, 1])
        self.stamps = {kind: mark_stamps(rng, stamps_per_kind, kind) for kind, _ in MARK if kind}

    @staticmethod
    def draw(n, generator):
        """[n] tuples of phrases, one per condition."""
        drawn = []
        for condition in CONDITIONS:
            probabilities = torch.tensor([p for _, p in condition])
            drawn.append([condition[i][0] for i in torch.multinomial(probabilities, n, True, generator=generator)])
        return list(zip(*drawn))

    def apply(self, images, conditions, generator):
        """The conditions' effects, in the order light meets them: stain, focus, marks on the glass, grain."""
        from torchvision.transforms.v2.functional import gaussian_blur

        stain, focus, grain, mark = (list(column) for column in zip(*conditions))
        n, _, size, _ = images.shape
        power = torch.tensor([STAIN_POWER[s] for s in stain], device=images.device).view(n, 1, 1, 1)
        out = images.clamp(1 / 255, 1).pow(power)
        blurred = torch.tensor([bool(f) for f in focus])
        for sigma, rows in zip(BLUR_SIGMAS, torch.randint(len(BLUR_SIGMAS), (n,), generator=generator)
                               .eq(torch.arange(len(BLUR_SIGMAS))[:, None])):
            rows = (rows & blurred).to(images.device)
            if rows.any():
                out[rows] = gaussian_blur(out[rows], kernel_size=2 * math.ceil(3 * sigma) + 1, sigma=sigma)
        for i, kind in enumerate(mark):
            if not kind:
                continue
            stamps = self.stamps[kind]
            stamp = stamps[int(torch.randint(len(stamps), (1,), generator=generator))].to(images.device)
            _, h, w = stamp.shape
            top = int(torch.randint(size - h + 1, (1,), generator=generator))
            left = int(torch.randint(size - w + 1, (1,), generator=generator))
            alpha = stamp[3:]
            region = out[i, :, top:top + h, left:left + w]
            out[i, :, top:top + h, left:left + w] = region * (1 - alpha) + stamp[:3] * alpha
        grainy = torch.tensor([bool(g) for g in grain])
        if grainy.any():
            rows = grainy.to(images.device)
            sigma = torch.empty(int(grainy.sum())).uniform_(4 / 255, 14 / 255, generator=generator)
            noise = torch.randn((len(sigma),) + out.shape[1:], generator=generator) * sigma.view(-1, 1, 1, 1)
            out[rows] = out[rows] + noise.to(images.device)
        return out.clamp(0, 1)


# ---- model and training ---------------------------------------------------------------------------
def build_model(recipe, folder):
    import open_clip

    cfg = open_clip_config(recipe, folder)
    cfg["text_cfg"]["hf_model_pretrained"] = False
    return open_clip.CustomTextCLIP(**cfg)


def meanings(num_classes):
    """Every (class, stain, focus, grain, mark) a caption can say."""
    return list(itertools.product(range(num_classes), *[[phrase for phrase, _ in c] for c in CONDITIONS]))


def pretrain(recipe, folder, device="cpu", log=print):
    """Contrastive pretraining. Each step captions every possible meaning (class and conditions) with a
    random template; each image is contrasted with all of them (image to text), and each meaning present
    in the batch with the batch's images, all images of that meaning being positives (text to image)."""
    import open_clip

    classes = kather_classes()
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(recipe.seed)
    model = build_model(recipe, folder).to(device)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    acquisition = Acquisition(recipe.seed)
    t0 = time.time()
    pool, pool_labels = render_pool(recipe, len(classes))
    log(f"rendered {len(pool)} images in {time.time() - t0:.0f} s")
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
    plain_prompts = tokenizer([f"an H&E image patch of {name}." for name in classes]).to(device)
    bank = meanings(len(classes)) if recipe.acquisition else [(y,) + ("",) * len(CONDITIONS) for y in range(len(classes))]
    bank_index = {meaning: i for i, meaning in enumerate(bank)}

    scale = [model.logit_scale]
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 and n != "logit_scale"]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0},
                                   {"params": scale, "weight_decay": 0.0, "lr": recipe.lr * recipe.scale_lr_factor}],
                                  lr=recipe.lr, betas=(0.9, 0.98))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / recipe.warmup_steps)
        * 0.5 * (1 + math.cos(math.pi * min(step / recipe.steps, 1.0))))
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    t0 = time.time()
    for step in range(recipe.steps):
        index = torch.randint(len(pool), (recipe.batch_size,), generator=generator)
        labels = pool_labels[index]
        images = augment(pool[index].to(device).float() / 255.0, generator, recipe.min_crop_scale)
        if recipe.acquisition:
            conditions = Acquisition.draw(recipe.batch_size, generator)
            images = acquisition.apply(images, conditions, generator)
        else:
            conditions = [("",) * len(CONDITIONS)] * recipe.batch_size
        targets = torch.tensor([bank_index[(int(y),) + tuple(c)] for y, c in zip(labels, conditions)], device=device)
        templates = torch.randint(len(CAPTION_TEMPLATES), (len(bank),), generator=generator)
        texts = [caption(CAPTION_TEMPLATES[t], classes[m[0]], m[1:]) for t, m in zip(templates, bank)]
        tokens = tokenizer(texts)
        tokens = tokens[:, :int((tokens != 0).sum(1).max())]  # no all-padding columns: same features, less work

        image_features = F.normalize(model.encode_image((images - mean) / std), dim=-1)
        text_features = F.normalize(model.encode_text(tokens.to(device)), dim=-1)
        logits = model.logit_scale.exp() * image_features @ text_features.t()  # [batch, bank]
        present = targets.unique()
        positives = (targets[None, :] == present[:, None]).float()
        loss = (F.cross_entropy(logits, targets)
                + F.cross_entropy(logits.t()[present], positives / positives.sum(1, keepdim=True))) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == recipe.steps - 1:
            with torch.no_grad():
                class_features = F.normalize(model.encode_text(plain_prompts), dim=-1)
                accuracy = ((image_features @ class_features.t()).argmax(1).cpu() == labels).float().mean()
                predicted = [bank[i] for i in logits.argmax(1).tolist()]
                truth = [bank[i] for i in targets.tolist()]
                per_part = [sum(p[k] == t[k] for p, t in zip(predicted, truth)) / len(truth) for k in range(5)]
            log(f"step {step}/{recipe.steps} loss {loss.item():.3f} scale {model.logit_scale.exp().item():.1f} "
                f"zero-shot batch accuracy {accuracy.item():.2f}, caption parts right "
                f"{' '.join(f'{a:.2f}' for a in per_part)} ({time.time() - t0:.0f} s)")
    return model.eval().cpu()


def save_weights(model, folder, dtype=torch.float16):
    from safetensors.torch import save_file

    state = {k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    save_file(state, osp.join(folder, "open_clip_model.safetensors"))


def main(argv=None):
    parser = cli.parser("python -m scripts.build_demo_model", __doc__.split("\n\n")[0])
    cli.add_output_dir(parser, default=DEFAULT_OUT, help="model folder to write (default: the shipped one)")
    parser.add_argument("--device", default="cpu")
    for field, value in asdict(Recipe()).items():
        kind = (lambda s: s.lower() in ("1", "true", "yes")) if isinstance(value, bool) else type(value)
        parser.add_argument("--" + field.replace("_", "-"), type=kind, default=value)
    args = parser.parse_args(argv)
    recipe = Recipe(**{k: getattr(args, k) for k in asdict(Recipe())})
    if recipe.acquisition and recipe.image_size < MIN_IMAGE_SIZE:
        parser.error(f"--image-size {recipe.image_size} is too small for the slide marks; give at least "
                     f"{MIN_IMAGE_SIZE} or --acquisition false")
    os.makedirs(args.output_dir, exist_ok=True)
    write_config_files(args.output_dir, recipe)
    model = pretrain(recipe, osp.abspath(args.output_dir), args.device)
    save_weights(model, args.output_dir)
    print(f"wrote {args.output_dir}")



run = cli.command(main)  # the console command (setup.py)


if __name__ == "__main__":
    cli.exit_with(main)
