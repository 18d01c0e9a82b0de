"""SSDNeRF: Single-Stage Diffusion NeRF (Chen et al., ICCV 2023, https://arxiv.org/abs/2304.06714).

The model holds everything that is learned or must survive a checkpoint:

- per-object triplane codes, stored pre-activation (``codes_pre [N, 3, C, R, R]``, code = 2 tanh(code_pre)), with
  each object's own Adam state (``code_exp_avg``, ``code_exp_avg_sq``, ``code_steps``) as buffers, so that a resumed
  run continues every object's optimiser exactly (as in the official SSDNeRF code, where each scene's Adam state
  persists across visits);
- the shared decoder MLP (:class:`ns_diffusion_methods.triplane.decoder.TriplaneMLPDecoder`) and the diffusion U-Net
  over codes reshaped to ``[3C, R, R]``, each with an EMA copy used at test time;
- the EMA of mean(x0^2) that normalises the diffusion loss (c_diff / EMA, paper Eq. 4 text).

The per-object buffers are large (8.7 GB for SRN cars); checkpoints write them in chunks with the moments in bfloat16,
and loading copies them in chunks (:mod:`ns_diffusion_methods.methods.ssdnerf.checkpoints`). On several GPUs each
rank holds only the objects it owns (``shard``: objects ``rank, rank + world_size, ...``, at local rows ``0, 1, ...``;
:class:`~ns_diffusion_methods.engine.distributed.Shard`); the methods below take global object indices.

The single-stage training step (Algorithm 1, prior gradient caching) is in
:mod:`ns_diffusion_methods.methods.ssdnerf.training`; the test-time procedures (guided sampling, fine-tuning,
generation) in :mod:`ns_diffusion_methods.methods.ssdnerf.reconstruction`.

Deviation from the official code: rendering uses stratified (+ importance) samples inside the box instead of the
CUDA occupancy-grid ray marcher (a speed optimisation, not part of the method).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.models.base_model import Model, ModelConfig
from torch import Tensor, nn
from torch.nn import Parameter

from ns_diffusion_methods.engine.distributed import Shard, mean_over_ranks
from ns_diffusion_methods.engine.ema import stylegan_ema_decay, update_ema
from ns_diffusion_methods.engine.schedulers import step_decay
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.methods.ssdnerf.diffusion import (
    CodeUNetConfig,
    GaussianSchedule,
    build_unet,
    v_prediction_loss,
)
from ns_diffusion_methods.metrics.image import psnr_from_mse
from ns_diffusion_methods.triplane.decoder import TriplaneMLPDecoder
from ns_diffusion_methods.triplane.rendering import BoxVolumeRendererConfig


@dataclass
class SSDNeRFModelConfig(ModelConfig):
    """SSDNeRF's codes, decoder, diffusion prior and losses (defaults: the paper's SRN cars reconstruction model)."""

    _target: Type = field(default_factory=lambda: SSDNeRFModel)
    enable_collider: bool = False
    """Near/far come from the object's box, not from nerfstudio's collider."""
    code_channels: int = 6
    """C: channels per plane (paper: 6)."""
    code_resolution: int = 128
    """R: plane resolution (paper: 128)."""
    code_activation: Literal["tanh", "identity"] = "tanh"
    """code = scale * tanh(code_pre) (paper), or the "notanh" ablation (identity)."""
    code_scale: float = 2.0
    """Scale of the tanh activation: codes lie in (-scale, scale) (paper: 2)."""
    code_init_scale: float = 1e-4
    """code_pre starts uniform in [-init, init] (paper: 1e-4)."""
    decoder_hidden_dim: int = 64
    """Width of the decoder MLP (paper: 64)."""
    sh_degree: int = 4
    """Spherical-harmonics degree of the decoder's direction encoding (paper: 4)."""
    renderer: BoxVolumeRendererConfig = field(default_factory=lambda: BoxVolumeRendererConfig(
        bound=1.0, min_near=0.2, num_samples=64, num_importance_samples=64))
    """Volume rendering inside the [-1, 1]^3 box, white background."""
    unet: CodeUNetConfig = field(default_factory=CodeUNetConfig)
    """The diffusion U-Net."""
    num_timesteps: int = 1000
    """T (paper: 1000)."""
    beta_start: float = 1e-4
    """First beta of the linear schedule."""
    beta_end: float = 2e-2
    """Last beta of the linear schedule."""
    snr_power: float = 0.5
    """omega in the timestep weighting (alpha/sigma)^(2 omega) (paper: 0.5 cars/tables, 0.25 chairs)."""
    diffusion_loss_weight: float = 4.0
    """c_diff: the diffusion loss is c_diff / EMA(mean x0^2) times the weighted v-MSE (paper: 4)."""
    diffusion_norm_momentum: float = 0.001
    """Momentum of the EMA of mean(x0^2) (paper: 0.001)."""
    freeze_norm_after: int = -1
    """Stop updating that EMA after this many iterations (paper: 100k for 1M-iteration runs; -1 never)."""
    pixel_loss_weight: float = 20.0
    """Rendering-loss weight: MSE * weight * 3 * (1 - exp(-0.1 N_v)) (paper: 20), where N_v = rendered pixels of the
    object / ``pixels_per_reference_view`` (see there)."""
    pixels_per_reference_view: int = 128 * 128
    """Pixels that count as one view in N_v of the rendering-loss weight (official code: loss_coef = 0.1 / 128^2, so
    N_v = pixels / 128^2 at every resolution; it equals the number of views only for 128 x 128 images)."""
    code_reg_weight: float = 3e-3
    """L2 regulariser on the activated codes, weight * mean(code^2) (paper: 3e-3)."""
    loss_weight_milestones: Tuple[int, ...] = ()
    """Training iterations at which ``pixel_loss_weight`` and ``code_reg_weight`` are both multiplied by
    ``loss_weight_gamma`` (paper uncond: 500k, i.e. 20 -> 10 and 3e-3 -> 1.5e-3; recons: none). Test-time
    reconstruction and fine-tuning use the configured weights, as the official test script does."""
    loss_weight_gamma: float = 0.5
    """Factor applied to both weights at each of ``loss_weight_milestones`` (paper uncond: 0.5)."""
    ema_kimg: float = 4.0
    """EMA half-life of the decoder and U-Net in thousands of objects seen (paper: 4)."""
    ema_rampup: float = 0.05
    """EMA ramp-up fraction (paper: 0.05)."""
    eval_use_ema: bool = True
    """Use the EMA decoder and U-Net at test time (paper)."""


