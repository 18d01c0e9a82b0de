"""The diffusion prior over triplane codes: U-Net, noise schedule, v-prediction loss, DDIM sampling.

Conventions (SSDNeRF's code): linear betas 1e-4..2e-2 over T = 1000 steps, alpha_t = sqrt(abar_t), sigma_t =
sqrt(1 - abar_t), x_t = alpha_t x_0 + sigma_t eps. The U-Net predicts v = alpha_t eps - sigma_t x_0, so
x0_hat = alpha_t x_t - sigma_t v_hat. The loss of a sample is ``0.5 * mean((v_hat - v)^2) * (alpha/sigma)^(2w) *
sigma^2``, which equals ``(alpha/sigma)^(2w)`` times the x_0 error (the paper's timestep weighting, power w).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Tuple

import torch
from nerfstudio.configs.base_config import PrintableConfig
from torch import Tensor, nn

if TYPE_CHECKING:
    from diffusers import UNet2DModel


@dataclass
class CodeUNetConfig(PrintableConfig):
    """The denoiser over codes (an ADM-style U-Net, built with diffusers' ``UNet2DModel``). Paper: 122 M parameters."""

    block_out_channels: Tuple[int, ...] = (128, 256, 256, 512, 512)
    """Channels per resolution level (paper: base 128, multipliers 1, 2, 2, 4, 4 -> 128/64/32/16/8 px for 128 px
    codes)."""
    layers_per_block: int = 2
    """Residual blocks per level on the encoder side (the decoder side gets one more, as in ADM)."""
    attention_resolutions: Tuple[int, ...] = (32, 16, 8)
    """Code resolutions (pixels) whose levels get self-attention (paper: 32, 16, 8)."""
    attention_head_dim: int = 64
    """Channels per attention head. The paper uses 4 heads per attention layer; diffusers fixes the head size
    instead, so 64 gives 4 heads at 256 channels and 8 at 512."""
    dropout: float = 0.1
    """Dropout in the residual blocks (paper: 0.1 for the reconstruction models, 0 for unconditional ones)."""
    norm_num_groups: int = 32
    """GroupNorm groups (paper: 32)."""


def build_unet(config: CodeUNetConfig, channels: int, resolution: int) -> UNet2DModel:
    """A ``UNet2DModel`` from ``channels x resolution x resolution`` codes to a v-prediction of the same shape.

    Scale-shift normalisation from the time embedding, sinusoidal time embedding of dimension ``4 * base``, conv
    down/upsampling, attention at :attr:`CodeUNetConfig.attention_resolutions` (and in the middle block).
    """
    levels = len(config.block_out_channels)
    if resolution % (2 ** (levels - 1)) != 0:
        raise ValueError(f"The code resolution {resolution} must be divisible by 2^{levels - 1} for a U-Net with "
                         f"{levels} levels (block_out_channels={config.block_out_channels}). Change "
                         f"--pipeline.model.unet.block-out-channels or --pipeline.model.code-resolution.")
    resolutions = [resolution // 2**i for i in range(levels)]
    down = tuple("AttnDownBlock2D" if r in config.attention_resolutions else "DownBlock2D" for r in resolutions)
    up = tuple("AttnUpBlock2D" if r in config.attention_resolutions else "UpBlock2D" for r in reversed(resolutions))
    from diffusers import UNet2DModel  # here, not at import: the method registry must stay light

    return UNet2DModel(
        sample_size=resolution, in_channels=channels, out_channels=channels,
        down_block_types=down, up_block_types=up, block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block, attention_head_dim=config.attention_head_dim,
        norm_num_groups=config.norm_num_groups, dropout=config.dropout, resnet_time_scale_shift="scale_shift",
        time_embedding_type="positional", flip_sin_to_cos=True, freq_shift=0,
    )


class GaussianSchedule(nn.Module):
    """alpha_t and sigma_t of a linear-beta DDPM schedule (from diffusers' ``DDPMScheduler``), as buffers."""

    alpha: Tensor
    sigma: Tensor

    def __init__(self, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 2e-2):
        super().__init__()
        self.num_timesteps = num_timesteps
        self.scheduler_config = dict(num_train_timesteps=num_timesteps, beta_start=beta_start, beta_end=beta_end,
                                     beta_schedule="linear", prediction_type="v_prediction")
        from diffusers import DDPMScheduler

        alphas_cumprod = DDPMScheduler(**self.scheduler_config).alphas_cumprod.to(torch.float32)
        self.register_buffer("alpha", alphas_cumprod.sqrt(), persistent=False)
        self.register_buffer("sigma", (1.0 - alphas_cumprod).sqrt(), persistent=False)

    def alpha_sigma(self, t: Tensor, ndim: int = 4) -> Tuple[Tensor, Tensor]:
        """alpha_t and sigma_t for integer timesteps ``t`` (``[B]``), shaped to broadcast over ``ndim`` dims; t = -1
        means "no noise" (alpha 1, sigma 0), the target of DDIM's last step."""
        t = t.long()
        alpha = torch.where(t >= 0, self.alpha[t.clamp(min=0)], torch.ones_like(self.alpha[:1]))
        sigma = torch.where(t >= 0, self.sigma[t.clamp(min=0)], torch.zeros_like(self.sigma[:1]))
        shape = (-1,) + (1,) * (ndim - 1)
        return alpha.reshape(shape), sigma.reshape(shape)

    def ddim_timesteps(self, num_steps: int) -> List[int]:
        """The official sampler's timesteps: ``arange(T - 1, -1, -T / num_steps)`` truncated to integers (999, 979,
        ... 19 for 50 steps; 999, 985, 972, ... for 75)."""
        step = self.num_timesteps / num_steps  # float32 arange, as the official code (float64 differs at 75 steps)
        return torch.arange(start=self.num_timesteps - 1, end=-1, step=-step).long().tolist()

    def snr_weight(self, t: Tensor, power: float, ndim: int = 1) -> Tensor:
        """The loss weight ``(alpha/sigma)^(2 power) * sigma^2`` applied to the v-MSE."""
        alpha, sigma = self.alpha_sigma(t, ndim)
        return (alpha / sigma) ** (2 * power) * sigma**2


def predict_x0(unet: nn.Module, schedule: GaussianSchedule, x_t: Tensor, t: Tensor) -> Tensor:
    """x0_hat = alpha_t x_t - sigma_t v_hat(x_t, t)."""
    alpha, sigma = schedule.alpha_sigma(t, x_t.dim())
    v_hat = unet(x_t, t).sample
    return alpha * x_t - sigma * v_hat


def v_prediction_loss(unet: nn.Module, schedule: GaussianSchedule, x0: Tensor, t: Tensor, noise: Tensor,
                      snr_power: float) -> Tensor:
    """Per-sample weighted v-prediction loss ``[B]`` (gradients reach ``x0`` through both x_t and the target v)."""
    alpha, sigma = schedule.alpha_sigma(t, x0.dim())
    x_t = alpha * x0 + sigma * noise
    v = alpha * noise - sigma * x0
    v_hat = unet(x_t, t).sample
    mse = 0.5 * (v_hat - v).square().flatten(1).mean(dim=1)
    return mse * schedule.snr_weight(t, snr_power)


def ddim_step(x0_hat: Tensor, x_t: Tensor, t: Tensor, t_prev: Tensor, schedule: GaussianSchedule) -> Tensor:
    """Deterministic DDIM step (eta = 0) from x_t to x_{t_prev}, given the (clipped, possibly guided) x0_hat; the
    noise estimate is re-derived from x0_hat."""
    alpha, sigma = schedule.alpha_sigma(t, x_t.dim())
    alpha_prev, sigma_prev = schedule.alpha_sigma(t_prev, x_t.dim())
    eps_hat = (x_t - alpha * x0_hat) / sigma
    return alpha_prev * x0_hat + sigma_prev * eps_hat


__all__ = ["CodeUNetConfig", "GaussianSchedule", "build_unet", "ddim_step", "predict_x0", "v_prediction_loss"]
