"""Bad inputs to ``train.py``: each case's command line, expected exit code and message, and the table
of docs/ERRORS.md, generated from these cases so that the two cannot drift apart.

    python tests/reliability/bad_inputs.py --write-doc   # run every case, rewrite the table in docs/ERRORS.md
    python tests/reliability/bad_inputs.py --json FILE   # run every case, write the outcomes (the tests do)

All cases run in one fresh interpreter, one after another, through ``train.run(argv)``: its registries
hold only the project's trainers and datasets, so messages that list choices read as a user sees them.
The interpreter needs offline stand-in weights (``--hf-cache``, written when not given) and a synthetic
Covid dataset (``--data``, generated when not given). Paths in messages are written with placeholders
(``<tmp>``: the case's own folder, ``<root>``: the shared dataset root, ``<hf-cache>``) so the table
does not depend on the machine.
"""
import argparse
import io
import json
import os
import os.path as osp
import pathlib
import re
import shutil
import sys
import tempfile
from contextlib import ExitStack, redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from typing import Callable, Optional
from unittest import mock

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DOC = osp.join(REPO, "docs", "ERRORS.md")
TABLE_START, TABLE_END = "<!-- bad-input table: start -->", "<!-- bad-input table: end -->"

COMMON_FLAGS = ("--root", "{root}", "--trainer", "BAPLe", "--dataset-config-file", "configs/datasets/covid.yaml",
                "--config-file", "configs/trainers/BAPLe.yaml", "--backbone", "clip", "--output-dir", "{tmp}/out", "--seed", "1")
COMMON_OPTS = ("DATASET.NUM_SHOTS", "8", "OPTIM.MAX_EPOCH", "1", "DATALOADER.NUM_WORKERS", "0",
               "DATALOADER.TEST.BATCH_SIZE", "20", "USE_CUDA", "False", "VERBOSE", "False")
COOP = ("--trainer", "CoOp", "--config-file", "configs/trainers/CoOp.yaml")

# Where a case is found: before any model or image is loaded; while the dataset is read (no model
# yet); while or after the model is built.
CONFIG, DATA, MODEL = "before loading", "reading the data", "loading the model"


@dataclass
class Case:
    name: str
    bad_input: str  # what is wrong, in words
    phrase: str  # the message must contain this (after path placeholders)
    opts: tuple = ()  # KEY VALUE overrides, after the common ones
    flags: tuple = ()  # command-line flags, after the common ones
    code: int = 2
    stage: str = CONFIG
    prepare: Optional[Callable] = None  # prepare(ctx): the files or patches the case needs

    def argv(self, ctx):
        return [arg.format(tmp=ctx.tmp, root=ctx.root)
                for arg in COMMON_FLAGS + self.flags + COMMON_OPTS + self.opts]

    def shown(self):
        """The case's own part of the command line, as the table shows it."""
        return " ".join(self.flags + self.opts).replace("{tmp}", "<tmp>").replace("{root}", "<root>")


@dataclass
class Context:
    """What a case's ``prepare`` may change: the dataset root (``own_data`` copies it first), files under
    ``tmp``, and patches undone after the case."""

    tmp: str
    root: str
    stack: ExitStack
    patches: list = field(default_factory=list)

    def own_data(self):
        """A private copy of the dataset to damage; returns its ``covid`` folder."""
        copy = osp.join(self.tmp, "data")
        if not osp.isdir(copy):
            shutil.copytree(self.root, copy, ignore=shutil.ignore_patterns("split_fewshot"))
            self.root = copy
        return osp.join(copy, "covid")

    def patch(self, target, attribute, value):
        self.stack.enter_context(mock.patch.object(target, attribute, value))


# ---- preparations ----------------------------------------------------------------------------------
def _first_image(folder):
    return osp.join(folder, sorted(os.listdir(folder))[0])


def _write(path, data):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _bad_test_image(name, data_of):
    """A preparation that adds ``name`` with ``data_of(a good test image's bytes)`` to test/covid."""
    def prepare(ctx):
        folder = osp.join(ctx.own_data(), "images", "test", "covid")
        good = pathlib.Path(_first_image(folder)).read_bytes()
        _write(osp.join(folder, name), data_of(good))

    return prepare


