"""Defences against, and robustness of, the backdoors of finished runs (``python -m scripts.defend``),
one module each, registered in ``DEFENCE_REGISTRY`` (``base``) in this order: input purifiers swept over
strengths (``robustness``), re-tuning the received prompt on trusted clean data (``retune``), STRIP
input detection (``strip``) and trigger reconstruction (``reconstruct``). A finished run is rebuilt by
``trainers.run.Run.build_trainer`` (nothing written into it); ``data`` holds the overrides it is
rebuilt with and the defender's trusted clean images. A new defence is one more module with a
``@register_defence`` class (``base.Defence``), imported here or by the user's code."""
from . import robustness, retune, strip, reconstruct  # noqa: F401,I001  (registration order: the tables' order)
from .base import DEFENCE_REGISTRY, Defence, DefenceContext, defences, register_defence

__all__ = ["DEFENCE_REGISTRY", "Defence", "DefenceContext", "defences", "register_defence"]
