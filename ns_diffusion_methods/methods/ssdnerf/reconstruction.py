"""SSDNeRF at test time: guided sampling, fine-tuning, unconditional generation, and the reconstruction protocol.

Reconstruction of an unseen object from its input view(s) (the official SSDNeRF code's ``guide_optim`` mode):

1. **guided DDIM sampling** (Eqs. 5-6): at every DDIM step, predict x0_hat, render rays of the input views from it,
   back-propagate the rendering loss *through the U-Net* to x_t (gradient g), and move
   ``x0_hat <- x0_hat - g * sigma^(2-2w) * alpha^(2w-1) * lambda_gd`` (lambda_gd = gain x rays per step), then take
   the DDIM step; optionally Langevin corrector steps;
2. **fine-tuning** (Eq. 7) with decoder and U-Net frozen: K_out outer x K_in inner Adam steps on the code; each
   outer step caches the gradient of the diffusion loss (weight c'_diff = 1, random t) and every inner step adds a
   fresh rendering gradient (prior gradient caching at test time).

Ablation switches: the code can start from guided samples, unguided samples or the mean training code, and the
fine-tuning can use the prior, only the rendering loss, or be skipped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from rich.console import Console
from torch import Tensor

from ns_diffusion_methods.data.multi_object import ObjectViews
from ns_diffusion_methods.engine.progress import StepCallback, progress_bars, step_task
from ns_diffusion_methods.methods.ssdnerf.diffusion import ddim_step, predict_x0
from ns_diffusion_methods.methods.ssdnerf.metrics import image_metrics
from ns_diffusion_methods.methods.ssdnerf.model import SSDNeRFModel
from ns_diffusion_methods.methods.ssdnerf.training import RayBatch


@dataclass
class InputRays:
    """Every pixel ray of the input views of B objects, and a fixed random order to draw batches from."""

    origins: Tensor
    """``[B, P, 3]``"""
    directions: Tensor
    """``[B, P, 3]``"""
    target: Tensor
    """``[B, P, 3]``"""
    num_pixels: Tensor
    """``[B]`` pixels of the input views of each object (views x H x W): N_v of the fine-tuning loss weight."""
    order: Tensor
    """``[B, P]`` a random permutation of the rays of each object."""

    @property
    def num_rays(self) -> int:
        return self.origins.shape[1]

    def batch(self, k: int, rays_per_step: int) -> RayBatch:
        """Batch ``k`` of ``rays_per_step`` rays per object: consecutive chunks of the fixed permutation (all rays
        when ``rays_per_step`` covers them)."""
        n = min(rays_per_step, self.num_rays)
        if n == self.num_rays:
            return RayBatch(self.origins, self.directions, self.target, self.num_pixels)
        start = (k * n) % self.num_rays
        positions = (torch.arange(n, device=self.order.device) + start) % self.num_rays
        index = self.order[:, positions]  # [B, n]
        gather = lambda x: x.gather(1, index[..., None].expand(-1, -1, 3))  # noqa: E731
        return RayBatch(gather(self.origins), gather(self.directions), gather(self.target), self.num_pixels)


def camera_rays(cameras: Cameras) -> tuple:
    """Pixel-centre rays of every camera: ``origins, directions [V, H, W, 3]``."""
    origins, directions = [], []
    for i in range(cameras.shape[0]):
        with warnings.catch_warnings():  # nerfstudio 1.1.5 indexes with a list (a torch deprecation warning)
            warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
            bundle = cameras.generate_rays(camera_indices=i, keep_shape=True)
        origins.append(bundle.origins)
        directions.append(bundle.directions)
    return torch.stack(origins), torch.stack(directions)


def input_rays(objects: Sequence[ObjectViews], generator: Optional[torch.Generator] = None) -> InputRays:
    """The rays of the input views of several objects (all with the same number of input views)."""
    origins, directions, targets = [], [], []
    for obj in objects:
        views = torch.as_tensor(obj.input_views, dtype=torch.long)
        o, d = camera_rays(obj.cameras[views.to(obj.cameras.device)])
        origins.append(o.reshape(-1, 3))
        directions.append(d.reshape(-1, 3))
        targets.append(obj.images[views.to(obj.images.device)].reshape(-1, 3))
    origins_t, directions_t = torch.stack(origins), torch.stack(directions)
    num_rays = origins_t.shape[1]
    order = torch.stack([torch.randperm(num_rays, generator=generator) for _ in objects]).to(origins_t.device)
    return InputRays(origins_t, directions_t, torch.stack(targets).to(origins_t),
                     torch.tensor([float(len(o.input_views) * o.images.shape[1] * o.images.shape[2]) for o in objects],
                                  device=origins_t.device), order)


#: lambda_gd = guidance_gain x 2^14: the official configs write the guidance scale as gain x 2^14 (cars 3.2 x 2^14,
#: chairs 0.4 x 2^14), a constant that multiplies the gradient of the *mean* rendering loss of each step's rays
GUIDANCE_GAIN_UNIT = 2**14


def _render_loss(model: SSDNeRFModel, code: Tensor, rays: RayBatch, perturb: bool = True,
                 generator: Optional[torch.Generator] = None, num_pixels: Optional[Tensor] = None) -> Tensor:
    """Sum over objects of (rendering loss + code regulariser): every object gets the gradient it would alone.
    ``num_pixels`` overrides ``rays.num_pixels`` in the rendering-loss weight (guidance counts the rays rendered)."""
    out = model.render_rays(code, rays.origins, rays.directions, decoder=model.eval_decoder, perturb=perturb,
                            generator=generator)
    pixels = rays.num_pixels if num_pixels is None else num_pixels
    return (model.rendering_loss(out["rgb"], rays.target, pixels) + model.code_reg_loss(code)).sum()


def guided_sample(model: SSDNeRFModel, rays: Optional[InputRays], num_steps: int, guidance_gain: float,
                  rays_per_step: int, num_objects: Optional[int] = None, noise: Optional[Tensor] = None,
                  langevin_steps: int = 0, langevin_delta: float = 0.4, langevin_t_range: Tuple[int, int] = (0, 1000),
                  generator: Optional[torch.Generator] = None, on_step: Optional[StepCallback] = None) -> Tensor:
    """DDIM sampling of codes, guided by the rendering loss of ``rays`` (unguided when ``rays`` is None or the gain
    is 0). Uses the EMA U-Net and decoder (when configured).

    Each guided x0 prediction renders ``rays_per_step`` input rays; its rendering-loss weight counts those rays as
    the pixels of N_v (official ``scale_num_ray``: one 128 px view's worth for 2^14 rays, whatever the number of input
    views), and x0 moves by ``grad * sigma^(2-2w) * alpha^(2w-1) * lambda_gd``.

    Args:
        model: a trained SSDNeRF model.
        rays: input-view rays of B objects.
        num_steps: DDIM steps (paper: 75 for reconstruction, 50 for generation).
        guidance_gain: lambda_gd / 2^14 (paper cars: 3.2, chairs: 0.4).
        rays_per_step: rays per object rendered at each step (paper: 2^14).
        num_objects: B when ``rays`` is None.
        noise: x_T ``[B, 3C, R, R]`` (default standard normal from ``generator``).
        langevin_steps, langevin_delta: Langevin corrector steps and their size (paper chairs: 5, 0.4); as in the
            official sampler they follow each DDIM step, at the new noise level t_prev, when
            ``langevin_t_range[0] < t_prev < langevin_t_range[1]``.
        on_step: called as ``on_step(done, num_steps)`` after each DDIM step (progress bars).

    Returns:
        Activated codes ``[B, 3, C, R, R]``.
    """
    schedule, unet = model.schedule, model.eval_unet
    guided = rays is not None and guidance_gain > 0
    batch = rays.origins.shape[0] if rays is not None else int(num_objects or 1)
    device = model.codes_pre.device
    shape = (batch, 3 * model.config.code_channels, model.config.code_resolution, model.config.code_resolution)
    x = noise.to(device) if noise is not None else torch.randn(shape, generator=generator).to(device)
    clip = model.config.code_scale if model.config.code_activation == "tanh" else float("inf")
    omega = model.config.snr_power
    timesteps = schedule.ddim_timesteps(num_steps)
    rng = generator if generator is not None else torch.Generator().manual_seed(0)
    lambda_gd = guidance_gain * GUIDANCE_GAIN_UNIT
    ray_step = 0

    def x0_of(x_t: Tensor, t: int) -> Tensor:
        nonlocal ray_step
        t_batch = torch.full((batch,), t, device=device, dtype=torch.long)
        if not guided:
            with torch.no_grad():
                return predict_x0(unet, schedule, x_t, t_batch).clamp(-clip, clip)
        assert rays is not None
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_(True)
            x0 = predict_x0(unet, schedule, x_in, t_batch).clamp(-clip, clip)
            ray_batch = rays.batch(ray_step, rays_per_step)
            ray_step += 1
            rendered = torch.full((batch,), float(ray_batch.origins.shape[1]), device=device)
            loss = _render_loss(model, model.image_to_code(x0), ray_batch, generator=rng, num_pixels=rendered)
            (grad,) = torch.autograd.grad(loss, [x_in])  # through the U-Net (grad_through_unet)
        alpha, sigma = schedule.alpha_sigma(t_batch, x_t.dim())
        step = grad * sigma ** (2 - 2 * omega) * alpha ** (2 * omega - 1) * lambda_gd
        return (x0.detach() - step).clamp(-clip, clip)

    for i, t in enumerate(timesteps):
        t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
        t_batch = torch.full((batch,), t, device=device, dtype=torch.long)
        # 1. Guided x0 prediction, then the DDIM step to t_prev.
        x0 = x0_of(x, t)
        x = ddim_step(x0, x, t_batch, torch.full_like(t_batch, t_prev), schedule)
        # 2. (optional) Langevin corrector steps at the new noise level t_prev, with eps from the guided x0.
        if langevin_steps > 0 and langevin_t_range[0] < t_prev < langevin_t_range[1]:
            prev_batch = torch.full((batch,), t_prev, device=device, dtype=torch.long)
            alpha, sigma = schedule.alpha_sigma(prev_batch, x.dim())
            for _ in range(langevin_steps):
                x0 = x0_of(x, t_prev)
                eps = (x - alpha * x0) / sigma
                z = torch.randn(x.shape, generator=rng).to(x)
                x = x - 0.5 * langevin_delta * sigma * eps + (langevin_delta**0.5) * sigma * z
        if on_step is not None:
            on_step(i + 1, len(timesteps))
    return model.image_to_code(x.detach())


def finetune(model: SSDNeRFModel, code: Tensor, rays: InputRays, outer_steps: int, inner_steps: int, lr: float,
             lr_gamma: float = 0.998, prior_weight: float = 1.0, rays_per_step: int = 2**14,
             generator: Optional[torch.Generator] = None, on_step: Optional[StepCallback] = None,
             init_margin: float = 1e-6) -> Tensor:
    """Fine-tune codes on the input views with decoder and U-Net frozen (paper Eq. 7).

    Args:
        code: ``[B, 3, C, R, R]`` initial activated codes.
        rays: input-view rays.
        outer_steps, inner_steps: K_out and K_in (paper 1 view: 25 x 4; 2 views: 50 x 4).
        lr: Adam learning rate (paper 1 view: 5e-3; 2 views: 1e-2), decayed by ``lr_gamma`` every inner step.
        prior_weight: c'_diff (paper: 1); 0 = rendering-only fine-tuning (ablation).
        rays_per_step: rays per object per inner step.
        generator: source of the diffusion timesteps, noise and sample jitter (default: torch's global one).
        on_step: called as ``on_step(done, outer_steps * inner_steps)`` after each inner step (progress bars).
        init_margin: the initial code is clamped to ``scale * (1 - init_margin)`` before atanh
            (:meth:`SSDNeRFModel.inverse_activate`).

    Returns:
        Fine-tuned activated codes.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(2**31, ())))
    image_shape = (code.shape[0], 3 * model.config.code_channels, *code.shape[-2:])
    code_pre = model.inverse_activate(code.detach(), margin=init_margin).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([code_pre], lr=lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=lr_gamma)
    ray_step = 0
    with torch.enable_grad():
        for _ in range(outer_steps):
            prior_grad = torch.zeros_like(code_pre)
            if prior_weight > 0:
                t = torch.randint(0, model.config.num_timesteps, (code.shape[0],), generator=generator)
                noise = torch.randn(image_shape, generator=generator)
                loss = model.diffusion_loss(model.activate(code_pre), weight=prior_weight, unet=model.eval_unet,
                                            t=t.to(code.device), noise=noise.to(code.device)).sum()
                (prior_grad,) = torch.autograd.grad(loss, [code_pre])
            for _ in range(inner_steps):
                loss = _render_loss(model, model.activate(code_pre), rays.batch(ray_step, rays_per_step),
                                    generator=generator)
                ray_step += 1
                (grad,) = torch.autograd.grad(loss, [code_pre])
                optimizer.zero_grad(set_to_none=True)
                code_pre.grad = grad + prior_grad
                optimizer.step()
                scheduler.step()
                if on_step is not None:
                    on_step(ray_step, outer_steps * inner_steps)
    return model.activate(code_pre.detach())


