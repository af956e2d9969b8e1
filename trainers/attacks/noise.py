"""BAPLe's trigger: learnable, imperceptible noise (one image-sized delta shared by every image) and, in
``NoisePatchTrigger``, that noise with a patch."""
import torch
import torch.nn as nn

from .base import Trigger

NOISE_INITS = ("zeros", "uniform", "reference")
ORDERS = ("noise_then_patch", "patch_then_noise")  # BACKDOOR.ORDER


class LearnableNoise(Trigger):
    """``clamp(x + delta, 0, 1)`` with ``||delta||_inf <= eps``. ``delta`` is a parameter but is not
    given to the optimiser: ``signed_step`` moves it against its gradient and projects it back."""

    def __init__(self, image_size, eps, init="zeros", seed=0):
        super().__init__()
        self.eps = float(eps)
        generator = torch.Generator().manual_seed(seed)
        shape = (3, image_size, image_size)
        if init == "zeros":
            delta = torch.zeros(shape)
        elif init == "uniform":
            delta = (torch.rand(shape, generator=generator) * 2 - 1) * self.eps
        elif init == "reference":  # the reference code: uniform in [0, 1], clamped at the first update
            delta = torch.rand(shape, generator=generator)
        else:
            raise ValueError(f"Unknown noise init {init!r}; choose from {', '.join(NOISE_INITS)}")
        self.delta = nn.Parameter(delta)

    def forward(self, images):
        return (images + self.delta).clamp(0, 1)

    @torch.no_grad()
    def signed_step(self, step_size):
        """delta <- clip(delta - step_size * sign(grad), -eps, eps); no-op without a gradient, or with a
        non-finite one (an fp16 overflow: under TRAINER.PREC amp the scaler skips that step too)."""
        if self.delta.grad is None or not torch.isfinite(self.delta.grad).all():
            return
        self.delta.sub_(step_size * self.delta.grad.sign()).clamp_(-self.eps, self.eps)


class NoisePatchTrigger(Trigger):
    """BAPLe's trigger B(x): learnable noise and a patch, in the configured order (``ORDERS``)."""

    def __init__(self, noise, patch, order="noise_then_patch"):
        super().__init__()
        self.noise, self.patch, self.order = noise, patch, order

    def forward(self, images):
        if self.order == "noise_then_patch":
            return self.patch(self.noise(images))
        return self.noise(self.patch(images))
