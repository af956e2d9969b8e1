"""Image transforms chosen by name in ``INPUT.TRANSFORMS`` (Dassl's ``build_transform``).

Training: resize (unless a crop sets the size), the chosen augmentations, ``ToTensor`` and
optionally ``normalize``. Test: resize the shorter edge, centre crop, ``ToTensor``, optional
``normalize``. Without ``normalize`` the tensors stay in [0, 1], which is what a model that
normalises internally (after a trigger is applied) needs.
"""
import torchvision.transforms as T
from torchvision.transforms import InterpolationMode

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

AVAI_CHOICES = ["random_flip", "random_resized_crop", "random_crop", "normalize", "colorjitter",
                "randomgrayscale", "gaussian_blur", "center_crop"]


def build_transform(cfg, is_train=True, choices=None):
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    choices = cfg.INPUT.TRANSFORMS if choices is None else choices
    unknown = [c for c in choices if c not in AVAI_CHOICES]
    if unknown:
        raise ValueError(f"INPUT.TRANSFORMS has unknown {unknown}; choose from {AVAI_CHOICES}")
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise ValueError(f"INPUT.INTERPOLATION {cfg.INPUT.INTERPOLATION!r}; choose from {list(INTERPOLATION_MODES)}")
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    size = tuple(cfg.INPUT.SIZE)
    tfms = []
    if is_train:
        if "random_crop" not in choices and "random_resized_crop" not in choices:
            tfms.append(T.Resize(size, interpolation=interp))
        if "random_crop" in choices:
            tfms.append(T.RandomCrop(size, padding=cfg.INPUT.CROP_PADDING))
        if "random_resized_crop" in choices:
            tfms.append(T.RandomResizedCrop(size, scale=tuple(cfg.INPUT.RRCROP_SCALE), interpolation=interp))
        if "random_flip" in choices:
            tfms.append(T.RandomHorizontalFlip())
        if "colorjitter" in choices:
            i = cfg.INPUT
            tfms.append(T.ColorJitter(brightness=i.COLORJITTER_B, contrast=i.COLORJITTER_C,
                                      saturation=i.COLORJITTER_S, hue=i.COLORJITTER_H))
        if "randomgrayscale" in choices:
            tfms.append(T.RandomGrayscale(p=cfg.INPUT.RGS_P))
        if "gaussian_blur" in choices:
            tfms.append(T.RandomApply([T.GaussianBlur(cfg.INPUT.GB_K)], p=cfg.INPUT.GB_P))
    else:
        tfms += [T.Resize(max(size), interpolation=interp), T.CenterCrop(size)]
    tfms.append(T.ToTensor())
    if "normalize" in choices:
        tfms.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
    return T.Compose(tfms)
