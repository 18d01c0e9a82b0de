"""Volume rendering of fields bounded by an axis-aligned box, in plain torch (CPU and CUDA).

SSDNeRF renders each object inside the box [-1, 1]^3 with near/far from the ray-box intersection and a white
background; the official code marches an occupancy grid with CUDA kernels. Here the samples are stratified between
near and far, optionally followed by one importance pass that re-samples where the first pass found density (the
same field is queried twice, NeRF-style, the first time without gradients). That changes speed and sample placement,
not the method.

A *field* is any callable ``field(xyz [B, M, 3], directions [B, M, 3]) -> (density [B, M], rgb [B, M, 3])``, batched
over B objects; e.g. a triplane decoder with its planes bound (:class:`ns_diffusion_methods.triplane.decoder`). The M
points are N rays x S consecutive samples; a field with ``accepts_ray_directions = True`` receives the directions once
per ray (``[B, N, 3]``) instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple, Type

import torch
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

Field = Callable[[Tensor, Tensor], Tuple[Tensor, Tensor]]


def ray_aabb_intersect(origins: Tensor, directions: Tensor, bound: float = 1.0,
                       min_near: float = 0.0) -> Tuple[Tensor, Tensor, Tensor]:
    """Where rays enter and leave the box [-bound, bound]^3 (slab method).

    Args:
        origins: ``[..., 3]`` ray origins.
        directions: ``[..., 3]`` ray directions (any length; distances are in units of this length).
        bound: half size of the box.
        min_near: smallest near distance (SSDNeRF: 0.2).

    Returns:
        ``near [...]``, ``far [...]`` and ``hit [...]`` (bool). Rays that miss the box get ``near == far``.
    """
    safe = torch.where(directions.abs() < 1e-9, torch.full_like(directions, 1e-9), directions)
    t0 = (-bound - origins) / safe
    t1 = (bound - origins) / safe
    near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(min_near)
    far = torch.maximum(t0, t1).amin(dim=-1)
    hit = far > near
    far = torch.where(hit, far, near)
    return near, far, hit


def _rand(shape, like: Tensor, generator: Optional[torch.Generator]) -> Tensor:
    """Uniform [0, 1) numbers shaped ``shape`` on ``like``'s device, from ``generator`` (which may live on the CPU)."""
    if generator is None or generator.device == like.device:
        return torch.rand(shape, device=like.device, dtype=like.dtype, generator=generator)
    return torch.rand(shape, generator=generator, dtype=like.dtype).to(like.device)


