"""GAN losses for MALD-NeRF's masked adversarial training.

- discriminator: non-saturating logistic loss ``softplus(-D(real)) + softplus(D(fake))`` plus a lazy R1 penalty on
  real inputs (StyleGAN2: gamma 10, every 16 discriminator steps, scaled by gamma / 2 * interval);
- generator (the NeRF): ``softplus(-D(fake))`` plus a feature-matching loss between the discriminator features of the
  real and the fake patches;
- both real and fake patches have every pixel outside the object mask set to black (:func:`mask_outside`), which
  hides the seam between captured and inpainted pixels from the discriminator.
"""

from __future__ import annotations

from typing import Callable, Literal, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def mask_outside(images: Tensor, masks: Tensor) -> Tensor:
    """Set every pixel outside the mask to 0 (black); inside pixels and their gradients are unchanged.

    Args:
        images: ``[..., C, H, W]`` or any shape that ``masks`` broadcasts to.
        masks: bool (True = inside the object mask) or float (inside = > 0.5), broadcastable to ``images``
            (``[B, 1, H, W]`` for ``[B, 3, H, W]`` images).
    """
    inside = masks if masks.dtype == torch.bool else masks > 0.5
    return torch.where(inside, images, torch.zeros((), dtype=images.dtype, device=images.device))


def d_logistic_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Discriminator loss ``mean(softplus(-D(real))) + mean(softplus(D(fake)))``."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def g_nonsaturating_loss(fake_logits: Tensor) -> Tensor:
    """Generator loss ``mean(softplus(-D(fake)))`` (the non-saturating form of -log D(fake))."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: Tensor, real_inputs: Tensor) -> Tensor:
    """R1 = ``mean over the batch of sum ||d D(real) / d real||^2`` (Mescheder et al. 2018).

    ``real_inputs`` must have ``requires_grad=True`` and ``real_logits`` must be computed from it. The graph is kept
    (``create_graph=True``) so that the penalty can be back-propagated into the discriminator. The weight
    (``gamma / 2``, times the interval for lazy regularisation) is applied by the caller or :func:`lazy_r1_loss`.
    """
    (grad,) = torch.autograd.grad(real_logits.sum(), real_inputs, create_graph=True)
    return grad.pow(2).reshape(grad.shape[0], -1).sum(dim=1).mean()


def lazy_r1_loss(discriminator: Callable[[Tensor], Tuple[Tensor, Sequence[Tensor]]], real: Tensor, gamma: float,
                 interval: int) -> Tensor:
    """The lazy R1 term of one regularisation step: ``gamma / 2 * interval * R1`` on ``real`` (StyleGAN2).

    Run it every ``interval`` discriminator steps; the factor ``interval`` keeps the average strength equal to an R1
    applied every step.
    """
    real = real.detach().requires_grad_(True)
    logits, _ = discriminator(real)
    # the 0 * logits term keeps every output in the graph (distributed training needs all parameters used)
    return gamma / 2.0 * interval * r1_penalty(logits, real) + 0.0 * logits.sum()


def feature_matching_loss(real_feats: Sequence[Tensor], fake_feats: Sequence[Tensor],
                          kind: Literal["l1", "l2"] = "l1") -> Tensor:
    """Mean over layers of the L1 (pix2pixHD) or squared (LaMa) distance of the discriminator features.

    The real features are detached: the loss trains the generator only.
    """
    if len(real_feats) != len(fake_feats) or not real_feats:
        raise ValueError(f"`real_feats` and `fake_feats` must be non-empty lists of equal length, but got "
                         f"{len(real_feats)} and {len(fake_feats)}.")
    distance = F.l1_loss if kind == "l1" else F.mse_loss
    losses = [distance(fake, real.detach()) for real, fake in zip(real_feats, fake_feats)]
    return torch.stack(losses).mean()