@torch.no_grad()
def render_views(model: SSDNeRFModel, code: Tensor, cameras: Cameras) -> Tensor:
    """Render one code ``[3, C, R, R]`` from cameras ``[V]``: ``[V, H, W, 3]`` (EMA decoder, no jitter)."""
    origins, directions = camera_rays(cameras)
    V, H, W, _ = origins.shape
    out = model.render_rays_chunked(code[None], origins.reshape(1, -1, 3), directions.reshape(1, -1, 3),
                                    decoder=model.eval_decoder)
    return out["rgb"].reshape(V, H, W, 3)


@dataclass
class ReconstructionSettings:
    """Test-time settings of one n-view setting."""

    init: Literal["guided", "unguided", "mean", "zero"] = "guided"
    finetune: Literal["prior", "render", "none"] = "prior"
    ddim_steps: int = 75
    guidance_gain: float = 3.2
    rays_per_step: int = 2**14
    langevin_steps: int = 0
    langevin_delta: float = 0.4
    langevin_t_range: Tuple[int, int] = (0, 1000)
    finetune_init_margin: float = 1e-6
    finetune_outer_steps: int = 25
    finetune_inner_steps: int = 4
    finetune_lr: float = 5e-3
    finetune_lr_gamma: float = 0.998
    finetune_prior_weight: float = 1.0


