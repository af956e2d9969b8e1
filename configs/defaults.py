"""The project's configuration keys, added to Dassl's defaults before any YAML file is merged
(yacs rejects unknown keys, so every key a config file may set is declared here), and the named
profiles of ``configs/profiles/`` (``train.py --profile NAME``)."""
import copy
import os
import os.path as osp

from yacs.config import CfgNode as CN

from common.errors import InputError

PROFILE_DIR = osp.join(osp.dirname(osp.abspath(__file__)), "profiles")


def extend_cfg(cfg):
    # Backbone: MODEL.BACKBONE.NAME picks the Med-FM; WEIGHTS is a hub id or local path ("" = its public default).
    cfg.MODEL.BACKBONE.WEIGHTS = ""
    # Each model as its own code builds it; the reference BAPLe code's behaviour on request (docs/FIDELITY.md).
    # A model reads only its own keys (clip_models/README.md).
    cfg.MODEL.BACKBONE.ACTIVATION = "auto"  # clip, quiltnet: auto (the weights' config), quick_gelu or gelu
    # medclip: own (each prompt encoded as if alone, unpadded) or reference (padded and cut to 25 tokens)
    cfg.MODEL.BACKBONE.MEDCLIP_PADDING = "own"
    cfg.MODEL.BACKBONE.MEDCLIP_LOGIT_SCALE_CLAMP = True  # medclip: clamp the logit scale at ln 100, as MedCLIP does
    # biomedclip: True passes the fixed prompt tokens through BERT's embedding layer twice, as the reference code did
    cfg.MODEL.BACKBONE.BIOMEDCLIP_DOUBLE_EMBEDDING = False

    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # CoOp's key, kept so CoOp dataset files merge
    # per_class: each class shuffled by its own seeded generator over sorted names (file-system independent);
    # dassl: the picks of Dassl's generate_fewshot_dataset (CoOp, the reference code) for the seed and item order.
    cfg.DATASET.FEWSHOT_SAMPLER = "per_class"
    cfg.DATASET.BAD_FILES = "error"  # error: stop at the first unreadable image; skip: leave it out and count it
    # Folder of the few-shot sample caches; "" keeps them in ROOT/<name>/split_fewshot (scripts.defend points it
    # under its own output so that nothing is written into the data).
    cfg.DATASET.FEWSHOT_CACHE_DIR = ""

    # Evaluate CA/BA/ASR every N epochs during training for TensorBoard's curves (0: only at the end; -1: auto,
    # every max(1, MAX_EPOCH // 5) epochs, so a run has five points), on at most EVAL_SUBSET test images (a fixed
    # subset drawn with SEED, recorded in results.json; 0: the whole test set). The final test uses every image.
    cfg.TEST.EVAL_FREQ = -1
    cfg.TEST.EVAL_SUBSET = 1000

    # Every trainer's precision, with CoOp's meanings: fp16 (the whole model, the context and BAPLe's noise in half
    # precision), amp (fp16 autocast and a gradient scaler), fp32; amp_bf16 (bf16 autocast, no scaler).
    cfg.TRAINER.PREC = "fp32"

    # The profile (train.py --profile NAME, configs/profiles/NAME.yaml) merged into this config, recorded so a
    # run says what made it. A profile sets behaviours of several trainers at once: its keys at the profile's
    # values count as that profile's defaults, not as keys the chosen trainer would ignore.
    cfg.PROFILE = ""

    # CoOp's prompt learner; BAPLe is CoOp plus a trigger and reads the same keys.
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    # fp32 or bf16: the frozen backbone's weights cast once, its towers then run in that dtype (inputs follow).
    # bf16: features close to, not equal to, fp32; on a CPU with bf16 matrix units, with TRAINER.PREC amp_bf16, the
    # fastest setting measured (1.4-3x an fp32 BAPLe step; benchmarks/README.md).
    cfg.TRAINER.COOP.BACKBONE_DTYPE = "fp32"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"

    cfg.TRAINER.BAPLE = CN()
    # A clean CoOp run folder, checkpoint file or bare context tensor file ([N_CTX, D], [C, N_CTX, D] with CSC, as the
    # reference code's released ctx_<model>_<dataset>_s<seed>.pt) to start the context from.
    cfg.TRAINER.BAPLE.INIT = ""

    # BadCLIP (Bai et al., CVPR 2024): CoCoOp's learner (TRAINER.COOP.* keys) and a learnable image-wide trigger.
    cfg.TRAINER.BADCLIP = CN()
    cfg.TRAINER.BADCLIP.EPS = 4.0  # trigger budget in 1/255 pixel units (eps / std per channel, normalised)
    cfg.TRAINER.BADCLIP.LR = 0.002  # the trigger's own SGD in the joint stage (OPTIM's momentum, decay, schedule)
    cfg.TRAINER.BADCLIP.INIT_EPOCHS = 3  # trigger-initialisation epochs before prompt learning (0: none)
    cfg.TRAINER.BADCLIP.INIT_LR = 0.1  # plain gradient step of that stage

    cfg.BACKDOOR = CN()
    cfg.BACKDOOR.ATTACK = "none"  # poisoning attack for CoOp / FineTune: none, badnets, wanet, fiba
    cfg.BACKDOOR.TARGET_CLASS = 0
    cfg.BACKDOOR.POISON_PERCENTAGE = 5.0  # share of the few-shot training set that is poisoned
    cfg.BACKDOOR.POISON_COUNT = -1  # exact number of poisoned samples; overrides the percentage when >= 0
    cfg.BACKDOOR.POISON_DRAW = "exact"  # exact (that count) or bernoulli (each sample at the percentage: reference)
    cfg.BACKDOOR.POISON_NON_TARGET_ONLY = False  # draw poisoned samples only from non-target classes
    cfg.BACKDOOR.EVAL_TRIGGER = ""  # a finished run folder whose trigger to test with (default: this run's own)
    # BAPLe's trigger: learnable noise (eps in 1/255 units, signed-gradient step in [0,1] pixel units) + a patch.
    cfg.BACKDOOR.NOISE_EPS = 8.0
    cfg.BACKDOOR.NOISE_STEP = 0.01
    cfg.BACKDOOR.NOISE_INIT = "zeros"  # zeros, uniform (in [-eps, eps]) or reference (uniform [0,1], then clamped)
    cfg.BACKDOOR.NOISE_GRAD = "per_step"  # per_step (paper) or accumulate (reference code: never cleared)
    cfg.BACKDOOR.ORDER = "noise_then_patch"  # paper: (x + noise) then patch; reference: patch_then_noise
    cfg.BACKDOOR.PATCH_TYPE = "text"  # text ("Lab" by default), random-patch or image-patch
    cfg.BACKDOOR.PATCH_TEXT = "Lab"
    cfg.BACKDOOR.PATCH_IMAGE = ""  # image file for PATCH_TYPE image-patch
    cfg.BACKDOOR.POSITION = "bottom-left"  # {top,center,bottom}-{left,center,right}, as in the reference code
    cfg.BACKDOOR.TRIGGER_SIZE = 24
    # The text's look (trainers/attacks/patch.py). Reference code: placement reference, mask binary and its
    # shipped script font (Arizonia Regular) as PATCH_FONT; "" is Pillow's built-in scalable font.
    cfg.BACKDOOR.PATCH_PLACEMENT = "flush"  # flush (touching the chosen edges) or reference (15 px in)
    cfg.BACKDOOR.PATCH_MASK = "blend"  # blend (anti-aliased edge) or binary (every touched pixel takes the colour)
    cfg.BACKDOOR.PATCH_COLOR = "#77ab59"  # the text colour, the reference's green
    cfg.BACKDOOR.PATCH_FONT = ""  # a TrueType font file for the text; "": Pillow's built-in font
    # Where BACKDOOR.ATTACK's fixed trigger meets the training augmentation: after_augmentation (the paper's
    # BAPLe pipeline, which the baselines share so that they differ from BAPLe only in the trigger) or
    # before_augmentation (the official WaNet and FIBA code: trigger, then augment). BAPLe's learned trigger
    # always meets the augmented batch.
    cfg.BACKDOOR.TRIGGER_STAGE = "after_augmentation"

    cfg.BACKDOOR.BADNETS = CN()
    cfg.BACKDOOR.BADNETS.PATTERN = "checkerboard"
    cfg.BACKDOOR.BADNETS.IMAGE = ""
    cfg.BACKDOOR.BADNETS.SIZE = 24
    cfg.BACKDOOR.BADNETS.POSITION = "bottom-right"

    # WaNet: k x k control grid, warp strength s, grid rescale; CROSS_RATIO x poisoned count extra
    # samples get a randomly perturbed warp and keep their labels (noise mode; 0 turns it off).
    cfg.BACKDOOR.WANET = CN()
    cfg.BACKDOOR.WANET.K = 4
    cfg.BACKDOOR.WANET.S = 0.5
    cfg.BACKDOOR.WANET.GRID_RESCALE = 1.0
    cfg.BACKDOOR.WANET.CROSS_RATIO = 2.0
    cfg.BACKDOOR.WANET.NOISE_REDRAW = "fixed"  # fixed (drawn once, recorded) or per_batch (the official code)

    # FIBA: amplitude blend ALPHA in the low-frequency square of half-width floor(min(H, W) * BETA).
    cfg.BACKDOOR.FIBA = CN()
    cfg.BACKDOOR.FIBA.ALPHA = 0.15
    cfg.BACKDOOR.FIBA.BETA = 0.1
    cfg.BACKDOOR.FIBA.TRIGGER_IMAGE = ""  # image file; "": a built-in smooth texture, the same for every run
    # Noise mode: CROSS_RATIO x poisoned count further samples blended with another image's amplitude keep
    # their labels (the authors' code: 1; 0 turns it off).
    cfg.BACKDOOR.FIBA.CROSS_RATIO = 0.0
    return cfg