def stratified_samples(near: Tensor, far: Tensor, num_samples: int, perturb: bool,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """``num_samples`` distances per ray, one in each of equal bins between near and far.

    Args:
        near, far: ``[...]``.
        num_samples: S.
        perturb: a uniformly random position inside each bin (training) instead of the bin centre.

    Returns:
        ``t [..., S]``, sorted.
    """
    u = torch.arange(num_samples, device=near.device, dtype=near.dtype)
    if perturb:
        u = u + _rand((*near.shape, num_samples), near, generator)
    else:
        u = u + 0.5
    u = u / num_samples
    return near[..., None] + (far - near)[..., None] * u


def importance_samples(t: Tensor, weights: Tensor, near: Tensor, far: Tensor, num_samples: int, perturb: bool,
                       generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw ``num_samples`` distances from the piecewise-constant density given by ``weights`` at samples ``t``.

    Args:
        t: ``[..., S]`` sorted sample distances of the first pass.
        weights: ``[..., S]`` their compositing weights.
        near, far: ``[...]``.
        num_samples: how many new distances.
        perturb: random (training) or evenly spaced quantiles.

    Returns:
        ``[..., num_samples]`` new distances (not merged with ``t``).
    """
    edges = sample_edges(t, near, far)  # [..., S+1]
    pdf = weights.detach() + 1e-5
    pdf = pdf / pdf.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[..., :1]), torch.cumsum(pdf, dim=-1)], dim=-1).clamp(max=1.0)
    if perturb:
        u = _rand((*t.shape[:-1], num_samples), t, generator)
    else:
        u = (torch.arange(num_samples, device=t.device, dtype=t.dtype) + 0.5) / num_samples
        u = u.expand(*t.shape[:-1], num_samples)
    u = u.contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True).clamp(1, cdf.shape[-1] - 1)
    cdf_lo, cdf_hi = cdf.gather(-1, idx - 1), cdf.gather(-1, idx)
    edge_lo, edge_hi = edges.gather(-1, idx - 1), edges.gather(-1, idx)
    frac = ((u - cdf_lo) / (cdf_hi - cdf_lo).clamp_min(1e-8)).clamp(0.0, 1.0)
    return edge_lo + frac * (edge_hi - edge_lo)


def sample_edges(t: Tensor, near: Tensor, far: Tensor) -> Tensor:
    """Interval edges around sorted samples: near, the midpoints between samples, far. ``[..., S] -> [..., S+1]``."""
    mids = 0.5 * (t[..., 1:] + t[..., :-1])
    return torch.cat([near[..., None], mids, far[..., None]], dim=-1)


def composite(density: Tensor, rgb: Tensor, t: Tensor, near: Tensor, far: Tensor,
              background: Optional[Tensor] = None) -> Dict[str, Tensor]:
    """Alpha-composite samples along rays.

    Args:
        density: ``[..., S]`` volume density (>= 0).
        rgb: ``[..., S, 3]`` colours.
        t: ``[..., S]`` sorted sample distances; each sample covers the interval between the midpoints to its
            neighbours (the first from ``near``, the last to ``far``).
        near, far: ``[...]``.
        background: ``[3]`` colour behind the box (SSDNeRF: white); None leaves it black.

    Returns:
        ``rgb [..., 3]``, ``accumulation [..., 1]``, ``depth [..., 1]`` (expected distance, ``far`` where empty) and
        ``weights [..., S]``.
    """
    edges = sample_edges(t, near, far)
    deltas = (edges[..., 1:] - edges[..., :-1]).clamp_min(0.0)
    alpha = 1.0 - torch.exp(-density * deltas)
    transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha + 1e-10], dim=-1), dim=-1)
    weights = alpha * transmittance[..., :-1]
    acc = weights.sum(dim=-1, keepdim=True)
    color = (weights[..., None] * rgb).sum(dim=-2)
    if background is not None:
        color = color + (1.0 - acc) * background.to(color)
    depth = (weights * t).sum(dim=-1, keepdim=True) + (1.0 - acc) * far[..., None]
    return {"rgb": color, "accumulation": acc, "depth": depth, "weights": weights}


@dataclass
class BoxVolumeRendererConfig(InstantiateConfig):
    """Volume rendering inside an axis-aligned box with stratified (+ optional importance) sampling."""

    _target: Type = field(default_factory=lambda: BoxVolumeRenderer)
    bound: float = 1.0
    """Half size of the box [-bound, bound]^3 (SSDNeRF: 1)."""
    min_near: float = 0.2
    """Smallest near distance (SSDNeRF: 0.2)."""
    num_samples: int = 64
    """Stratified samples per ray between the box's near and far."""
    num_importance_samples: int = 64
    """Extra samples per ray drawn where the stratified pass found density (0 disables the second pass)."""
    background: Tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour (SSDNeRF: white)."""
    chunk_size: int = 32768
    """Rays per chunk when rendering without gradients (eval)."""


class BoxVolumeRenderer(nn.Module):
    """Renders batched fields over rays of B objects: ``render(field, origins [B, N, 3], directions [B, N, 3])``."""

    config: BoxVolumeRendererConfig

    def __init__(self, config: BoxVolumeRendererConfig):
        super().__init__()
        self.config = config
        self.register_buffer("background", torch.tensor(config.background, dtype=torch.float32), persistent=False)

    def forward(self, field: Field, origins: Tensor, directions: Tensor, perturb: bool = False,
                generator: Optional[torch.Generator] = None) -> Dict[str, Tensor]:
        """Render rays ``[B, N]`` through ``field``.

        Returns:
            ``rgb [B, N, 3]``, ``accumulation [B, N, 1]``, ``depth [B, N, 1]``.
        """
        assert origins.dim() == 3 and origins.shape == directions.shape, (origins.shape, directions.shape)
        cfg = self.config
        dirs = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-9)
        near, far, _ = ray_aabb_intersect(origins, dirs, cfg.bound, cfg.min_near)  # [B, N]
        t = stratified_samples(near, far, cfg.num_samples, perturb, generator)  # [B, N, S]
        if cfg.num_importance_samples > 0:
            with torch.no_grad():
                density, rgb = self._query(field, origins, dirs, t)
                weights = composite(density, rgb, t, near, far)["weights"]
                t_fine = importance_samples(t, weights, near, far, cfg.num_importance_samples, perturb, generator)
            t, _ = torch.sort(torch.cat([t, t_fine], dim=-1), dim=-1)
        density, rgb = self._query(field, origins, dirs, t)
        out = composite(density, rgb, t, near, far, self.background)
        del out["weights"]
        return out

    @staticmethod
    def _query(field: Field, origins: Tensor, dirs: Tensor, t: Tensor) -> Tuple[Tensor, Tensor]:
        B, N, S = t.shape
        xyz = origins[:, :, None, :] + dirs[:, :, None, :] * t[..., None]  # [B, N, S, 3]
        if getattr(field, "accepts_ray_directions", False):
            view = dirs  # [B, N, 3]: the field broadcasts each ray's direction over its S samples
        else:
            view = dirs[:, :, None, :].expand(B, N, S, 3).reshape(B, N * S, 3)
        density, rgb = field(xyz.reshape(B, N * S, 3), view)
        return density.reshape(B, N, S), rgb.reshape(B, N, S, 3)

    @torch.no_grad()
    def render_chunked(self, field: Field, origins: Tensor, directions: Tensor) -> Dict[str, Tensor]:
        """:meth:`forward` without gradients, in chunks of ``chunk_size`` rays (per object)."""
        outputs: Dict[str, list] = {}
        step = max(1, self.config.chunk_size // max(1, origins.shape[0]))
        for start in range(0, origins.shape[1], step):
            out = self(field, origins[:, start:start + step], directions[:, start:start + step])
            for key, value in out.items():
                outputs.setdefault(key, []).append(value)
        return {key: torch.cat(values, dim=1) for key, values in outputs.items()}