#: ``on_phase_step(phase, done, total)``: progress of :func:`reconstruct`, phase 'guided DDIM' or 'fine-tuning'
PhaseCallback = Callable[[str, int, int], None]


def initial_codes(model: SSDNeRFModel, rays: InputRays, settings: ReconstructionSettings,
                  generator: torch.Generator, on_step: Optional[StepCallback] = None) -> Tensor:
    """The codes fine-tuning starts from, ``[B, 3, C, R, R]``: ``guided`` / ``unguided`` DDIM samples, the ``mean``
    training code, or ``zero`` (the official ``cond_mode='optim'`` start: pre-activation codes uniform in
    +-``code_init_scale``)."""
    batch = rays.origins.shape[0]
    if settings.init == "mean":
        return model.mean_code()[None].expand(batch, *model.code_shape).clone()
    if settings.init == "zero":
        code_pre = torch.rand((batch, *model.code_shape), generator=generator) * 2 - 1
        return model.activate(code_pre.to(model.codes_pre) * model.config.code_init_scale)
    return guided_sample(model, rays if settings.init == "guided" else None, settings.ddim_steps,
                         settings.guidance_gain, settings.rays_per_step, num_objects=batch,
                         langevin_steps=settings.langevin_steps, langevin_delta=settings.langevin_delta,
                         langevin_t_range=settings.langevin_t_range, generator=generator, on_step=on_step)


