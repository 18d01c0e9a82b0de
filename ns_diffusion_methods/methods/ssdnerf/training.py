"""Single-stage training with prior gradient caching (SSDNeRF, Algorithm 1).

Per outer iteration, for a batch of B objects:

1. load their pre-activation codes (and, implicitly, their own Adam states);
2. diffusion loss on the activated codes: back-propagate into the U-Net *and* the codes, step the U-Net's optimiser,
   and **cache the code gradient** g_diff;
3. K_in - 1 inner steps with the decoder frozen: fresh random rays, rendering loss + L2 code regulariser, code
   gradient = rendering gradient + the cached g_diff, one per-object Adam step;
4. a last inner step that also back-propagates into the decoder and steps the decoder's optimiser.

The prior gradient is computed once per outer iteration and re-used by every inner step; with K_in = 1 this is the
same update as back-propagating diffusion and rendering losses together (tested).

On several GPUs every rank runs the step on its own objects: the U-Net's and the decoder's gradients are averaged over
the ranks before their optimisers step, and each rank's code gradients are divided by the number of ranks, so that N
ranks with B objects each make the same update as one process with all N x B objects (tested with two processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from nerfstudio.cameras.rays import RayBundle
from torch import Tensor

from ns_diffusion_methods.engine.distributed import average_gradients
from ns_diffusion_methods.engine.schedulers import milestones_passed
from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModel
from ns_diffusion_methods.metrics.image import psnr_from_mse


@dataclass
class RayBatch:
    """Rays of B objects."""

    origins: Tensor
    """``[B, R, 3]``"""
    directions: Tensor
    """``[B, R, 3]``"""
    target: Tensor
    """``[B, R, 3]`` ground-truth colours."""
    num_pixels: Tensor
    """``[B]`` pixels of the views the rays of each object were drawn from (views x H x W): the numerator of N_v in
    the rendering-loss weight (:meth:`SSDNeRFModel.rendering_weight`)."""

    @classmethod
    def from_datamanager(cls, ray_bundle: RayBundle, batch: Dict, pixels_per_view: int) -> "RayBatch":
        """From the ``(RayBundle [B*R], batch)`` of :meth:`MultiObjectDataManager.sample_rays`, whose images have
        ``pixels_per_view`` = H x W pixels."""
        num_objects = batch["object_indices"].shape[0]
        return cls(origins=ray_bundle.origins.reshape(num_objects, -1, 3),
                   directions=ray_bundle.directions.reshape(num_objects, -1, 3),
                   target=batch["image"].reshape(num_objects, -1, 3),
                   num_pixels=batch["num_views"] * float(pixels_per_view))


def inner_steps_at(step: int, values: Tuple[int, ...], milestones: Tuple[int, ...]) -> int:
    """K_in at ``step``: ``values[i]`` where i = number of milestones <= step (paper: 16, then 4 after 2k)."""
    if len(values) != len(milestones) + 1:
        raise ValueError(f"`inner_steps` needs one more value than `inner_steps_milestones`, but got {values} and "
                         f"{milestones}.")
    return values[milestones_passed(step, milestones)]


def single_stage_step(
    model: SSDNeRFModel,
    object_indices: Tensor,
    ray_batches: Callable[[int], RayBatch],
    k_in: int,
    code_lr: float,
    diffusion_optimizer: Optional[torch.optim.Optimizer],
    decoder_optimizer: Optional[torch.optim.Optimizer],
    code_betas: Tuple[float, float] = (0.9, 0.999),
    timesteps: Optional[Tensor] = None,
    noise: Optional[Tensor] = None,
    update_norm: bool = True,
    perturb: bool = True,
    step: Optional[int] = None,
    world_size: int = 1,
) -> Tuple[Dict[str, Tensor], Dict[str, Tensor]]:
    """One outer iteration of Algorithm 1 on objects ``object_indices``.

    Args:
        model: the SSDNeRF model (its code buffers are updated in place).
        object_indices: ``[B]`` distinct training objects (owned by this process).
        ray_batches: ``ray_batches(k)`` returns the rays of inner step k (fresh random rays per step).
        k_in: K_in >= 1 inner code steps; the last also steps the decoder.
        code_lr: learning rate of the per-object code Adams.
        diffusion_optimizer, decoder_optimizer: optimisers of the U-Net and decoder (None: not stepped).
        code_betas: Adam betas of the codes.
        timesteps, noise: diffusion timesteps ``[B]`` and noise ``[B, 3C, R, R]`` (default random).
        update_norm: update the diffusion-loss normalisation EMA with this batch.
        perturb: stratified-sampling jitter.
        step: the training iteration; picks the rendering and regulariser weights of the model's loss-weight
            schedule (:meth:`SSDNeRFModel.loss_weight_scale`; None: the configured weights).
        world_size: ranks running this step together, each on its own B objects (every rank must call it): the U-Net's
            and decoder's gradients are averaged over them, the code gradients divided by ``world_size``.

    Returns:
        ``(loss_dict, metrics_dict)``: the diffusion, rendering (last inner step) and regulariser losses, logged
        separately; training PSNR, K_in and the loss normaliser.
    """
    if k_in < 1:
        raise ValueError(f"K_in must be >= 1, but is {k_in}.")
    # 1. Load the codes of the batch (pre-activation, as a leaf).
    code_pre = model.object_codes_pre(object_indices).requires_grad_(True)
    # each rank's losses are means over its own B objects; one process over all N x B would weigh each object's
    # gradient by 1 / (N B)
    code_grad_scale = 1.0 / world_size

    # 2. Diffusion loss -> U-Net step, and the cached prior gradient on the codes.
    if diffusion_optimizer is not None:
        diffusion_optimizer.zero_grad(set_to_none=True)
    loss_diffusion = model.diffusion_loss(model.activate(code_pre), t=timesteps, noise=noise,
                                          update_norm=update_norm).mean()
    loss_diffusion.backward()
    if world_size > 1:
        average_gradients(model.unet.parameters(), world_size)
    if diffusion_optimizer is not None:
        diffusion_optimizer.step()
    assert code_pre.grad is not None
    prior_grad = code_pre.grad.detach() * code_grad_scale

    # 3.-4. K_in inner code steps: rendering gradient + cached prior gradient; the last also steps the decoder.
    for k in range(k_in):
        last = k == k_in - 1
        rays = ray_batches(k)
        code_pre = code_pre.detach().requires_grad_(True)
        code = model.activate(code_pre)
        out = model.render_rays(code, rays.origins, rays.directions, perturb=perturb)
        loss_rendering = model.rendering_loss(out["rgb"], rays.target, rays.num_pixels, step=step).mean()
        loss_reg = model.code_reg_loss(code, step=step).mean()
        loss = loss_rendering + loss_reg
        if last:
            if decoder_optimizer is not None:
                decoder_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            code_grad = code_pre.grad
        else:
            (code_grad,) = torch.autograd.grad(loss, [code_pre])
        assert code_grad is not None
        if code_grad_scale != 1.0:
            code_grad = code_grad * code_grad_scale
        code_pre = model.code_adam_step(object_indices, code_grad + prior_grad, code_lr, code_betas)
        if last and world_size > 1:
            average_gradients(model.decoder.parameters(), world_size)
        if last and decoder_optimizer is not None:
            decoder_optimizer.step()

    with torch.no_grad():
        mse = (out["rgb"] - rays.target).square().mean()
        metrics = {
            "psnr": psnr_from_mse(mse),
            "k_in": torch.tensor(float(k_in)),
            "code_lr": torch.tensor(float(code_lr)),
            "loss_weight_scale": torch.tensor(model.loss_weight_scale(step)),
            "diffusion_norm": model.diffusion_norm.detach().clone().squeeze(),
            "code_rms": model.activate(code_pre).square().mean().sqrt(),
        }
    losses = {"diffusion_loss": loss_diffusion.detach(), "rendering_loss": loss_rendering.detach(),
              "code_reg_loss": loss_reg.detach()}
    return losses, metrics
