"""Exponential moving averages (EMA) of model weights: the copies diffusion methods sample and evaluate with.

One update rule, :func:`update_ema` (``ema <- decay * ema + (1 - decay) * model`` for every parameter), and the two
decay schedules the package's methods use:

- :func:`stylegan_ema_decay`: StyleGAN's half-life in samples seen, with a ramp-up (SSDNeRF's decoder and U-Net);
- :func:`warmup_ema_decay`: ``min(decay, (1 + n) / (10 + n))`` after n updates (RenderDiffusion's denoiser).

Pure torch; no nerfstudio import.
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float, copy_buffers: bool = True) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for every parameter, in place.

    Args:
        ema: the averaged copy (same architecture as ``model``).
        model: the trained module.
        decay: the weight of the old average, in [0, 1].
        copy_buffers: copy ``model``'s buffers into ``ema`` as they are (they are not averaged). Default is True.

    Raises:
        ValueError: the two modules have different numbers of parameters (or buffers).
    """
    for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    if copy_buffers:
        for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):
            b_ema.copy_(b)


def stylegan_ema_decay(step: int, batch_size: int, half_life_kimg: float, rampup: float) -> float:
    """StyleGAN's EMA decay: a half-life of ``half_life_kimg`` thousand samples, ramped up over the first ``rampup``
    fraction of the samples seen so far (SSDNeRF: 4 kimg, ramp-up 0.05, batch 16).

    Args:
        step: the training step (0-based); ``(step + 1) * batch_size`` samples have been seen after it.
        batch_size: samples per step.
        half_life_kimg: the half-life in thousands of samples.
        rampup: the half-life is at most this fraction of the samples seen (0: no ramp-up).
    """
    half_life = half_life_kimg * 1000.0
    if rampup > 0:
        half_life = min(half_life, (step + 1) * batch_size * rampup)
    return 0.5 ** (batch_size / max(half_life, 1e-8))


def warmup_ema_decay(decay: float, num_updates: int) -> float:
    """``min(decay, (1 + n) / (10 + n))`` for the (n + 1)-th update: a short average early in training (0.1 at the first
    update), ``decay`` once ``n`` is large."""
    return min(decay, (1 + num_updates) / (10 + num_updates))


__all__ = ["stylegan_ema_decay", "update_ema", "warmup_ema_decay"]