class SSDNeRFModel(Model):
    """Per-object triplane codes + shared decoder + diffusion prior; see the module docstring."""

    config: SSDNeRFModelConfig
    codes_pre: Tensor
    code_exp_avg: Tensor
    code_exp_avg_sq: Tensor
    code_steps: Tensor
    diffusion_norm: Tensor

    def populate_modules(self):
        super().populate_modules()
        cfg = self.config
        metadata = self.kwargs.get("metadata") or {}
        if "num_objects" not in metadata:
            raise DataError("ssdnerf needs a multi-object dataset (per-image object indices); use the `srn-data` "
                            "dataparser with the multi-object datamanager, e.g. `ns-train ssdnerf --data DATA "
                            "srn-data`.")
        self.num_objects = int(metadata["num_objects"])
        """Training objects of the whole run (on several GPUs: of all ranks together)."""
        self.shard: Shard = self.kwargs.get("shard") or Shard(self.num_objects)
        """The objects whose codes and Adam states this process holds (all of them in one process)."""
        if self.shard.num_items != self.num_objects:
            raise ValueError(f"shard of {self.shard.num_items} objects for a dataset of {self.num_objects}")
        shape = (self.shard.num_local, 3, cfg.code_channels, cfg.code_resolution, cfg.code_resolution)
        # the per-object buffers (3 x 1.2 MB per object at 128 px: 8.7 GB for SRN cars) are made on the run's device
        # directly, so a GPU run never holds them in host memory on the way
        device = torch.device(self.kwargs.get("device") or "cpu")
        codes = torch.rand(shape, device=device).mul_(2).sub_(1).mul_(cfg.code_init_scale)
        self.register_buffer("codes_pre", codes)
        self.register_buffer("code_exp_avg", torch.zeros(shape, device=device))
        self.register_buffer("code_exp_avg_sq", torch.zeros(shape, device=device))
        self.register_buffer("code_steps", torch.zeros(self.shard.num_local, dtype=torch.long, device=device))
        self.register_buffer("diffusion_norm", torch.ones(1))

        self.decoder = TriplaneMLPDecoder(cfg.code_channels, cfg.decoder_hidden_dim, cfg.sh_degree, reduce="concat")
        self.unet = build_unet(cfg.unet, 3 * cfg.code_channels, cfg.code_resolution)
        self.decoder_ema = copy.deepcopy(self.decoder).requires_grad_(False)
        self.unet_ema = copy.deepcopy(self.unet).requires_grad_(False)
        self.schedule = GaussianSchedule(cfg.num_timesteps, cfg.beta_start, cfg.beta_end)
        self.renderer = cfg.renderer.setup()
        self.active_object = 0
        """Training object shown by ``get_outputs`` (viewer, ``ns-render``)."""
        self.display_code: Optional[Tensor] = None
        """A code ``[3, C, R, R]`` shown instead of a training object (a reconstruction or a sample)."""

    # ------------------------------------------------------------------ codes
    @property
    def code_shape(self) -> Tuple[int, int, int, int]:
        cfg = self.config
        return (3, cfg.code_channels, cfg.code_resolution, cfg.code_resolution)

    def activate(self, code_pre: Tensor) -> Tensor:
        """code = scale * tanh(code_pre) (or identity)."""
        if self.config.code_activation == "tanh":
            return self.config.code_scale * torch.tanh(code_pre)
        return code_pre

    def inverse_activate(self, code: Tensor, margin: float = 1e-6) -> Tensor:
        """code_pre with activate(code_pre) = code, after clamping ``code`` to ``scale * (1 - margin)`` in absolute
        value. The official code applies atanh unclamped, so an element clipped to exactly +-scale becomes +-inf and
        can never move again; a small margin only avoids the infinity (the tanh gradient there, 2 (1 - (1 - margin)^2)
        ~ 4 margin, is still ~0), a margin of a few percent leaves such elements a gradient to move with."""
        if self.config.code_activation == "tanh":
            return torch.atanh((code / self.config.code_scale).clamp(-1 + margin, 1 - margin))
        return code

    def saturated_fraction(self, code: Tensor, threshold: float = 0.995) -> Tensor:
        """Per object ``[B]``: fraction of code elements with ``|code| > threshold * scale`` (1.99 for scale 2), whose
        pre-activation sits where the tanh gradient is below 1 % of its maximum (0 for the identity activation)."""
        if self.config.code_activation != "tanh":
            return torch.zeros(code.shape[0], device=code.device)
        return (code.abs() > threshold * self.config.code_scale).flatten(1).float().mean(dim=1)

    def code_to_image(self, code: Tensor) -> Tensor:
        """``[B, 3, C, R, R] -> [B, 3C, R, R]``: the planes stacked on the channel axis, for the U-Net."""
        return code.reshape(code.shape[0], -1, *code.shape[-2:])

    def image_to_code(self, image: Tensor) -> Tensor:
        """``[B, 3C, R, R] -> [B, 3, C, R, R]``."""
        return image.reshape(image.shape[0], *self.code_shape)

    def mean_code(self) -> Tensor:
        """The mean activated code of the training objects, ``[3, C, R, R]`` (the mean-code baseline; during
        training on several GPUs, the mean over this rank's objects)."""
        return self.activate(self.codes_pre).mean(dim=0)

    def code_rows(self, object_indices: Tensor) -> Tensor:
        """Rows of the per-object buffers holding training objects ``object_indices`` (global indices, owned by this
        process), on the buffers' device."""
        return self.shard.local(torch.as_tensor(object_indices).cpu()).to(self.codes_pre.device)

    def object_codes_pre(self, object_indices: Tensor) -> Tensor:
        """``[B, 3, C, R, R]`` pre-activation codes of training objects ``object_indices`` (a copy)."""
        return self.codes_pre[self.code_rows(object_indices)]

    @torch.no_grad()
    def code_adam_step(self, object_indices: Tensor, grad: Tensor, lr: float,
                       betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> Tensor:
        """One Adam step on the codes of ``object_indices`` with each object's own state (torch.optim.Adam's update,
        with per-object step counts for the bias correction).

        Args:
            object_indices: ``[B]`` distinct training objects (global indices, owned by this process).
            grad: ``[B, 3, C, R, R]`` gradient w.r.t. their ``codes_pre``.
            lr: learning rate.

        Returns:
            The updated ``codes_pre`` of these objects (also written to the buffer).
        """
        idx = self.code_rows(object_indices)
        beta1, beta2 = betas
        steps = self.code_steps[idx] + 1
        exp_avg = self.code_exp_avg[idx].mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq = self.code_exp_avg_sq[idx].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        shape = (-1,) + (1,) * (grad.dim() - 1)
        # bias corrections in float64: 1 - 0.999^k loses digits in float32
        bias1 = (1 - beta1 ** steps.to(torch.float64)).reshape(shape)
        bias2_sqrt = (1 - beta2 ** steps.to(torch.float64)).sqrt().reshape(shape)
        denom = exp_avg_sq.sqrt() / bias2_sqrt.to(grad.dtype) + eps
        codes = self.codes_pre[idx] - (lr / bias1).to(grad.dtype) * exp_avg / denom
        self.code_exp_avg[idx] = exp_avg
        self.code_exp_avg_sq[idx] = exp_avg_sq
        self.code_steps[idx] = steps
        self.codes_pre[idx] = codes
        return codes

    # ------------------------------------------------------------------ losses
    def diffusion_loss(self, code: Tensor, weight: Optional[float] = None, t: Optional[Tensor] = None,
                       noise: Optional[Tensor] = None, unet: Optional[nn.Module] = None,
                       update_norm: bool = False) -> Tensor:
        """Per-object diffusion loss ``[B]``: c_diff * weighted v-MSE / EMA(mean x0^2).

        Args:
            code: ``[B, 3, C, R, R]`` activated codes (x0); gradients flow to it through x_t and the target.
            weight: c_diff (default: the training value from the config).
            t: ``[B]`` timesteps (default: uniform).
            noise: ``[B, 3C, R, R]`` (default: standard normal).
            unet: the denoiser (default: the trained U-Net).
            update_norm: update the EMA of mean(x0^2) with this batch first (training only; on several GPUs every
                rank must call it together: the batch mean is averaged over the ranks).
        """
        x0 = self.code_to_image(code)
        if update_norm:
            with torch.no_grad():
                m = self.config.diffusion_norm_momentum
                # on several GPUs, the mean over every rank's batch (all ranks keep the same normaliser)
                batch_mean = mean_over_ranks(x0.detach().square().mean(), self.shard.world_size)
                self.diffusion_norm.mul_(1 - m).add_(m * batch_mean)
        if t is None:
            t = torch.randint(0, self.config.num_timesteps, (x0.shape[0],), device=x0.device)
        if noise is None:
            noise = torch.randn_like(x0)
        unet = self.unet if unet is None else unet
        loss = v_prediction_loss(unet, self.schedule, x0, t, noise, self.config.snr_power)
        weight = self.config.diffusion_loss_weight if weight is None else weight
        return loss * weight / self.diffusion_norm

    def loss_weight_scale(self, step: Optional[int] = None) -> float:
        """Factor on the pixel-loss and regulariser weights at training iteration ``step``: ``loss_weight_gamma`` to
        the number of ``loss_weight_milestones`` reached (1 for ``step=None``: test time)."""
        if step is None:
            return 1.0
        return step_decay(step, tuple(self.config.loss_weight_milestones), self.config.loss_weight_gamma)

    def rendering_weight(self, num_pixels: Tensor, step: Optional[int] = None) -> Tensor:
        """lambda_rend of the official code: ``pixel_loss_weight * 3 * (1 - exp(-0.1 * num_pixels / 128^2))``
        (``pixels_per_reference_view`` in place of 128^2); saturates with the number of (reference-size) views.
        ``step``: the training iteration, for the loss-weight schedule (:meth:`loss_weight_scale`)."""
        n_v = num_pixels.to(torch.float64) / float(self.config.pixels_per_reference_view)
        pixel_weight = self.config.pixel_loss_weight * self.loss_weight_scale(step)
        return pixel_weight * 3.0 * (1.0 - torch.exp(-0.1 * n_v))

    def rendering_loss(self, rgb: Tensor, target: Tensor, num_pixels: Tensor, step: Optional[int] = None) -> Tensor:
        """Per-object rendering loss ``[B]``: mean squared error over rays and channels * :meth:`rendering_weight`.

        Args:
            rgb, target: ``[B, N, 3]``.
            num_pixels: ``[B]`` N_v numerator as the official code counts it: the pixels of the views the rays are
                drawn from (training and fine-tuning: views x H x W), or the rays rendered per step (guidance).
            step: the training iteration, for the loss-weight schedule (None: the configured weight).
        """
        mse = (rgb - target).square().flatten(1).mean(dim=1)
        return mse * self.rendering_weight(num_pixels, step).to(mse)

    def code_reg_loss(self, code: Tensor, step: Optional[int] = None) -> Tensor:
        """Per-object L2 regulariser ``[B]``: weight * mean(code^2); ``step``: the training iteration, for the
        loss-weight schedule (None: the configured weight)."""
        weight = self.config.code_reg_weight * self.loss_weight_scale(step)
        return weight * code.square().flatten(1).mean(dim=1)

    # ------------------------------------------------------------------ rendering
    def render_rays(self, code: Tensor, origins: Tensor, directions: Tensor, decoder: Optional[nn.Module] = None,
                    perturb: bool = False, generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Render rays of B objects: ``code [B, 3, C, R, R]``, ``origins``/``directions`` ``[B, N, 3]``.

        Returns ``rgb [B, N, 3]``, ``accumulation [B, N, 1]``, ``depth [B, N, 1]``.
        """
        decoder = self.decoder if decoder is None else decoder
        return self.renderer(decoder.bind(code), origins, directions, perturb=perturb, generator=generator)

    @torch.no_grad()
    def render_rays_chunked(self, code: Tensor, origins: Tensor, directions: Tensor,
                            decoder: Optional[nn.Module] = None) -> Dict[str, Tensor]:
        """:meth:`render_rays` without gradients, in chunks."""
        decoder = self.decoder if decoder is None else decoder
        return self.renderer.render_chunked(decoder.bind(code), origins, directions)

    @property
    def eval_decoder(self) -> nn.Module:
        return self.decoder_ema if self.config.eval_use_ema else self.decoder

    @property
    def eval_unet(self) -> nn.Module:
        return self.unet_ema if self.config.eval_use_ema else self.unet

    @torch.no_grad()
    def update_ema(self, step: int, batch_size: int) -> float:
        """EMA update of the decoder and U-Net; returns the momentum used."""
        beta = stylegan_ema_decay(step, batch_size, self.config.ema_kimg, self.config.ema_rampup)
        update_ema(self.decoder_ema, self.decoder, beta)
        update_ema(self.unet_ema, self.unet, beta)
        return beta

    # ------------------------------------------------------------------ nerfstudio Model API
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # the per-object buffers chunk by chunk (float32 or bfloat16 moments), then nn.Module's loading of the rest
        from ns_diffusion_methods.methods.ssdnerf.checkpoints import load_code_state

        load_code_state(self, state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        # The codes are not here: each object's code is stepped by its own Adam (code_adam_step).
        return {"decoder": list(self.decoder.parameters()), "diffusion": list(self.unet.parameters())}

    def shown_code(self) -> Tensor:
        """The code ``get_outputs`` renders: :attr:`display_code`, else training object :attr:`active_object`."""
        if self.display_code is not None:
            return self.display_code.to(self.codes_pre)
        index = min(max(int(self.active_object), 0), self.num_objects - 1)
        if not self.shard.owns(index):  # training on several GPUs: the nearest object of this rank
            index = max(index - (index - self.shard.rank) % self.shard.world_size, self.shard.rank)
        return self.activate(self.object_codes_pre(torch.tensor([index]))[0])

    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        """Render the shown code (a training object chosen in the viewer, or a reconstruction) along the rays."""
        code = self.shown_code()[None]
        origins = ray_bundle.origins.reshape(1, -1, 3)
        directions = ray_bundle.directions.reshape(1, -1, 3)
        decoder = self.decoder if self.training else self.eval_decoder
        out = self.render_rays(code, origins, directions, decoder=decoder, perturb=False)
        batch_shape = ray_bundle.origins.shape[:-1]
        return {key: value.reshape(*batch_shape, value.shape[-1]) for key, value in out.items()}

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        mse = (outputs["rgb"] - batch["image"].to(outputs["rgb"])).square().mean()
        return {"psnr": psnr_from_mse(mse)}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        return {"rgb_loss": (outputs["rgb"] - batch["image"].to(outputs["rgb"])).square().mean()}

    def get_image_metrics_and_images(self, outputs: Dict[str, Tensor],
                                     batch: Dict[str, Tensor]) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        from ns_diffusion_methods.methods.ssdnerf.metrics import image_metrics

        gt = batch["image"].to(outputs["rgb"])
        metrics = image_metrics(outputs["rgb"], gt)
        return metrics, {"img": torch.cat([gt, outputs["rgb"].clamp(0, 1)], dim=1),
                         "accumulation": outputs["accumulation"]}