def finetune_codes(model: SSDNeRFModel, code: Tensor, rays: InputRays, settings: ReconstructionSettings,
                   generator: torch.Generator, on_step: Optional[StepCallback] = None) -> Tensor:
    """Fine-tuning of :func:`reconstruct` with ``settings`` (prior, rendering only, or none)."""
    if settings.finetune == "none" or settings.finetune_outer_steps <= 0:
        return code
    weight = settings.finetune_prior_weight if settings.finetune == "prior" else 0.0
    return finetune(model, code, rays, settings.finetune_outer_steps, settings.finetune_inner_steps,
                    settings.finetune_lr, settings.finetune_lr_gamma, weight, settings.rays_per_step, generator,
                    on_step=on_step, init_margin=settings.finetune_init_margin)


def reconstruct(model: SSDNeRFModel, objects: Sequence[ObjectViews], settings: ReconstructionSettings,
                seed: int = 0, on_phase_step: Optional[PhaseCallback] = None,
                stats: Optional[Dict[str, List[float]]] = None) -> Tensor:
    """Codes ``[B, 3, C, R, R]`` of held-out objects from their input views (:func:`initial_codes`, then
    :func:`finetune_codes`); progress is reported as ``on_phase_step(phase, done, total)``. ``stats``, if given,
    receives per object ``saturated_init`` and ``saturated_final``: the fraction of code elements with
    ``|code| > 0.995 * scale`` after the initialisation and at the end (:meth:`SSDNeRFModel.saturated_fraction`)."""

    def phase(name: str) -> Optional[StepCallback]:
        return None if on_phase_step is None else (lambda done, total: on_phase_step(name, done, total))

    generator = torch.Generator().manual_seed(seed)
    rays = input_rays(objects, generator)
    code = initial_codes(model, rays, settings, generator,
                         on_step=phase("guided DDIM" if settings.init == "guided" else "unguided DDIM"))
    if stats is not None:
        stats.setdefault("saturated_init", []).extend(model.saturated_fraction(code).tolist())
    code = finetune_codes(model, code, rays, settings, generator, on_step=phase("fine-tuning"))
    if stats is not None:
        stats.setdefault("saturated_final", []).extend(model.saturated_fraction(code).tolist())
    return code


