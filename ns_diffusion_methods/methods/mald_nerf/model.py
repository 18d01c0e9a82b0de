"""MALD-NeRF's NeRF: nerfacto with the reconstruction-region losses of the paper.

"Taming Latent Diffusion Model for Neural Radiance Field Inpainting", Lin et al., ECCV 2024
(https://arxiv.org/abs/2404.09995). The paper's reconstruction-region objective is Zip-NeRF's loss set::

    L^r = λ_pix L_pix + λ_inter L_inter + λ_distort L_distort + λ_decay L_decay

Here the NeRF is nerfacto (proposal sampling, hash grids), so

- ``pixel_loss``: the pixel loss, **only on rays outside the object mask**, against the captured image (MSE as
  nerfacto by default; Charbonnier as Zip-NeRF or L1 selectable);
- ``interlevel_loss`` and ``distortion_loss``: nerfacto's proposal and distortion losses, on every ray;
- ``hash_decay_loss``: Zip-NeRF's normalised weight decay of the hash grids, the mean over levels of the mean squared
  grid value, summed over the field and the proposal networks (not in nerfacto; weight 0.1 as Zip-NeRF).

Inside the object mask the paper uses **no pixel or perceptual loss**: the inpainted region is supervised by the masked
adversarial loss, computed by the pipeline (:mod:`ns_diffusion_methods.methods.mald_nerf.pipeline`), which owns the
discriminator. The ablation ``inside_l1_loss_mult`` adds an L1 loss inside the mask against the current inpainted
images (paper Table "ours + L1" / "no adversarial + L1").

Batches come from :class:`~ns_diffusion_methods.methods.mald_nerf.datamanager.MaldNerfDataManager`: per ray the
captured colour ``image``, the current inpainted colour ``inpainted`` and ``object_mask`` (True = object).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.field_components.encodings import HashEncoding
from nerfstudio.field_components.mlp import MLPWithHashEncoding
from nerfstudio.model_components.losses import distortion_loss, interlevel_loss
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torch import Tensor, nn

from ns_diffusion_methods.compat.device import default_implementation
from ns_diffusion_methods.metrics.lpips import package_lpips_in_stock_models


def hash_grid_decay(module: nn.Module) -> Tensor:
    """Zip-NeRF's normalised weight decay of every hash grid in ``module``.

    For each grid: the mean over its levels of the mean squared feature value of the level's table (Zip-NeRF's
    ``hash_levelwise_mean``); the grids' values are summed. Grids of nerfstudio's torch implementation are split into
    their levels exactly. A tiny-cuda-nn grid stores all levels in one flat vector of unequal level sizes, so its
    plain mean is used; a tiny-cuda-nn network fused with its grid (``MLPWithHashEncoding``) cannot be separated and
    its whole parameter vector is decayed (the grid holds all but a few thousand of the parameters).
    """
    total: Optional[Tensor] = None
    for sub in module.modules():
        value: Optional[Tensor] = None
        if isinstance(sub, HashEncoding):
            if sub.tcnn_encoding is not None:
                value = sub.tcnn_encoding.params.float().pow(2).mean()
            elif sub.hash_table.numel() > 0:
                table = sub.hash_table.reshape(sub.num_levels, sub.hash_table_size, -1)  # [L, T, F]
                value = table.pow(2).mean(dim=(1, 2)).mean()
        elif isinstance(sub, MLPWithHashEncoding) and not isinstance(sub.model, nn.Sequential):
            value = torch.cat([p.float().reshape(-1) for p in sub.model.parameters()]).pow(2).mean()
        if value is not None:
            total = value if total is None else total + value
    if total is None:
        return torch.zeros((), device=next(module.parameters()).device)
    return total


def pixel_loss(pred: Tensor, target: Tensor, kind: str, charbonnier_padding: float = 1e-3) -> Tensor:
    """Per-ray pixel loss ``[N]`` (mean over channels): 'mse', 'l1' or 'charbonnier' (Zip-NeRF's ``charb``)."""
    diff = pred - target
    if kind == "mse":
        return diff.pow(2).mean(dim=-1)
    if kind == "l1":
        return diff.abs().mean(dim=-1)
    if kind == "charbonnier":
        return torch.sqrt(diff.pow(2) + charbonnier_padding ** 2).mean(dim=-1)
    raise ValueError(f"`pixel_loss_type` must be 'mse', 'l1' or 'charbonnier', but got {kind!r}.")


@dataclass
class MaldNerfModelConfig(NerfactoModelConfig):
    """nerfacto with MALD-NeRF's reconstruction-region losses (see the module docstring)."""

    _target: Type = field(default_factory=lambda: MaldNerfModel)
    implementation: Literal["tcnn", "torch"] = field(default_factory=default_implementation)
    """Hash grid and MLP implementation: tiny-cuda-nn where available, else torch (CPU)."""
    camera_optimizer: CameraOptimizerConfig = field(default_factory=lambda: CameraOptimizerConfig(mode="off"))
    """Camera pose refinement. Off by default: dataset updates render the training views in eval mode, where pose
    corrections are not applied, and keep the captured pixels outside the mask, so renders must stay pixel-aligned
    with the captured images."""
    pixel_loss_type: Literal["mse", "charbonnier", "l1"] = "mse"
    """Pixel loss outside the mask: 'mse' (nerfacto), 'charbonnier' (Zip-NeRF, padding below) or 'l1'."""
    pixel_loss_mult: float = 1.0
    """λ_pix, weight of the pixel loss outside the object mask (the paper does not say; 1.0 as in nerfacto and
    Zip-NeRF)."""
    charbonnier_padding: float = 1e-3
    """Padding of the Charbonnier loss (Zip-NeRF: 1e-3)."""
    hash_decay_loss_mult: float = 0.1
    """λ_decay, weight of the hash-grid normalised weight decay (Zip-NeRF's value: 0.1; 0 turns it off)."""
    inside_l1_loss_mult: float = 0.0
    """Ablation: weight of an L1 loss inside the object mask against the current inpainted images. The paper uses
    none (0); its ablation shows L1 inside the mask is harmful."""

    def __post_init__(self) -> None:
        for name in ("pixel_loss_mult", "hash_decay_loss_mult", "inside_l1_loss_mult", "interlevel_loss_mult",
                     "distortion_loss_mult"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0, but got {getattr(self, name)}.")


class MaldNerfModel(NerfactoModel):
    """nerfacto whose losses follow MALD-NeRF's L^r (see the module docstring)."""

    config: MaldNerfModelConfig

    def populate_modules(self):  # noqa: D102
        with package_lpips_in_stock_models():  # nerfacto builds LPIPS here: unavailable offline, not fatal
            super().populate_modules()
        if self.config.hash_decay_loss_mult > 0 and any(
                isinstance(m, MLPWithHashEncoding) and not isinstance(m.model, nn.Sequential) for m in self.modules()):
            warnings.warn("tiny-cuda-nn fuses the field's hash grid with its MLP: the hash decay applies to the fused "
                          "parameter vector (grid and MLP).", stacklevel=2)

    @staticmethod
    def _object_mask(batch: Dict, num_rays: int, device: torch.device) -> Tensor:
        """Per-ray bool ``[N]``: True = inside the object mask (all False when the batch has no mask)."""
        if "object_mask" not in batch:
            return torch.zeros(num_rays, dtype=torch.bool, device=device)
        return batch["object_mask"].to(device).reshape(num_rays).bool()

    def get_metrics_dict(self, outputs, batch):  # noqa: D102
        metrics_dict = {}
        inside = self._object_mask(batch, outputs["rgb"].shape[0], self.device)
        if (~inside).any():
            gt_rgb = self.renderer_rgb.blend_background(batch["image"].to(self.device))
            metrics_dict["psnr"] = self.psnr(outputs["rgb"][~inside], gt_rgb[~inside])  # captured pixels only
        if self.training:
            metrics_dict["distortion"] = distortion_loss(outputs["weights_list"], outputs["ray_samples_list"])
        self.camera_optimizer.get_metrics_dict(metrics_dict)
        return metrics_dict

    def get_loss_dict(self, outputs, batch, metrics_dict=None):  # noqa: D102
        loss_dict: Dict[str, Tensor] = {}
        num_rays = outputs["rgb"].shape[0]
        inside = self._object_mask(batch, num_rays, self.device)
        pred_rgb, gt_rgb = self.renderer_rgb.blend_background_for_loss_computation(
            pred_image=outputs["rgb"], pred_accumulation=outputs["accumulation"],
            gt_image=batch["image"].to(self.device))
        per_ray = pixel_loss(pred_rgb, gt_rgb, self.config.pixel_loss_type, self.config.charbonnier_padding)
        outside = (~inside).float()
        # mean over the rays outside the mask; rays inside contribute nothing (their captured colour is the object)
        loss_dict["pixel_loss"] = self.config.pixel_loss_mult * (per_ray * outside).sum() / outside.sum().clamp_min(1)
        if "inpaint_mask" in batch:  # visibility-aware masks: the fills only count where no other view sees
            inside = batch["inpaint_mask"].to(self.device).reshape(num_rays).bool()
        if self.config.inside_l1_loss_mult > 0 and "inpainted" in batch and inside.any():
            target = batch["inpainted"].to(self.device)
            pred_in, target_in = self.renderer_rgb.blend_background_for_loss_computation(
                pred_image=outputs["rgb"][inside], pred_accumulation=outputs["accumulation"][inside],
                gt_image=target[inside])
            loss_dict["inside_l1_loss"] = self.config.inside_l1_loss_mult * (pred_in - target_in).abs().mean()
        if self.training:
            loss_dict["interlevel_loss"] = self.config.interlevel_loss_mult * interlevel_loss(
                outputs["weights_list"], outputs["ray_samples_list"])
            assert metrics_dict is not None and "distortion" in metrics_dict
            loss_dict["distortion_loss"] = self.config.distortion_loss_mult * metrics_dict["distortion"]
            if self.config.hash_decay_loss_mult > 0:
                loss_dict["hash_decay_loss"] = self.config.hash_decay_loss_mult * (
                    hash_grid_decay(self.field) + hash_grid_decay(self.proposal_networks))
            self.camera_optimizer.get_loss_dict(loss_dict)
        return loss_dict

    def get_image_metrics_and_images(self, outputs: Dict[str, Tensor],
                                     batch: Dict[str, Tensor]) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """nerfacto's full-frame metrics and images, plus the masked metrics of views with an object mask."""
        metrics_dict, images_dict = super().get_image_metrics_and_images(outputs, batch)
        if "object_mask" in batch:
            from ns_diffusion_methods.methods.mald_nerf.evaluation import masked_image_metrics

            gt_rgb = self.renderer_rgb.blend_background(batch["image"].to(self.device))
            mask = batch["object_mask"].to(self.device)
            metrics_dict.update(masked_image_metrics(outputs["rgb"], gt_rgb, mask, lpips=self.lpips))
            images_dict["object_mask"] = mask.float().expand(*mask.shape[:2], 3)
        return metrics_dict, images_dict
