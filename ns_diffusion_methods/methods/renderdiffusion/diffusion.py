"""The image diffusion process of RenderDiffusion: DDPM on images in [-1, 1] with x₀-prediction.

The denoiser renders an image, so it predicts x₀ directly (``prediction_type="sample"``) and the training loss is
the image MSE ‖g_θ(x_t, v) − x₀‖². T = 1000. The paper does not state the β schedule; the default is the DDPM
linear schedule (β from 1e-4 to 0.02), and diffusers' other schedules are a flag away.

Sampling is DDPM ancestral sampling with the posterior q(x_{t'} | x_t, x̂₀) over a descending list of timesteps (all
T, or a strided subset: diffusers' ``DDPMScheduler`` with custom timesteps computes the posterior between any two
steps). :meth:`ImageDiffusion.repaint_step` is the RePaint step used for 3D-aware inpainting: the unknown pixels
of x_{t'} come from that posterior, the known pixels are the target forward-noised to t' (fresh noise), and t' = -1
(the end) means the clean target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, List, Literal, Optional, Type

import torch
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

if TYPE_CHECKING:
    from diffusers import DDPMScheduler


@dataclass
class ImageDiffusionConfig(InstantiateConfig):
    """DDPM schedule and sampler settings."""

    _target: Type = field(default_factory=lambda: ImageDiffusion)
    num_train_timesteps: int = 1000
    """T, the number of diffusion steps (the paper: 1000)."""
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "linear"
    """β schedule (unverified in the paper; DDPM's linear schedule by default, ``squaredcos_cap_v2`` is cosine)."""
    beta_start: float = 1e-4
    """First β of the linear schedules."""
    beta_end: float = 0.02
    """Last β of the linear schedules."""
    clip_sample: bool = True
    """Clamp x̂₀ to [-1, 1] in the posterior (a rendered image already lies there, up to the colour padding)."""
    num_inference_steps: int = 1000
    """Reverse steps of generation and inpainting (1000 = every step, as in DDPM; fewer = strided DDPM)."""
    timestep_sampling_power: float = 1.0
    """Training timesteps are t = floor(T · u^p), u ~ U(0, 1): p = 1 is DDPM's uniform sampling (the paper's); p > 1
    spends more steps at low noise, where single-view reconstruction (t_r = 0) operates (used by the small preset
    to learn reconstruction in few steps)."""


class ImageDiffusion:
    """Forward noising, timestep lists and reverse (plain and RePaint) steps for x₀-predicting denoisers.

    Not an ``nn.Module``: it has no weights and nothing to checkpoint; everything follows from the config.
    """

    def __init__(self, config: ImageDiffusionConfig) -> None:
        self.config = config
        from diffusers import DDPMScheduler  # here, not at import: the method registry must stay light

        self.scheduler = DDPMScheduler(num_train_timesteps=config.num_train_timesteps,
                                       beta_schedule=config.beta_schedule, beta_start=config.beta_start,
                                       beta_end=config.beta_end, prediction_type="sample",
                                       clip_sample=config.clip_sample, variance_type="fixed_small")
        self.alphas_cumprod = self.scheduler.alphas_cumprod.clone()  # [T], ᾱ_t

    @property
    def num_train_timesteps(self) -> int:
        """T."""
        return self.config.num_train_timesteps

    def sample_timesteps(self, batch_size: int, device: torch.device,
                         generator: Optional[torch.Generator] = None) -> Tensor:
        """Training timesteps in {0, ..., T-1}, ``[B]`` long: uniform, or skewed to low noise by
        ``timestep_sampling_power``."""
        u = torch.rand(batch_size, device=generator.device if generator else device, generator=generator)
        t = (self.num_train_timesteps * u ** self.config.timestep_sampling_power).long()
        return t.clamp(max=self.num_train_timesteps - 1).to(device)

    def add_noise(self, x0: Tensor, noise: Tensor, timesteps: Tensor) -> Tensor:
        """q(x_t | x₀) = √ᾱ_t x₀ + √(1-ᾱ_t) ε, per sample; a timestep of -1 returns x₀ itself.

        Args:
            x0: ``[B, ...]`` clean samples.
            noise: ε, same shape.
            timesteps: ``[B]`` long, in {-1, ..., T-1}.
        """
        alphas = self.alphas_cumprod.to(device=x0.device, dtype=x0.dtype)
        abar = torch.where(timesteps >= 0, alphas[timesteps.clamp(min=0)], torch.ones_like(alphas[:1]))
        abar = abar.reshape(-1, *([1] * (x0.dim() - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def timesteps_from(self, start: int, num_steps: Optional[int] = None) -> List[int]:
        """Descending timesteps from ``start`` to 0 (both included), ``num_steps`` of them (default: the config's
        ``num_inference_steps``, scaled to the length of the chain and capped at ``start + 1``).

        ``start = T - 1`` gives the generation chain; ``start = t_r`` the reconstruction chain; ``start = 0`` a
        single clean pass.
        """
        if not 0 <= start < self.num_train_timesteps:
            raise ValueError(f"The start timestep must be in [0, {self.num_train_timesteps - 1}], but is {start}.")
        if num_steps is None:
            fraction = (start + 1) / self.num_train_timesteps
            num_steps = max(1, round(self.config.num_inference_steps * fraction))
        num_steps = max(1, min(num_steps, start + 1))
        if num_steps == 1:
            return [start]
        steps = torch.linspace(start, 0, num_steps).round().long().tolist()
        return sorted(set(steps), reverse=True)

    def _scheduler_for(self, timesteps: List[int]) -> DDPMScheduler:
        from diffusers import DDPMScheduler

        scheduler = DDPMScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(timesteps=timesteps)
        return scheduler

    def previous_timestep(self, timesteps: List[int], index: int) -> int:
        """The step after ``timesteps[index]`` in the chain; -1 after the last one."""
        return timesteps[index + 1] if index + 1 < len(timesteps) else -1

    def step(self, x0_pred: Tensor, timestep: int, sample: Tensor, timesteps: List[int],
             generator: Optional[torch.Generator] = None) -> Tensor:
        """One ancestral step x_t -> x_{t'} with the posterior q(x_{t'} | x_t, x̂₀), t' the next entry of
        ``timesteps`` (or the clean x̂₀ after the last)."""
        scheduler = self._scheduler_for(timesteps)
        return scheduler.step(x0_pred, timestep, sample, generator=generator).prev_sample

    def repaint_step(self, x0_pred: Tensor, timestep: int, sample: Tensor, timesteps: List[int], known: Tensor,
                     known_mask: Tensor, generator: Optional[torch.Generator] = None) -> Tensor:
        """RePaint: x_{t'} = m ⊙ q(x_{t'} | x₀^known) + (1 − m) ⊙ posterior sample.

        Args:
            x0_pred: ``[B, 3, H, W]`` the denoiser's x̂₀ at ``timestep``.
            timestep: t.
            sample: x_t.
            timesteps: the chain (descending).
            known: ``[B, 3, H, W]`` the target image in [-1, 1] (only its known pixels are read).
            known_mask: ``[B, 1, H, W]``, 1 where the pixel is known.
            generator: random source for both noises.

        Returns:
            x_{t'}; at the end of the chain its known pixels equal ``known`` exactly.
        """
        unknown = self.step(x0_pred, timestep, sample, timesteps, generator=generator)
        previous = self.previous_timestep(timesteps, timesteps.index(timestep))
        noise = torch.randn(known.shape, generator=generator, device=generator.device if generator else known.device,
                            dtype=known.dtype).to(known.device)
        prev = torch.full((known.shape[0],), previous, dtype=torch.long, device=known.device)
        known_noised = self.add_noise(known, noise, prev)
        return known_mask * known_noised + (1 - known_mask) * unknown

    def renoise(self, sample: Tensor, from_timestep: int, to_timestep: int,
                generator: Optional[torch.Generator] = None) -> Tensor:
        """q(x_t | x_{t'}) for t > t' (RePaint's resampling "jump" back up the chain)."""
        alphas = self.alphas_cumprod.to(device=sample.device, dtype=sample.dtype)
        abar_from = alphas[from_timestep] if from_timestep >= 0 else torch.ones_like(alphas[0])
        ratio = alphas[to_timestep] / abar_from
        noise = torch.randn(sample.shape, generator=generator, device=generator.device if generator
                            else sample.device, dtype=sample.dtype).to(sample.device)
        return ratio.sqrt() * sample + (1 - ratio).sqrt() * noise