def evaluate_reconstruction(model: SSDNeRFModel, get_object: Callable[[int], ObjectViews], num_objects: int,
                            settings: ReconstructionSettings, batch_size: int = 8, seed: int = 0,
                            output_path: Optional[Path] = None, prefix: str = "",
                            with_lpips: bool = True, console: Optional[Console] = None,
                            per_object: Optional[Dict[str, List[float]]] = None) -> Dict[str, float]:
    """The reconstruction protocol over held-out objects: reconstruct from the input views, render every other
    view, score it (PSNR, SSIM, LPIPS where available), and return the mean and std over all scored images.

    Args:
        get_object: object index -> its views with the input views of the setting.
        output_path: if given, write ``{prefix}{object}_view{v}.png`` (render | ground truth) per scored view.
        console: where the progress bars go (objects, and the steps of the batch being reconstructed).
        per_object: if given, receives per object the mean of each metric over its scored views (``psnr``, ``ssim``,
            ...) and the saturation fractions of :func:`reconstruct` (for intervals over objects).
    """
    from ns_diffusion_methods.data.images import save_image

    per_image: Dict[str, List[float]] = {}
    setting = prefix.rstrip("_") or "reconstruction"
    with progress_bars(console) as progress:
        task = progress.add_task(f"ssdnerf {setting}: objects", total=num_objects)
        for start in range(0, num_objects, batch_size):
            objects = [get_object(i) for i in range(start, min(start + batch_size, num_objects))]
            with step_task(progress, "  steps") as steps:
                def on_phase_step(phase: str, done: int, total: int) -> None:
                    steps.describe(f"  {phase} steps")
                    steps(done, total)

                codes = reconstruct(model, objects, settings, seed=seed + start, on_phase_step=on_phase_step,
                                    stats=per_object)
            for obj, code in zip(objects, codes):
                this_object: Dict[str, List[float]] = {}
                scored = torch.as_tensor(obj.scored_views, dtype=torch.long)
                renders = render_views(model, code, obj.cameras[scored.to(obj.cameras.device)])
                for view, render in zip(obj.scored_views, renders):
                    target = obj.images[view]
                    for key, value in image_metrics(render, target, with_lpips=with_lpips).items():
                        per_image.setdefault(key, []).append(value)
                        this_object.setdefault(key, []).append(value)
                    if output_path is not None:
                        pair = torch.cat([render.clamp(0, 1), target], dim=1)  # [H, 2W, 3]
                        save_image((pair.cpu().numpy() * 255).round().astype(np.uint8),
                                   output_path / f"{prefix}{obj.name}_view{view:03d}.png")
                if per_object is not None:
                    for key, values in this_object.items():
                        per_object.setdefault(key, []).append(float(np.mean(values)))
                progress.advance(task)
    results: Dict[str, float] = {}
    for key, values in per_image.items():
        results[key] = float(np.mean(values))
        results[f"{key}_std"] = float(np.std(values))
    results["num_images"] = float(len(per_image.get("psnr", [])))
    return results