def _jpeg_bytes():
    import numpy as np
    from PIL import Image

    buffer = io.BytesIO()
    # Noise compresses badly: most of the file is image data, so the cut falls after the headers.
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


def _truncated_jpeg(ctx):
    data = _jpeg_bytes()
    _write(osp.join(ctx.own_data(), "images", "test", "covid", "zz-cut.jpg"), data[:len(data) // 2])


def _remove(relative):
    def prepare(ctx):
        os.remove(osp.join(ctx.own_data(), relative))

    return prepare


def _add_unlisted_class(ctx):
    folder = osp.join(ctx.own_data(), "images", "train", "extra")
    os.makedirs(folder)
    shutil.copy(_first_image(osp.join(ctx.root, "covid", "images", "train", "covid")), folder)


def _empty_class(ctx):
    folder = osp.join(ctx.own_data(), "images", "test", "normal")
    for name in os.listdir(folder):
        os.remove(osp.join(folder, name))


def _unreadable_train_folder(ctx):
    """Permission bits off; as root (where they do not apply) listing it fails as it would for a user."""
    folder = osp.join(ctx.own_data(), "images", "train", "covid")
    os.chmod(folder, 0)
    ctx.stack.callback(os.chmod, folder, 0o755)
    real_scandir = os.scandir

    def scandir(path="."):
        if osp.abspath(path) == folder:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    if os.geteuid() == 0:
        import datasets.folder

        ctx.patch(datasets.folder.os, "scandir", scandir)


def _file_in_place_of_folder(ctx):
    _write(osp.join(ctx.tmp, "file.txt"), b"not a folder")


def _text_file_named_png(ctx):
    _write(osp.join(ctx.tmp, "trigger.png"), b"not an image")


def _reference_context_file(ctx):
    """A context tensor file as the reference code releases them: bare fp16 [16, 512]."""
    import torch

    torch.save(torch.zeros(16, 512, dtype=torch.float16), osp.join(ctx.tmp, "ctx_clip_covid_s1.pt"))


class TouchOnLoad:
    """Unpickling this object would create ``path``: it stands for any code a pickle can run."""

    def __init__(self, path):
        self.path = pathlib.Path(path)

    def __reduce__(self):
        return pathlib.Path.touch, (self.path,)


def write_checkpoint(run_dir, model_name, state):
    """A checkpoint in the project's layout (``<run>/<model>/model.pth.tar-1`` and its pointer)."""
    import torch

    folder = osp.join(run_dir, model_name)
    os.makedirs(folder, exist_ok=True)
    torch.save(state, osp.join(folder, "model.pth.tar-1"))
    pathlib.Path(folder, "checkpoint").write_text("model.pth.tar-1\n")


def _pickled_checkpoint(ctx):
    """An old-style checkpoint: Dassl pickled scheduler objects into its checkpoints."""
    import torch

    write_checkpoint(osp.join(ctx.tmp, "old-run"), "prompt_learner", {
        "state_dict": {"ctx": torch.zeros(4, 8)}, "epoch": 1, "scheduler": TouchOnLoad(osp.join(ctx.tmp, "ran"))})


def _foreign_checkpoint(ctx):
    import torch

    write_checkpoint(osp.join(ctx.tmp, "other-run"), "prompt_learner",
                     {"state_dict": {"classifier.weight": torch.zeros(2, 8)}, "epoch": 1})


def _internal_fault(ctx):
    import dassl_compat

    def build_trainer(cfg):
        raise RuntimeError("injected fault")

    ctx.patch(dassl_compat, "build_trainer", build_trainer)


def _image_vanishes_in_worker(ctx):
    """A training image deleted while the run goes on, found by a DataLoader worker process."""
    import datasets.wrapper

    ctx.own_data()
    load_image = datasets.wrapper.load_image

    def load_after_deleting(path):
        if osp.exists(path):
            os.remove(path)
        return load_image(path)

    ctx.patch(datasets.wrapper, "load_image", load_after_deleting)


CASES = [
    # BAPLe's trigger
    Case("noise-eps-zero", "BAPLe noise budget of zero", "BACKDOOR.NOISE_EPS 0.0 is outside (0, 255]",
         opts=("BACKDOOR.NOISE_EPS", "0")),
    Case("noise-eps-above-255", "BAPLe noise budget above the pixel range", "BACKDOOR.NOISE_EPS 300.0 is outside",
         opts=("BACKDOOR.NOISE_EPS", "300")),
    Case("noise-step-zero", "BAPLe noise step of zero", "BACKDOOR.NOISE_STEP 0.0 must be > 0",
         opts=("BACKDOOR.NOISE_STEP", "0")),
    Case("noise-step-negative", "negative BAPLe noise step", "BACKDOOR.NOISE_STEP -0.01 must be > 0",
         opts=("BACKDOOR.NOISE_STEP", "-0.01")),
    Case("noise-order-unknown", "unknown order of noise and patch", "BACKDOOR.ORDER 'sideways' is unknown",
         opts=("BACKDOOR.ORDER", "sideways")),
    Case("noise-init-unknown", "unknown noise initialisation", "BACKDOOR.NOISE_INIT 'gaussian' is unknown",
         opts=("BACKDOOR.NOISE_INIT", "gaussian")),
    Case("position-unknown", "unknown trigger position", "Unknown BACKDOOR.POSITION 'middle-left'",
         opts=("BACKDOOR.POSITION", "middle-left")),
    Case("patch-type-unknown", "unknown patch type", "Unknown BACKDOOR.PATCH_TYPE 'star'",
         opts=("BACKDOOR.PATCH_TYPE", "star")),
    Case("trigger-larger-than-image", "trigger larger than the image",
         "does not fit a 224x224 image; lower BACKDOOR.TRIGGER_SIZE",  # the text's width in px depends on the font
         opts=("BACKDOOR.TRIGGER_SIZE", "300")),
    Case("trigger-size-zero", "trigger of zero pixels", "BACKDOOR.TRIGGER_SIZE 0 must be a positive number",
         opts=("BACKDOOR.TRIGGER_SIZE", "0")),
    Case("trigger-image-missing", "trigger image file missing",
         "BACKDOOR.PATCH_IMAGE '<tmp>/missing.png': trigger image does not exist",
         opts=("BACKDOOR.PATCH_TYPE", "image-patch", "BACKDOOR.PATCH_IMAGE", "{tmp}/missing.png")),
    Case("trigger-image-unreadable", "trigger image file that is not an image", "trigger image cannot be read",
         opts=("BACKDOOR.PATCH_TYPE", "image-patch", "BACKDOOR.PATCH_IMAGE", "{tmp}/trigger.png"),
         prepare=_text_file_named_png),
    Case("patch-font-missing", "text trigger's font file missing",
         "BACKDOOR.PATCH_FONT '<tmp>/missing.ttf': font file does not exist",
         opts=("BACKDOOR.PATCH_FONT", "{tmp}/missing.ttf")),
    Case("patch-font-unreadable", "text trigger's font file that is not a font", "font file cannot be read",
         opts=("BACKDOOR.PATCH_FONT", "{tmp}/trigger.png"), prepare=_text_file_named_png),
    Case("trigger-stage-unknown", "unknown trigger stage", "BACKDOOR.TRIGGER_STAGE 'early' is unknown",
         opts=("BACKDOOR.TRIGGER_STAGE", "early")),
    Case("baple-init-missing", "BAPLe context initialisation run missing",
         "TRAINER.BAPLE.INIT (--init) <tmp>/no-coop-run does not exist", flags=("--init", "{tmp}/no-coop-run")),
    Case("baple-init-wrong-shape", "BAPLe context tensor file of another shape",
         "TRAINER.BAPLE.INIT (--init) <tmp>/ctx_clip_covid_s1.pt holds a context of shape (16, 512), this run needs "
         "(4, D)", flags=("--init", "{tmp}/ctx_clip_covid_s1.pt"), opts=("TRAINER.COOP.N_CTX", "4"),
         prepare=_reference_context_file),
    # poisoning
    Case("poison-percentage-above-100", "poison percentage above 100",
         "BACKDOOR.POISON_PERCENTAGE 150.0 is outside [0, 100]", opts=("BACKDOOR.POISON_PERCENTAGE", "150")),
    Case("poison-percentage-negative", "negative poison percentage",
         "BACKDOOR.POISON_PERCENTAGE -5.0 is outside [0, 100]", opts=("BACKDOOR.POISON_PERCENTAGE", "-5")),
    Case("poison-count-rounds-to-zero", "poison percentage that rounds to no poisoned image",
         "BACKDOOR.POISON_PERCENTAGE 3.0 of 16 training images rounds to 0", opts=("BACKDOOR.POISON_PERCENTAGE", "3")),
    Case("poison-count-zero", "attack run poisoning no image", "BACKDOOR.POISON_COUNT 0 poisons none",
         opts=("BACKDOOR.POISON_COUNT", "0")),
    Case("poison-count-negative", "negative poison count", "BACKDOOR.POISON_COUNT -2 is not a count",
         opts=("BACKDOOR.POISON_COUNT", "-2")),
    Case("poison-count-above-eligible", "more poisoned images than training images",
         "17 poisoned samples requested but only 16 are eligible", opts=("BACKDOOR.POISON_COUNT", "17")),
    Case("target-class-too-large", "target class outside the dataset's classes",
         "BACKDOOR.TARGET_CLASS 2 is outside the 2 classes of Covid; choose 0..1", opts=("BACKDOOR.TARGET_CLASS", "2")),
    Case("target-class-negative", "negative target class", "BACKDOOR.TARGET_CLASS -1 is negative",
         opts=("BACKDOOR.TARGET_CLASS", "-1")),
    Case("eval-trigger-missing", "evaluation trigger taken from a run that does not exist",
         "BACKDOOR.EVAL_TRIGGER <tmp>/no-run: no results.json", opts=("BACKDOOR.EVAL_TRIGGER", "{tmp}/no-run")),
    # baseline attacks
    Case("attack-unknown", "unknown attack", "Unknown BACKDOOR.ATTACK 'blend'", flags=COOP,
         opts=("BACKDOOR.ATTACK", "blend")),
    Case("badnets-larger-than-image", "BadNets patch larger than the image",
         "BACKDOOR.BADNETS.SIZE: a trigger of 256x256 px does not fit",
         flags=COOP, opts=("BACKDOOR.ATTACK", "badnets", "BACKDOOR.BADNETS.SIZE", "256")),
    Case("badnets-position-unknown", "unknown BadNets position", "Unknown BACKDOOR.BADNETS.POSITION 'left'",
         flags=COOP, opts=("BACKDOOR.ATTACK", "badnets", "BACKDOOR.BADNETS.POSITION", "left")),
    Case("wanet-grid-zero", "WaNet control grid of zero points", "BACKDOOR.WANET.K 0 must be between 1 and",
         flags=COOP, opts=("BACKDOOR.ATTACK", "wanet", "BACKDOOR.WANET.K", "0")),
    Case("fiba-alpha-above-1", "FIBA blend above 1", "BACKDOOR.FIBA.ALPHA 1.5 must be in [0, 1]", flags=COOP,
         opts=("BACKDOOR.ATTACK", "fiba", "BACKDOOR.FIBA.ALPHA", "1.5")),
    Case("fiba-image-missing", "FIBA trigger image file missing",
         "BACKDOOR.FIBA.TRIGGER_IMAGE '<tmp>/missing.png': trigger image does not exist",
         flags=COOP, opts=("BACKDOOR.ATTACK", "fiba", "BACKDOOR.FIBA.TRIGGER_IMAGE", "{tmp}/missing.png")),
    # model and prompts
    Case("backbone-unknown", "unknown backbone", "MODEL.BACKBONE.NAME='resnet50' is not a backbone",
         flags=("--backbone", "resnet50")),
    Case("image-size-mismatch", "image size the backbone does not take",
         "INPUT.SIZE (336, 336) does not match clip's 224x224 input", opts=("INPUT.SIZE", "(336, 336)")),
    Case("precision-unknown", "unknown precision", "TRAINER.PREC 'fp8' is unknown", opts=("TRAINER.PREC", "fp8")),
    Case("precision-old-key", "the precision's old key", "TRAINER.COOP.PREC is now TRAINER.PREC",
         opts=("TRAINER.COOP.PREC", "fp16")),
    Case("profile-unknown", "unknown profile", "Unknown profile 'paper' (--profile); choose from: reference",
         flags=("--profile", "paper")),
    Case("poison-draw-unknown", "unknown poison draw", "BACKDOOR.POISON_DRAW 'binomial' is unknown",
         opts=("BACKDOOR.POISON_DRAW", "binomial")),
    Case("poison-draw-bernoulli-with-count", "an exact poison count under the per-sample draw",
         "BACKDOOR.POISON_COUNT 2 is an exact count", opts=("BACKDOOR.POISON_DRAW", "bernoulli",
                                                           "BACKDOOR.POISON_COUNT", "2")),
    Case("fewshot-sampler-unknown", "unknown few-shot sampler", "DATASET.FEWSHOT_SAMPLER 'coop' is unknown",
         opts=("DATASET.FEWSHOT_SAMPLER", "coop")),
    Case("class-token-position-unknown", "unknown class-token position",
         "TRAINER.COOP.CLASS_TOKEN_POSITION 'start' is unknown", opts=("TRAINER.COOP.CLASS_TOKEN_POSITION", "start")),
    Case("weights-not-downloaded", "weights neither in the hub cache nor reachable (offline)",
         "clip: weights not found: open_clip_config.json of hub repo nobody/not-downloaded",
         opts=("MODEL.BACKBONE.WEIGHTS", "nobody/not-downloaded")),
    Case("medclip-weights-missing", "MedCLIP weights folder missing",
         "medclip: weights not found: <tmp>/medclip-vit; download",
         flags=("--backbone", "medclip"),
         opts=("MODEL.BACKBONE.WEIGHTS", "{tmp}/medclip-vit")),
    Case("weights-path-mistyped", "mistyped local weights path", "'./weights/clip/typo': no such file or folder",
         opts=("MODEL.BACKBONE.WEIGHTS", "./weights/clip/typo")),
    # command line and config files
    Case("trainer-unknown", "unknown trainer", "Unknown trainer 'BAPle' (TRAINER.NAME); choose from",
         flags=("--trainer", "BAPle")),
    Case("dataset-unknown", "unknown dataset", "Unknown dataset 'covid' (DATASET.NAME); choose from",
         opts=("DATASET.NAME", "covid")),
    Case("key-unknown", "unknown config key", "Unknown config key OPTIM.LRR (did you mean LR?)",
         opts=("OPTIM.LRR", "0.1")),
    Case("value-type-wrong", "value of the wrong type", "Bad override OPTIM.MAX_EPOCH ten",
         opts=("OPTIM.MAX_EPOCH", "ten")),
    Case("overrides-odd", "override without a value", "Overrides must be KEY VALUE pairs", opts=("OPTIM.LR",)),
    Case("config-file-missing", "method config file missing",
         "Config file configs/trainers/Nope.yaml does not exist",
         flags=("--config-file", "configs/trainers/Nope.yaml")),
    Case("config-file-per-backbone", "a per-backbone file (or the old layout's path) as the method file",
         "Config file configs/trainers/BAPLe/plip.yaml is not a method file: use --config-file "
         "configs/trainers/BAPLe.yaml --backbone plip",
         flags=("--config-file", "configs/trainers/BAPLe/plip.yaml")),
    Case("key-not-read-attack-with-baple", "BACKDOOR.ATTACK with BAPLe (its trigger is its own)",
         "BACKDOOR.ATTACK 'badnets' is set but trainer BAPLe does not read it", opts=("BACKDOOR.ATTACK", "badnets")),
    Case("key-not-read-baple-init-with-coop", "a BAPLe key with CoOp",
         "TRAINER.BAPLE.INIT '<tmp>' is set but trainer CoOp does not read it", flags=COOP,
         opts=("TRAINER.BAPLE.INIT", "{tmp}")),
    Case("key-not-read-coop-with-finetune", "a CoOp key with FineTune",
         "TRAINER.COOP.N_CTX 4 is set but trainer FineTune does not read it",
         flags=("--trainer", "FineTune", "--config-file", "configs/trainers/FineTune.yaml"),
         opts=("TRAINER.COOP.N_CTX", "4")),
    Case("seed-not-a-number", "seed that is not a number", "argument --seed: invalid int value: 'one'",
         flags=("--seed", "one")),
    Case("output-dir-not-writable", "output folder that cannot be created",
         "OUTPUT_DIR <tmp>/file.txt/run cannot be written (Not a directory)",
         flags=("--output-dir", "{tmp}/file.txt/run"), prepare=_file_in_place_of_folder),
    # dataset layout
    Case("data-root-missing", "dataset root missing", "DATASET.ROOT <tmp>/nowhere does not exist",
         flags=("--root", "{tmp}/nowhere")),
    Case("dataset-folder-missing", "dataset folder missing under the root",
         "<tmp>/covid does not exist; build it with python -m datasets.prepare.covid", flags=("--root", "{tmp}")),
    Case("classnames-missing", "classnames.txt missing", "<tmp>/data/covid/classnames.txt does not exist",
         prepare=_remove("classnames.txt")),
    Case("class-folder-unlisted", "class folder not in classnames.txt",
         "class folder(s) extra in <tmp>/data/covid/images/train not listed", prepare=_add_unlisted_class),
    Case("class-folder-empty", "empty class folder", "<tmp>/data/covid/images/test/normal holds no images",
         prepare=_empty_class),
    Case("folder-unreadable", "unreadable class folder",
         "<tmp>/data/covid/images/train/covid cannot be read (Permission denied)", prepare=_unreadable_train_folder),
    Case("shots-above-class-size", "more shots than a class has images",
         "class 'covid' has 16 training image(s) in <root>/covid/images/train/covid, fewer than DATASET.NUM_SHOTS 32",
         opts=("DATASET.NUM_SHOTS", "32")),
    Case("bad-files-policy-unknown", "unknown bad-file policy", "DATASET.BAD_FILES is 'ignore'",
         opts=("DATASET.BAD_FILES", "ignore")),
    # image files
    Case("image-corrupt", "image file with corrupt content", "zz-corrupt.png: not a readable image",
         stage=DATA, prepare=_bad_test_image("zz-corrupt.png", lambda good: bytes(range(256)) * 4)),
    Case("image-zero-bytes", "zero-byte image file", "zz-empty.png: empty file (0 bytes)",
         stage=DATA, prepare=_bad_test_image("zz-empty.png", lambda good: b"")),
    Case("image-truncated-png", "truncated PNG", "zz-cut.png: not a readable image",
         stage=DATA, prepare=_bad_test_image("zz-cut.png", lambda good: good[:len(good) // 2])),
    Case("image-truncated-jpeg", "truncated JPEG", "zz-cut.jpg: truncated JPEG", stage=DATA, prepare=_truncated_jpeg),
    Case("image-wrong-extension", "file with a non-image extension", "notes.txt: not an image file name",
         stage=DATA, prepare=_bad_test_image("notes.txt", lambda good: b"scanner notes")),
    Case("image-vanished-in-worker", "image deleted during the run (found by a DataLoader worker)",
         "no such file; replace or delete the file", stage=MODEL, prepare=_image_vanishes_in_worker,
         opts=("DATALOADER.NUM_WORKERS", "1")),
    # checkpoints
    Case("checkpoint-pickled", "checkpoint holding a pickled object (old Dassl checkpoints)",
         "it holds a pickled Python object (", stage=MODEL,
         flags=("--eval-only", "--model-dir", "{tmp}/old-run"), prepare=_pickled_checkpoint),
    Case("checkpoint-of-another-model", "checkpoint of another model",
         "Checkpoint of 'prompt_learner' does not fit the model", stage=MODEL,
         flags=("--eval-only", "--model-dir", "{tmp}/other-run"), prepare=_foreign_checkpoint),
    Case("model-dir-missing", "evaluation of a run folder that does not exist",
         "--model-dir <tmp>/no-run does not exist",
         flags=("--eval-only", "--model-dir", "{tmp}/no-run")),
    # not a bad input: a bug (here injected) gives exit code 1 and the traceback
    Case("internal-error", "internal error (a bug; injected by the test)",
         "error: internal error (RuntimeError: injected fault); please report it with the log", code=1,
         prepare=_internal_fault),
]


# ---- running the cases -------------------------------------------------------------------------------
def _recording(function, loaded, what):
    def wrapper(*args, **kwargs):
        loaded.add(what)
        return function(*args, **kwargs)

    return wrapper


def run_case(case, work, data_root):
    """{"code", "last_line", "stage", "traceback"} of one case run through ``train.run``."""
    import train
    import trainers.base

    tmp = osp.join(work, case.name)
    os.makedirs(tmp)
    output = io.StringIO()
    loaded = set()
    with ExitStack() as stack:
        ctx = Context(tmp, data_root, stack)
        if case.prepare:
            case.prepare(ctx)
        ctx.patch(trainers.base, "DataManager", _recording(trainers.base.DataManager, loaded, "data"))
        ctx.patch(trainers.base, "build_backbone", _recording(trainers.base.build_backbone, loaded, "model"))
        argv = case.argv(ctx)
        with redirect_stdout(output), redirect_stderr(output):
            try:
                code = train.run(argv)
            except SystemExit as exit:  # argparse's own errors
                code = exit.code
            finally:
                if sys.stdout is not output:  # train.py tees the output into a log file: close it
                    sys.stdout.close()
    text = output.getvalue()
    lines = text.strip().splitlines()
    stage = MODEL if "model" in loaded else DATA if "data" in loaded else CONFIG
    replacements = {tmp: "<tmp>", data_root: "<root>", os.environ.get("HF_HUB_CACHE", "<hf-cache>"): "<hf-cache>"}
    return {"code": code, "last_line": placeholders(lines[-1] if lines else "", replacements), "stage": stage,
            "traceback": "Traceback" in text}


def placeholders(text, replacements):
    for path in sorted(replacements, key=len, reverse=True):
        text = text.replace(path, replacements[path])
    return text


def run_all(work, data_root):
    return {case.name: run_case(case, work, data_root) for case in CASES}


# ---- the table in docs/ERRORS.md ---------------------------------------------------------------------
def _cell(text):
    return "`` " + text + " ``" if text else ""


def render_table(outcomes):
    from common import tables

    rows = [[case.name, case.bad_input, _cell(case.shown()), outcomes[case.name]["stage"],
             outcomes[case.name]["code"], _cell(outcomes[case.name]["last_line"])] for case in CASES]
    headers = ("Case", "Bad input", "Command-line part", "Found", "Exit", "Last line printed")
    return tables.markdown(rows, headers) + "\n"


TABLE = re.compile(re.escape(TABLE_START) + "\n(.*?)" + re.escape(TABLE_END), re.S)


def doc_table(text):
    """The generated table inside ``text`` (docs/ERRORS.md), between its markers; None without them."""
    found = TABLE.search(text)
    return found.group(1) if found else None


def write_doc(outcomes):
    with open(DOC, encoding="utf-8") as f:
        text = f.read()
    if doc_table(text) is None:
        raise SystemExit(f"{DOC} has no {TABLE_START} ... {TABLE_END} markers")
    text = TABLE.sub(lambda match: f"{TABLE_START}\n{render_table(outcomes)}{TABLE_END}", text, count=1)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(text)


def _prepare_environment(args, scratch):
    """Offline stand-ins and a synthetic dataset; the hub variables are set before any hub library loads."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    if args.hf_cache:
        os.environ["HF_HUB_CACHE"] = args.hf_cache
    else:
        os.environ["HF_HUB_CACHE"] = osp.join(scratch, "hf-cache")
        from clip_models.standins import write_standins

        write_standins(os.environ["HF_HUB_CACHE"])
    if args.data:
        return args.data
    from datasets.synthetic import generate

    root = osp.join(scratch, "data")
    generate("covid", root, train_per_class=16, test_per_class=10, size=32, seed=0)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the outcomes of all cases to this file")
    parser.add_argument("--write-doc", action="store_true", help=f"rewrite the table in {DOC}")
    parser.add_argument("--hf-cache", help="hub cache holding the stand-ins (default: write them)")
    parser.add_argument("--data", help="root holding the synthetic covid dataset (default: generate it)")
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    os.chdir(REPO)  # cases name config files relative to the repository, as the README's commands do
    with tempfile.TemporaryDirectory(prefix="baple-bad-inputs-") as scratch:
        data_root = _prepare_environment(args, scratch)
        outcomes = run_all(osp.join(scratch, "cases"), data_root)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(outcomes, f, indent=1)
    if args.write_doc:
        write_doc(outcomes)
        print(f"Wrote the table of {len(CASES)} cases to {DOC}")


if __name__ == "__main__":
    main()
