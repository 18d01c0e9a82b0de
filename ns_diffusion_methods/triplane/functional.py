"""Stateless triplane sampling.

A triplane is a tensor ``planes [B, 3, C, R, R]``: three feature planes over the cube [-1, 1]^3, in the order
``xy``, ``xz``, ``yz`` (:data:`PLANE_AXES`). A point's feature on a plane is the bilinear interpolation at its
projection onto that plane. SSDNeRF concatenates the three features (3C dims, no positional encoding); EG3D-style
renderers such as RenderDiffusion's average them (C dims).
"""

from __future__ import annotations

from typing import Literal, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

#: world axes spanned by each plane, as (u axis, v axis): grid_sample's x reads u, its y reads v
PLANE_AXES: Tuple[Tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2))


def project_to_planes(xyz: Tensor) -> Tensor:
    """Projections of points onto the three planes.

    Args:
        xyz: points ``[B, N, 3]`` in [-1, 1]^3.

    Returns:
        ``[B, 3, N, 2]``: for each plane, the (u, v) coordinates in [-1, 1] that ``grid_sample`` expects.
    """
    assert xyz.dim() == 3 and xyz.shape[-1] == 3, xyz.shape
    return torch.stack([xyz[..., list(axes)] for axes in PLANE_AXES], dim=1)


def sample_triplane(
    planes: Tensor,
    xyz: Tensor,
    reduce: Literal["concat", "mean", "sum"] = "concat",
    padding_mode: Literal["border", "zeros"] = "border",
) -> Tensor:
    """Bilinearly sample a triplane at 3D points.

    Args:
        planes: ``[B, 3, C, R, R]`` feature planes (xy, xz, yz), row index = v, column index = u.
        xyz: ``[B, N, 3]`` points in [-1, 1]^3 (``align_corners=False`` convention: -1 and 1 are the outer pixel edges).
        reduce: ``concat`` gives ``[B, N, 3C]`` (SSDNeRF), ``mean``/``sum`` give ``[B, N, C]`` (EG3D).
        padding_mode: ``grid_sample`` padding for points outside the cube (SSDNeRF uses ``border``).

    Returns:
        Point features, ``[B, N, 3C]`` or ``[B, N, C]``.
    """
    B, P, C, R, R2 = planes.shape
    assert P == 3 and R == R2, planes.shape
    assert xyz.shape[0] == B and xyz.shape[-1] == 3, (planes.shape, xyz.shape)
    N = xyz.shape[1]
    grid = project_to_planes(xyz).reshape(B * 3, N, 1, 2)  # [B*3, N, 1, 2]
    feats = F.grid_sample(planes.reshape(B * 3, C, R, R), grid, mode="bilinear", padding_mode=padding_mode,
                          align_corners=False)  # [B*3, C, N, 1]
    feats = feats.reshape(B, 3, C, N).permute(0, 3, 1, 2)  # [B, N, 3, C]
    if reduce == "concat":
        return feats.reshape(B, N, 3 * C)
    if reduce == "mean":
        return feats.mean(dim=2)
    if reduce == "sum":
        return feats.sum(dim=2)
    raise ValueError(f"`reduce` must be one of 'concat', 'mean', 'sum', but is {reduce!r}.")
