"""Backbones by name in ``BACKBONE_REGISTRY`` (a Dassl ``Registry``, beside TRAINER_REGISTRY and
DATASET_REGISTRY): ``@register_backbone("name")`` on a ``MedFMBackbone`` subclass, ``build_backbone``.

Every list of models in the project comes from here: the stand-ins the tests load
(``clip_models.standins``), the benchmark's ``--backbones``, the report's column labels and order
(each class's ``label`` and ``paper_order``), the backbone tests' parametrisation."""
from common.errors import InputError
from dassl_compat import Registry, register_as

BACKBONE_REGISTRY = Registry("BACKBONE")


def register_backbone(name):
    """Class decorator: makes the class buildable as ``MODEL.BACKBONE.NAME = name``."""

    def register(cls):
        cls.name = name
        return register_as(BACKBONE_REGISTRY, name)(cls)

    return register


def available_backbones():
    return sorted(BACKBONE_REGISTRY.registered_names())


def backbone_class(name):
    if name not in BACKBONE_REGISTRY.registered_names():
        raise InputError(f"MODEL.BACKBONE.NAME={name!r} is not a backbone (--backbone); choose one of: "
                         f"{', '.join(available_backbones())}")
    return BACKBONE_REGISTRY.get(name)


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