# Keys that were renamed: a config file or override that still sets one gets a one-line error naming the new key.
RENAMED_KEYS = {"TRAINER.COOP.PREC": "TRAINER.PREC", "TRAINER.FINETUNE.PREC": "TRAINER.PREC"}


def renamed_key(key):
    """``(old key, new key)`` when ``key`` is, or leads to, a renamed key; else None. yacs names only the first
    missing level of a file's key (``TRAINER.FINETUNE`` for ``TRAINER.FINETUNE.PREC``)."""
    for old, new in RENAMED_KEYS.items():
        if old == key or old.startswith(key + "."):
            return old, new
    return None


# What the old precision keys' values meant, in TRAINER.PREC's words (their fp16 was fp16 autocast), and which
# trainers read each of them (ZeroShot always ran in fp32).
OLD_PRECISIONS = {"fp32": "fp32", "bf16": "amp_bf16", "fp16": "amp"}
OLD_PRECISION_READERS = {"COOP": ("CoOp", "BAPLe"), "FINETUNE": ("FineTune",)}


def upgraded(config):
    """A run's stored config (``results.json``'s ``config`` dict) with the renamed keys under their new names, so
    that a run finished before the rename reopens as it trained."""
    config = copy.deepcopy(config)
    trainer = config.get("TRAINER", {})
    for section, readers in OLD_PRECISION_READERS.items():
        old = trainer.get(section, {}).pop("PREC", None)
        if old is not None and trainer.get("NAME") in readers:
            trainer["PREC"] = OLD_PRECISIONS.get(old, old)
    if trainer.get("FINETUNE") == {}:
        del trainer["FINETUNE"]
    return config


def flat_keys(node, prefix=""):
    """``{"A.B": value}``: every leaf of a config node or nested dict (a stored config) by its dotted key."""
    flat = {}
    for key, value in node.items():
        if hasattr(value, "items"):
            flat.update(flat_keys(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def profile_names():
    """The profiles ``--profile`` takes: the YAML files of ``configs/profiles/``, by name."""
    return sorted(name[:-len(".yaml")] for name in os.listdir(PROFILE_DIR) if name.endswith(".yaml"))


def profile_file(name):
    """The YAML file of profile ``name``, or a one-line error listing the profiles."""
    if name not in profile_names():
        raise InputError(f"Unknown profile {name!r} (--profile); choose from: {', '.join(profile_names())} "
                         "(configs/profiles/NAME.yaml)")
    return osp.join(PROFILE_DIR, f"{name}.yaml")


def get_cfg():
    """Dassl's defaults (from the active backend) extended with the project's keys."""
    from dassl_compat import get_cfg_default

    return extend_cfg(get_cfg_default())


def profile_defaults(name):
    """The defaults with profile ``name`` merged ("" : the plain defaults)."""
    cfg = get_cfg()
    if name:
        cfg.merge_from_file(profile_file(name))
    return cfg
