"""Gaussian-splatting rasterization on any device: gsplat on CUDA, a pure-PyTorch rasterizer elsewhere."""

from ns_diffusion_methods.rendering.rasterization import rasterization, resolve_backend
from ns_diffusion_methods.rendering.torch_rasterizer import project_gaussians, spherical_harmonics, torch_rasterization

__all__ = ["project_gaussians", "rasterization", "resolve_backend", "spherical_harmonics", "torch_rasterization"]
