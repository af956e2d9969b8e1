"""The project's configuration keys, added to Dassl's defaults before any YAML file is merged
(yacs rejects unknown keys, so every key a config file may set is declared here)."""
from yacs.config import CfgNode as CN


def extend_cfg(cfg):
    # Backbone: MODEL.BACKBONE.NAME picks the Med-FM; WEIGHTS is a hub id or local path ("" = its public default).
    cfg.MODEL.BACKBONE.WEIGHTS = ""

    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # CoOp's key, kept so CoOp dataset files merge
    cfg.DATASET.BAD_FILES = "error"  # error: stop at the first unreadable image; skip: leave it out and count it

    cfg.TEST.EVAL_FREQ = 0  # evaluate CA/BA every N epochs during training (0: only at the end)

    # CoOp's prompt learner; BAPLe is CoOp plus a trigger and reads the same keys.
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16
    cfg.TRAINER.COOP.CSC = False
    cfg.TRAINER.COOP.CTX_INIT = ""
    cfg.TRAINER.COOP.PREC = "fp32"  # fp32, bf16 or fp16 autocast around the frozen backbone
    # fp32 or bf16: the frozen backbone's weights cast once, its towers then run in that dtype (inputs follow).
    # bf16: features close to, not equal to, fp32; on a CPU with bf16 matrix units, with PREC bf16, the fastest
    # setting measured (1.4-3x an fp32 BAPLe step; benchmarks/README.md).
    cfg.TRAINER.COOP.BACKBONE_DTYPE = "fp32"
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"

    cfg.TRAINER.BAPLE = CN()
    cfg.TRAINER.BAPLE.INIT = ""  # a clean CoOp run folder (or checkpoint file) to start the context from

    # BadCLIP (Bai et al., CVPR 2024): CoCoOp's learner (TRAINER.COOP.* keys) and a learnable image-wide trigger.
    cfg.TRAINER.BADCLIP = CN()
    cfg.TRAINER.BADCLIP.EPS = 4.0  # trigger budget in 1/255 pixel units (eps / std per channel, normalised)
    cfg.TRAINER.BADCLIP.LR = 0.002  # the trigger's own SGD in the joint stage (OPTIM's momentum, decay, schedule)
    cfg.TRAINER.BADCLIP.INIT_EPOCHS = 3  # trigger-initialisation epochs before prompt learning (0: none)
    cfg.TRAINER.BADCLIP.INIT_LR = 0.1  # plain gradient step of that stage

    cfg.TRAINER.FINETUNE = CN()
    cfg.TRAINER.FINETUNE.PREC = "fp32"

    cfg.BACKDOOR = CN()
    cfg.BACKDOOR.ATTACK = "none"  # poisoning attack for CoOp / FineTune: none, badnets, wanet, fiba
    cfg.BACKDOOR.TARGET_CLASS = 0
    cfg.BACKDOOR.POISON_PERCENTAGE = 5.0  # share of the few-shot training set that is poisoned
    cfg.BACKDOOR.POISON_COUNT = -1  # exact number of poisoned samples; overrides the percentage when >= 0
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

    # FIBA: amplitude blend ALPHA in the low-frequency square of half-width floor(min(H, W) * BETA).
    cfg.BACKDOOR.FIBA = CN()
    cfg.BACKDOOR.FIBA.ALPHA = 0.15
    cfg.BACKDOOR.FIBA.BETA = 0.1
    cfg.BACKDOOR.FIBA.TRIGGER_IMAGE = ""  # image file; "": a built-in smooth texture, the same for every run
    return cfg


def get_cfg():
    """Dassl's defaults (from the active backend) extended with the project's keys."""
    from dassl_compat import get_cfg_default

    return extend_cfg(get_cfg_default())
