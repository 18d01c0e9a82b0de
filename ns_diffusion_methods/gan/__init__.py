"""Patch discriminator and GAN losses (MALD-NeRF's masked adversarial training)."""

from ns_diffusion_methods.gan.discriminator import PatchDiscriminator, PatchDiscriminatorConfig
from ns_diffusion_methods.gan.losses import (
    d_logistic_loss,
    feature_matching_loss,
    g_nonsaturating_loss,
    lazy_r1_loss,
    mask_outside,
    r1_penalty,
)

__all__ = [
    "PatchDiscriminator",
    "PatchDiscriminatorConfig",
    "d_logistic_loss",
    "feature_matching_loss",
    "g_nonsaturating_loss",
    "lazy_r1_loss",
    "mask_outside",
    "r1_penalty",
]
