"""RenderDiffusion's test-time procedures, written against a denoiser g_θ (see :class:`Denoiser`).

- :func:`reconstruct`: single-view 3D reconstruction. Noise the input to ``t_r`` (0 = no noise, one clean pass),
  run the reverse process down to 0 and keep the triplane of the final denoising step.
- :func:`generate`: unconditional generation from x_T ~ N(0, I) at a sampled camera ("gen. view"); the triplane of
  the final step is the generated object.
- :func:`inpaint`: 3D-aware inpainting, RePaint-style: at every reverse step the known pixels of x_{t-1} are the
  forward-noised target and the unknown ones come from the model's reverse step; optional RePaint resampling.
- :func:`render_views`: render any cameras from a triplane (turntables, novel views).

Images at this interface are in [0, 1], ``[B, 3, H, W]``; the diffusion runs in [-1, 1]. Cameras are batched
tensors: ``camera_to_worlds [B, 3, 4]`` (OpenGL) and ``intrinsics [B, 4]`` (fx, fy, cx, cy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Protocol, Tuple

import torch
from torch import Tensor

from ns_diffusion_methods.engine.progress import StepCallback
from ns_diffusion_methods.methods.renderdiffusion.diffusion import ImageDiffusion


@dataclass
class Triplanes:
    """Triplanes and the frames they live in."""

    planes: Tensor
    """``[B, 3, n_f, N, N]`` feature planes."""
    rotations: Tensor
    """``[B, 3, 3]`` world -> triplane-frame rotations (identity in the world frame)."""

    def __getitem__(self, index) -> "Triplanes":
        return Triplanes(self.planes[index], self.rotations[index])


class Denoiser(Protocol):
    """What the procedures need from g_θ = ρ_ψ ∘ e_φ."""

    def encode(self, noisy_image: Tensor, timesteps: Tensor, camera_to_worlds: Tensor,
               intrinsics: Tensor) -> Triplanes:
        """e_φ: ``[B, 3, H, W]`` x_t in [-1, 1] -> triplanes."""

    def render(self, triplanes: Triplanes, camera_to_worlds: Tensor, intrinsics: Tensor, height: int, width: int,
               pixel_indices: Optional[Tensor] = None) -> dict:
        """ρ_ψ: render cameras ``[B, 3, 4]``; returns at least ``rgb [B, R, 3]`` in [0, 1]."""

    def render_rays(self, triplanes: Triplanes, origins: Tensor, directions: Tensor) -> dict:
        """ρ_ψ on world-frame rays ``[B, R, 3]`` (ray batch b through triplane b); returns at least
        ``rgb [B, R, 3]``."""


def _to_image(rgb: Tensor, height: int, width: int) -> Tensor:
    """``[B, H*W, 3]`` -> ``[B, 3, H, W]``."""
    return rgb.permute(0, 2, 1).reshape(rgb.shape[0], 3, height, width)


def denoise(denoiser: Denoiser, noisy_image: Tensor, timestep: int, camera_to_worlds: Tensor,
            intrinsics: Tensor) -> Tuple[Tensor, Triplanes]:
    """One pass of g_θ at the input cameras: x_t -> (x̂₀ ``[B, 3, H, W]`` in [-1, 1], triplanes)."""
    B, _, H, W = noisy_image.shape
    t = torch.full((B,), int(timestep), dtype=torch.long, device=noisy_image.device)
    triplanes = denoiser.encode(noisy_image, t, camera_to_worlds, intrinsics)
    rgb = denoiser.render(triplanes, camera_to_worlds, intrinsics, H, W)["rgb"]
    return _to_image(rgb, H, W) * 2 - 1, triplanes


def reverse_process(denoiser: Denoiser, diffusion: ImageDiffusion, sample: Tensor, timesteps: List[int],
                    camera_to_worlds: Tensor, intrinsics: Tensor, known: Optional[Tensor] = None,
                    known_mask: Optional[Tensor] = None, resample: int = 1,
                    generator: Optional[torch.Generator] = None,
                    on_step: Optional[StepCallback] = None) -> Tuple[Tensor, Triplanes]:
    """Run the reverse chain ``timesteps`` (descending, ending at 0) from ``sample`` = x_{timesteps[0]}.

    Args:
        denoiser: g_θ.
        diffusion: the schedule.
        sample: ``[B, 3, H, W]`` x_t at the first timestep, in the diffusion's [-1, 1] domain.
        timesteps: the chain, e.g. :meth:`ImageDiffusion.timesteps_from`.
        camera_to_worlds: ``[B, 3, 4]`` the input ("gen.") cameras.
        intrinsics: ``[B, 4]``.
        known: ``[B, 3, H, W]`` RePaint target in [-1, 1] (inpainting), or None.
        known_mask: ``[B, 1, H, W]`` 1 on known pixels (with ``known``).
        resample: RePaint resampling count U per step (1 = none).
        generator: random source.
        on_step: called as ``on_step(done, len(timesteps))`` after each timestep (progress bars).

    Returns:
        The final x̂₀ ``[B, 3, H, W]`` in [-1, 1] and the triplanes of the final denoising step.
    """
    if (known is None) != (known_mask is None):
        raise ValueError("`known` and `known_mask` must be given together.")
    x0_pred, triplanes = None, None
    for index, t in enumerate(timesteps):
        for round_ in range(max(1, resample)):
            x0_pred, triplanes = denoise(denoiser, sample, t, camera_to_worlds, intrinsics)
            if index == len(timesteps) - 1:
                break  # the last pass gives the final triplane; nothing left to sample
            if known is None:
                previous_sample = diffusion.step(x0_pred, t, sample, timesteps, generator=generator)
            else:
                previous_sample = diffusion.repaint_step(x0_pred, t, sample, timesteps, known, known_mask,
                                                         generator=generator)
            if round_ < resample - 1:  # RePaint: jump back to t and denoise again
                sample = diffusion.renoise(previous_sample, timesteps[index + 1], t, generator=generator)
            else:
                sample = previous_sample
        if on_step is not None:
            on_step(index + 1, len(timesteps))
    assert x0_pred is not None and triplanes is not None
    return x0_pred, triplanes


@torch.no_grad()
def reconstruct(denoiser: Denoiser, diffusion: ImageDiffusion, image: Tensor, camera_to_worlds: Tensor,
                intrinsics: Tensor, t_r: int = 0, num_steps: Optional[int] = None,
                generator: Optional[torch.Generator] = None,
                on_step: Optional[StepCallback] = None) -> Tuple[Triplanes, Tensor]:
    """Single-view reconstruction: q(x_{t_r} | x₀), reverse to 0, keep the final triplane.

    Args:
        image: ``[B, 3, H, W]`` input views in [0, 1].
        t_r: the noise level (0: one clean pass; the paper uses 40 for real photos).
        num_steps: reverse steps from t_r to 0 (default: the schedule's inference density).

    Returns:
        Triplanes and the final denoised input view ``[B, 3, H, W]`` in [0, 1].
    """
    x0 = image * 2 - 1
    if t_r > 0:
        noise = torch.randn(x0.shape, generator=generator, device=generator.device if generator else x0.device,
                            dtype=x0.dtype).to(x0.device)
        sample = diffusion.add_noise(x0, noise, torch.full((x0.shape[0],), t_r, dtype=torch.long,
                                                           device=x0.device))
    else:
        sample = x0
    timesteps = diffusion.timesteps_from(t_r, num_steps)
    x0_pred, triplanes = reverse_process(denoiser, diffusion, sample, timesteps, camera_to_worlds, intrinsics,
                                         generator=generator, on_step=on_step)
    return triplanes, (x0_pred.clamp(-1, 1) + 1) / 2


@torch.no_grad()
def generate(denoiser: Denoiser, diffusion: ImageDiffusion, camera_to_worlds: Tensor, intrinsics: Tensor,
             height: int, width: int, num_steps: Optional[int] = None,
             generator: Optional[torch.Generator] = None,
             on_step: Optional[StepCallback] = None) -> Tuple[Triplanes, Tensor]:
    """Unconditional generation at the "gen. view" cameras ``[B, 3, 4]``.

    Returns:
        The generated triplanes and the final image at the gen. view ``[B, 3, H, W]`` in [0, 1].
    """
    B = camera_to_worlds.shape[0]
    device = camera_to_worlds.device
    sample = torch.randn((B, 3, height, width), generator=generator,
                         device=generator.device if generator else device).to(device)
    timesteps = diffusion.timesteps_from(diffusion.num_train_timesteps - 1, num_steps)
    x0_pred, triplanes = reverse_process(denoiser, diffusion, sample, timesteps, camera_to_worlds, intrinsics,
                                         generator=generator, on_step=on_step)
    return triplanes, (x0_pred.clamp(-1, 1) + 1) / 2


@torch.no_grad()
def inpaint(denoiser: Denoiser, diffusion: ImageDiffusion, image: Tensor, mask: Tensor, camera_to_worlds: Tensor,
            intrinsics: Tensor, num_steps: Optional[int] = None, resample: int = 1,
            generator: Optional[torch.Generator] = None,
            on_step: Optional[StepCallback] = None) -> Tuple[Triplanes, Tensor, Tensor]:
    """3D-aware RePaint inpainting.

    Args:
        image: ``[B, 3, H, W]`` in [0, 1] (its masked pixels are never read).
        mask: ``[B, 1, H, W]``, 1 where the pixel is to be inpainted (unknown), 0 where it is kept.
        num_steps: reverse steps from T-1 to 0.
        resample: RePaint resamplings per step (1 = none; the paper does not say whether it resamples).

    Returns:
        Triplanes of the final step, the inpainted image (known pixels kept, unknown pixels from the final render)
        and the final render at the input camera, both ``[B, 3, H, W]`` in [0, 1].
    """
    if mask.shape[1] != 1 or mask.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"`mask` must be [B, 1, H, W] matching `image` {tuple(image.shape)}, but is "
                         f"{tuple(mask.shape)}.")
    known = image * 2 - 1
    known_mask = 1 - mask.to(image.dtype)
    B, _, H, W = image.shape
    device = image.device
    sample = torch.randn((B, 3, H, W), generator=generator,
                         device=generator.device if generator else device).to(device)
    timesteps = diffusion.timesteps_from(diffusion.num_train_timesteps - 1, num_steps)
    x0_pred, triplanes = reverse_process(denoiser, diffusion, sample, timesteps, camera_to_worlds, intrinsics,
                                         known=known, known_mask=known_mask, resample=resample,
                                         generator=generator, on_step=on_step)
    render = (x0_pred.clamp(-1, 1) + 1) / 2
    inpainted = known_mask * image + (1 - known_mask) * render
    return triplanes, inpainted, render


@torch.no_grad()
def render_views(denoiser: Denoiser, triplanes: Triplanes, camera_to_worlds: Tensor, intrinsics: Tensor,
                 height: int, width: int, rays_per_chunk: int = 4096) -> Tensor:
    """Render V cameras per triplane.

    Each triplane is rendered once per chunk of views: the rays of several views go through the one triplane as a
    single ray batch (``denoiser.render_rays``), so memory does not grow with V (no copy of the planes per view).

    Args:
        triplanes: B triplanes.
        camera_to_worlds: ``[B, V, 3, 4]``.
        intrinsics: ``[B, V, 4]``.
        rays_per_chunk: rays rendered at once (at least one whole view).

    Returns:
        ``[B, V, 3, H, W]`` in [0, 1].
    """
    from ns_diffusion_methods.methods.renderdiffusion.geometry import pixel_rays

    B, V = camera_to_worlds.shape[:2]
    pixels = height * width
    per_chunk = max(1, rays_per_chunk // pixels)
    out = []
    for b in range(B):
        one = triplanes[b: b + 1]
        images = []
        for start in range(0, V, per_chunk):
            c2w, K = camera_to_worlds[b, start: start + per_chunk], intrinsics[b, start: start + per_chunk]
            origins, directions = pixel_rays(c2w, K, height, width)  # [v, H*W, 3]
            v = origins.shape[0]
            rgb = denoiser.render_rays(one, origins.reshape(1, v * pixels, 3),
                                       directions.reshape(1, v * pixels, 3))["rgb"]
            images.append(_to_image(rgb.reshape(v, pixels, 3), height, width))
        out.append(torch.cat(images))
    return torch.stack(out).clamp(0, 1)
