"""One ``rasterization`` entry point for splat models: gsplat's CUDA kernels on CUDA, the torch rasterizer elsewhere.

Splat models call :func:`rasterization` exactly as they would call ``gsplat.rendering.rasterization``; the tensors'
device decides the backend, so a model trains on a CPU without flags. The CPU backend is
:func:`~ns_diffusion_methods.rendering.torch_rasterizer.torch_rasterization` (pinhole cameras, unpacked results,
SH degree up to 3), which agrees with gsplat's images and gradients (tests/rendering compares them on CUDA).
"""

from __future__ import annotations

from typing import Any, Dict, Literal, Optional, Tuple

from torch import Tensor

from ns_diffusion_methods.rendering.torch_rasterizer import RasterizeMode, RenderMode, torch_rasterization

Backend = Literal["auto", "gsplat", "torch"]


def resolve_backend(device_type: str, backend: Backend = "auto") -> Literal["gsplat", "torch"]:
    """``gsplat`` on CUDA, ``torch`` elsewhere, unless ``backend`` names one; gsplat needs CUDA tensors."""
    if backend == "auto":
        return "gsplat" if device_type == "cuda" else "torch"
    if backend == "gsplat" and device_type != "cuda":
        raise ValueError(f"The gsplat rasterizer needs CUDA tensors, but the Gaussians are on {device_type!r}. "
                         "Use backend 'auto' or 'torch'.")
    if backend not in ("gsplat", "torch"):
        raise ValueError(f"`backend` must be 'auto', 'gsplat' or 'torch', but is {backend!r}.")
    return backend


def rasterization(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,
    render_mode: RenderMode = "RGB",
    absgrad: bool = False,
    rasterize_mode: RasterizeMode = "classic",
    backend: Backend = "auto",
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """Rasterize Gaussians with gsplat (CUDA) or the torch rasterizer (any other device).

    Arguments and results are those of ``gsplat.rendering.rasterization`` with ``packed=False`` (see
    :func:`~ns_diffusion_methods.rendering.torch_rasterizer.torch_rasterization` for each one); ``backend`` forces a
    backend ("auto" picks by the device of ``means``).
    """
    kwargs = dict(near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
                  sh_degree=sh_degree, tile_size=tile_size, backgrounds=backgrounds, render_mode=render_mode,
                  absgrad=absgrad, rasterize_mode=rasterize_mode)
    if resolve_backend(means.device.type, backend) == "gsplat":
        from gsplat.rendering import rasterization as gsplat_rasterization

        return gsplat_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                    packed=False, sparse_grad=False, **kwargs)
    return torch_rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height, **kwargs)
