"""Optimiser and learning-rate schedule from ``OPTIM`` (Dassl's ``dassl.optim``), on torch's own classes.

The schedule reproduces Dassl epoch by epoch: ``WARMUP_EPOCH`` epochs at a constant
(``WARMUP_CONS_LR``) or linearly rising (``WARMUP_MIN_LR`` first) rate, then the main schedule
counted from zero (``WARMUP_RECOUNT``). It is a ``SequentialLR`` whose state is plain numbers,
so checkpoints load with ``weights_only=True``.
"""
import torch
import torch.nn as nn
from torch.optim.lr_scheduler import CosineAnnealingLR, LambdaLR, MultiStepLR, SequentialLR, StepLR

AVAI_OPTIMS = ["adam", "amsgrad", "sgd", "rmsprop", "adamw"]
AVAI_SCHEDS = ["single_step", "multi_step", "cosine"]


def build_optimizer(model, optim_cfg, param_groups=None):
    """``model`` is an ``nn.Module`` or an iterable of parameters / parameter groups."""
    name = optim_cfg.NAME
    if name not in AVAI_OPTIMS:
        raise ValueError(f"OPTIM.NAME {name!r} is unknown; choose from {AVAI_OPTIMS}")
    if optim_cfg.STAGED_LR:
        raise NotImplementedError("OPTIM.STAGED_LR is not supported by the built-in engine; set it to False")
    if param_groups is None:
        param_groups = model.parameters() if isinstance(model, nn.Module) else model
    lr, wd = optim_cfg.LR, optim_cfg.WEIGHT_DECAY
    betas = (optim_cfg.ADAM_BETA1, optim_cfg.ADAM_BETA2)
    if name in ("adam", "amsgrad"):
        return torch.optim.Adam(param_groups, lr=lr, weight_decay=wd, betas=betas, amsgrad=name == "amsgrad")
    if name == "sgd":
        return torch.optim.SGD(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                               dampening=optim_cfg.SGD_DAMPNING, nesterov=optim_cfg.SGD_NESTEROV)
    if name == "rmsprop":
        return torch.optim.RMSprop(param_groups, lr=lr, momentum=optim_cfg.MOMENTUM, weight_decay=wd,
                                   alpha=optim_cfg.RMSPROP_ALPHA)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=wd, betas=betas)


def _main_scheduler(optimizer, optim_cfg):
    kind, stepsize, gamma = optim_cfg.LR_SCHEDULER, optim_cfg.STEPSIZE, optim_cfg.GAMMA
    if kind not in AVAI_SCHEDS:
        raise ValueError(f"OPTIM.LR_SCHEDULER {kind!r} is unknown; choose from {AVAI_SCHEDS}")
    if kind == "single_step":
        step = stepsize[-1] if isinstance(stepsize, (list, tuple)) else stepsize
        return StepLR(optimizer, step_size=step if step > 0 else optim_cfg.MAX_EPOCH, gamma=gamma)
    if kind == "multi_step":
        return MultiStepLR(optimizer, milestones=list(stepsize), gamma=gamma)
    return CosineAnnealingLR(optimizer, float(optim_cfg.MAX_EPOCH))


def build_lr_scheduler(optimizer, optim_cfg):
    warmup = optim_cfg.WARMUP_EPOCH
    if warmup <= 0:
        return _main_scheduler(optimizer, optim_cfg)
    if not optim_cfg.WARMUP_RECOUNT:
        raise ValueError("OPTIM.WARMUP_RECOUNT False is not supported; set it to True (Dassl's default)")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    if optim_cfg.WARMUP_TYPE == "constant":
        factors = [lambda e, b=b: optim_cfg.WARMUP_CONS_LR / b for b in base_lrs]
    elif optim_cfg.WARMUP_TYPE == "linear":
        factors = [lambda e, b=b: optim_cfg.WARMUP_MIN_LR / b if e == 0 else e / warmup for b in base_lrs]
    else:
        raise ValueError(f"OPTIM.WARMUP_TYPE {optim_cfg.WARMUP_TYPE!r} is unknown; choose from constant, linear")
    warm = LambdaLR(optimizer, factors)
    main = _main_scheduler(optimizer, optim_cfg)
    return SequentialLR(optimizer, [warm, main], milestones=[warmup])
