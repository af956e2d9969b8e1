"""Backbones by name: ``@register_backbone("name")`` on a ``MedFMBackbone`` subclass, ``build_backbone``."""
from configs.errors import InputError

_BACKBONES = {}


def register_backbone(name):
    """Class decorator: makes the class buildable as ``MODEL.BACKBONE.NAME = name``."""

    def register(cls):
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} is registered twice ({_BACKBONES[name].__name__}, {cls.__name__})")
        cls.name = name
        _BACKBONES[name] = cls
        return cls

    return register


def available_backbones():
    return sorted(_BACKBONES)


def backbone_class(name):
    if name not in _BACKBONES:
        raise InputError(f"MODEL.BACKBONE.NAME={name!r} is not a backbone; choose one of: "
                         f"{', '.join(available_backbones())}")
    return _BACKBONES[name]


def backbone_options(name, settings=None):
    """The keyword arguments backbone ``name`` takes from ``settings`` (the ``MODEL.BACKBONE`` config node,
    or a dict with some of its keys): one per key the class lists in ``setting_keys``; a key absent from
    ``settings`` keeps the class's default. Values are checked by the class (``check_options``), so a bad
    one is a one-line ``InputError`` before any weights are read."""
    cls = backbone_class(name)
    options = {arg: settings[key] for key, arg in cls.setting_keys.items() if settings is not None and key in settings}
    cls.check_options(**options)
    return options


def build_backbone(name, weights="", settings=None):
    """The backbone ``name`` with ``weights`` (a hub id or local path; "" = the model's public default)
    and the options ``settings`` holds for it (``backbone_options``), in eval mode. Parameters keep
    ``requires_grad`` as loaded: trainers decide what to freeze."""
    backbone = backbone_class(name)(weights, **backbone_options(name, settings))
    _check_placeholder(backbone)
    return backbone.eval()


def _check_placeholder(backbone):
    # Prompt learners put n_ctx placeholders at positions 1..n_ctx: each must be exactly one token.
    placeholders = " ".join([backbone.placeholder] * 4)
    if backbone.count_tokens(backbone.placeholder) != 1 or backbone.count_tokens(placeholders) != 4:
        raise InputError(f"{backbone.name}: the tokenizer of these weights splits the placeholder "
                         f"{backbone.placeholder!r} into several tokens; prompt learning needs a one-token word "
                         "(set the backbone class's placeholder)")
