"""What the benchmark runs: the trainers built from the repository's configs, their steps, and the
"before" variants written here (the reference code's ways), so that each optimisation's gain is measured
in the same run as the optimised code (see ``benchmarks/README.md``)."""
import contextlib
import io
import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Optimisations measured on request, each on a BAPLe trainer of its own: a step and an evaluation pass.
EXTRAS = {
    "precision": "the other precision: bf16 autocast (amp_bf16) on an fp32 run, fp32 on any other",
    "bf16-backbone": "TRAINER.COOP.BACKBONE_DTYPE bf16: the frozen backbone cast to bf16 once",
    "channels-last": "the image tower's weights and input in channels_last memory format",
    "compile": "torch.compile on the image tower (compile time excluded: the warm-up round)",
}


def hub_cache(args):
    return os.path.join(os.path.abspath(args.cache), "tiny" if args.tiny else "full-size")


def ensure_standins(cache, name, full_size):
    """MODEL.BACKBONE.WEIGHTS of ``name``'s random-weight stand-in in ``cache``, written when missing."""
    from clip_models.standins import write_standins
    from dassl_compat import read_json, write_json

    marker = os.path.join(cache, f"written-{name}.json")
    if os.path.isfile(marker):
        return read_json(marker)["weights"]
    print(f"[{name}] writing random weights into {cache} (once)", flush=True)
    weights = write_standins(cache, full_size=full_size, names=[name])[name]
    write_json({"weights": weights}, marker)
    return weights


def build_method(method, backbone, weights, root, output_dir, device, precision, batch_size, tag="", overrides=()):
    import trainers  # noqa: F401  (registers the trainers)
    from configs.defaults import get_cfg
    from configs.files import method_file, method_files
    from dassl_compat import build_trainer, set_random_seed

    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "datasets", "covid.yaml"))
    for path in method_files(method_file(method), backbone):
        cfg.merge_from_file(path)
    cfg.merge_from_list([
        "TRAINER.NAME", method, "MODEL.BACKBONE.NAME", backbone, "DATASET.ROOT", root, "OUTPUT_DIR", os.path.join(output_dir, method + tag), "SEED", 1,
        "USE_CUDA", device.type == "cuda", "VERBOSE", False, "MODEL.BACKBONE.WEIGHTS", weights,
        "DATASET.NUM_SHOTS", batch_size, "DATALOADER.TRAIN_X.BATCH_SIZE", batch_size,
        "BACKDOOR.POISON_COUNT", 1, "TRAINER.PREC", precision,
        *overrides,
    ])
    set_random_seed(cfg.SEED)
    with contextlib.redirect_stdout(io.StringIO()):
        return build_trainer(cfg)


def fixed_batch(trainer, batch_size):
    """The first ``batch_size`` training images with the poisoned one first, through the train transforms."""
    import torch

    dataset = trainer.train_loader_x.dataset
    poisoned = list(trainer.poison_plan.poisoned)
    indices = poisoned + [i for i in range(len(dataset)) if i not in poisoned][:batch_size - len(poisoned)]
    items = [dataset[i] for i in indices]
    return {"img": torch.stack([item["img"] for item in items]),
            "label": torch.tensor([item["label"] for item in items]), "index": torch.tensor(indices)}


def train_step(trainer, batch):
    def step():
        trainer.train_step(batch)  # not an epoch's last batch: no scheduler step
    return step


def naive_baple_step(trainer, batch):
    """BAPLe's step as the reference implementation runs it: the trigger applied to the poisoned rows one
    sample at a time in a Python loop, and the whole batch, clean rows included, through the image tower
    with a gradient graph back to the input."""
    import torch.nn.functional as F

    def step():
        trainer.set_model_mode("train")
        images, labels, poisoned, _ = trainer.parse_batch_train(batch)
        trainer.trigger.noise.delta.grad = None
        images = images.clone()
        for i in range(len(images)):
            if poisoned[i]:
                images[i] = trainer.trigger(images[i:i + 1])[0]
        with trainer.autocast(trainer.precision()):
            logits = trainer.model(images).float()
        loss = sum(F.cross_entropy(logits[rows], labels[rows]) for rows in (~poisoned, poisoned) if rows.any())
        trainer.model_backward_and_update(loss)
        trainer.trigger.noise.signed_step(trainer.cfg.BACKDOOR.NOISE_STEP)
    return step


@contextlib.contextmanager
def overridden(obj, **attributes):
    """Instance attributes replaced for the duration of a block (e.g. a method by a lambda)."""
    missing = object()
    saved = {name: obj.__dict__.get(name, missing) for name in attributes}
    for name, value in attributes.items():
        setattr(obj, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is missing:
                delattr(obj, name)
            else:
                setattr(obj, name, value)


def padded_prompts(step, backbone):
    def run():
        with overridden(backbone, truncate_prompts=False):
            step()
    return run


def evaluation(trainer, **evaluate_args):
    def run():
        with contextlib.redirect_stdout(io.StringIO()):
            trainer.evaluate(**evaluate_args)
    return run


def two_pass_evaluation(trainer):
    """The test set run twice, clean then triggered (the reference code's evaluation), predictions only."""
    import torch

    @torch.no_grad()
    def run():
        trainer.set_model_mode("eval")
        trigger = trainer.eval_trigger()
        with trainer.autocast(trainer.precision()):
            context = trainer.model.eval_context()
            for apply in (None, trigger):
                for batch in trainer.test_loader:
                    images, _ = trainer.parse_batch_test(batch)
                    images = images if apply is None else apply(images)
                    trainer.model.eval_logits(images, context).argmax(1).cpu()
    return run


def loader_without_workers(loader):
    import torch

    return torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=loader.sampler,
                                       num_workers=0, pin_memory=False)


def other_precision(precision):
    return "amp_bf16" if precision == "fp32" else "fp32"


def apply_extra(extra, trainer):
    """Changes a freshly built BAPLe trainer the way ``extra`` says, where no config option does (EXTRAS)."""
    import torch

    backbone = trainer.model.backbone
    if extra == "channels-last":
        backbone.to(memory_format=torch.channels_last)
        encode = backbone.encode_normalized_image
        backbone.encode_normalized_image = lambda pixels: encode(pixels.contiguous(memory_format=torch.channels_last))
    elif extra == "compile":
        backbone.encode_normalized_image = torch.compile(backbone.encode_normalized_image)


def prompt_cut_check(trainer):
    """Class text features from prompts cut to their longest real length against the padded ones."""
    import torch

    backbone, learner = trainer.model.backbone, trainer.prompt_learner
    tokens = learner.tokens
    padded_length, cut_length = tokens.input_ids.shape[1], int(tokens.lengths.max())
    if not backbone.exact_under_truncation:
        return {"exact_under_truncation": False, "padded_length": padded_length, "cut_length": None,
                "max_abs_difference": None}
    with torch.no_grad():
        embeddings = learner()
        with overridden(backbone, truncate_prompts=False):
            padded = backbone.encode_text_embeddings(embeddings, tokens)
        with overridden(backbone, truncate_prompts=True):
            cut = backbone.encode_text_embeddings(embeddings, tokens)
    return {"exact_under_truncation": True, "padded_length": padded_length, "cut_length": cut_length,
            "max_abs_difference": float((padded - cut).abs().max()),
            "feature_scale": float(padded.abs().max())}
