"""A tiny MLP that decodes triplane features into density and view-dependent colour (SSDNeRF's ``TriPlaneDecoder``).

Per point: bilinear features from the three planes (concatenated, 3C dims, no positional encoding of xyz), then

- ``h = Linear(3C -> hidden)``; density ``= TruncExp(Linear(hidden -> 1)(SiLU(h)))``;
- direction: spherical harmonics (degree 4, 16 dims) -> ``Linear(16 -> hidden)``, zero-initialised;
- colour ``= sigmoid(Linear(hidden -> 3)(SiLU(h + dir_feat)))``, then rescaled by the "sigmoid saturation"
  ``rgb * (1 + 2s) - s`` (s = 0.001) so that 0 and 1 are reachable.

All other Linear layers are Xavier-uniform initialised with zero bias. ``reduce="mean"`` gives an EG3D-style decoder
over averaged plane features instead.
"""

from __future__ import annotations

from typing import Literal, Tuple

import torch
from nerfstudio.utils.math import components_from_spherical_harmonics
from torch import Tensor, nn

from ns_diffusion_methods.triplane.functional import sample_triplane


class _TruncExp(torch.autograd.Function):
    """exp(x) whose backward clamps the exp factor to [1e-6, 1e6] (torch-ngp's ``trunc_exp``)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: D102
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: D102
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x).clamp(1e-6, 1e6)


def trunc_exp(x: Tensor) -> Tensor:
    """exp with a clamped gradient factor (see :class:`_TruncExp`)."""
    return _TruncExp.apply(x)


class TriplaneMLPDecoder(nn.Module):
    """Decodes points in a batch of triplanes into ``(density, rgb)``; see the module docstring.

    Args:
        plane_channels: C, channels per plane.
        hidden_dim: width of the single hidden layer (SSDNeRF: 64).
        sh_degree: spherical-harmonics degree of the direction encoding (SSDNeRF: 4, i.e. 16 components).
        reduce: how the three plane features are combined (SSDNeRF: ``concat``).
        sigmoid_saturation: s in ``rgb * (1 + 2s) - s``.
    """

    def __init__(self, plane_channels: int, hidden_dim: int = 64, sh_degree: int = 4,
                 reduce: Literal["concat", "mean"] = "concat", sigmoid_saturation: float = 0.001):
        super().__init__()
        self.reduce = reduce
        self.sh_degree = sh_degree
        self.sigmoid_saturation = sigmoid_saturation
        in_dim = 3 * plane_channels if reduce == "concat" else plane_channels
        self.base = nn.Linear(in_dim, hidden_dim)
        self.density = nn.Linear(hidden_dim, 1)
        self.direction = nn.Linear(sh_degree**2, hidden_dim)
        self.color = nn.Linear(hidden_dim, 3)
        for layer in (self.base, self.density, self.color):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.direction.weight)
        nn.init.zeros_(self.direction.bias)

    def forward(self, planes: Tensor, xyz: Tensor, directions: Tensor) -> Tuple[Tensor, Tensor]:
        """Density and colour at points.

        Args:
            planes: ``[B, 3, C, R, R]`` activated triplanes.
            xyz: ``[B, M, 3]`` points in the box [-1, 1]^3.
            directions: ``[B, M, 3]`` unit viewing directions per point, or ``[B, N, 3]`` per ray when the M points are
                N rays x S consecutive samples (cheaper: encoded once per ray).

        Returns:
            ``density [B, M]`` (>= 0) and ``rgb [B, M, 3]``.
        """
        features = sample_triplane(planes, xyz, reduce=self.reduce)  # [B, M, 3C]
        h = self.base(features)
        density = trunc_exp(self.density(nn.functional.silu(h))).squeeze(-1)
        B, M, _ = xyz.shape
        N = directions.shape[1]
        assert M % N == 0, (xyz.shape, directions.shape)
        sh = components_from_spherical_harmonics(self.sh_degree, directions).to(h.dtype)
        # Per-ray directions ([B, N, 3] with M = N * S consecutive samples per ray) are encoded once per ray.
        dir_feat = self.direction(sh)[:, :, None, :]  # [B, N, 1, hidden]
        h = (h.reshape(B, N, M // N, -1) + dir_feat).reshape(B, M, -1)
        rgb = torch.sigmoid(self.color(nn.functional.silu(h)))
        rgb = rgb * (1 + 2 * self.sigmoid_saturation) - self.sigmoid_saturation
        return density, rgb

    def bind(self, planes: Tensor) -> "BoundTriplaneField":
        """The field ``(xyz, directions) -> (density, rgb)`` of ``planes``, for :class:`BoxVolumeRenderer`."""
        return BoundTriplaneField(self, planes)


class BoundTriplaneField:
    """A decoder with its planes: a renderer field that accepts per-ray directions (``accepts_ray_directions``)."""

    accepts_ray_directions = True

    def __init__(self, decoder: TriplaneMLPDecoder, planes: Tensor):
        self.decoder = decoder
        self.planes = planes

    def __call__(self, xyz: Tensor, directions: Tensor) -> Tuple[Tensor, Tensor]:
        return self.decoder(self.planes, xyz, directions)
