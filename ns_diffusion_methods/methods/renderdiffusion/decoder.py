"""RenderDiffusion's small MLP s_ψ: a point and its triplane features -> density and colour.

EG3D-style ("OSGDecoder"): the three plane features are combined into n_f dims (RenderDiffusion sums them, EG3D
averages them; with a linear first layer the two differ only by a factor 3 on the feature weights), one hidden
layer of 64 with Softplus, then 1 + 3 outputs; colour is a sigmoid padded by 0.001 on each side (EG3D's "sigmoid
saturation"), density is ``softplus(raw - 1)`` (EG3D's density activation in its ray marcher). The paper's figure
feeds the point p to the MLP as well as its features, so ``position_input`` (on by default) appends p, optionally
with sinusoidal frequencies (nerfstudio ``NeRFEncoding``). There is no view direction input: the paper's scenes are
Lambertian.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.configs.base_config import InstantiateConfig
from nerfstudio.field_components.encodings import NeRFEncoding
from torch import Tensor, nn

from ns_diffusion_methods.triplane import sample_triplane


@dataclass
class TriplaneDecoderConfig(InstantiateConfig):
    """The MLP s_ψ from (p, P[p]) to density and colour."""

    _target: Type = field(default_factory=lambda: TriplaneDecoder)
    hidden_dim: int = 64
    """Hidden width (EG3D's decoder: 64)."""
    num_hidden_layers: int = 1
    """Hidden layers (EG3D's decoder: 1, i.e. Linear -> Softplus -> Linear)."""
    plane_reduce: Literal["mean", "sum", "concat"] = "sum"
    """How the three plane features are combined: ``sum`` (RenderDiffusion), ``mean`` (EG3D; the sum divided by
    3) or ``concat`` (3 n_f inputs)."""
    position_input: bool = True
    """Append the point p to its features (the paper's figure shows p as an MLP input)."""
    position_frequencies: int = 0
    """Sinusoidal frequencies of p (0: p itself). Only used with ``position_input``."""
    density_activation: Literal["softplus", "trunc_exp", "relu"] = "softplus"
    """Density activation; ``softplus`` uses EG3D's shift of -1 (``density_bias``)."""
    density_bias: float = -1.0
    """Added to the raw density before the activation (EG3D: -1)."""
    rgb_padding: float = 0.001
    """Colour = sigmoid(x) * (1 + 2 pad) - pad, so 0 and 1 are reachable (EG3D: 0.001)."""


class TriplaneDecoder(nn.Module):
    """``s_ψ``: evaluates density and colour of triplanes at points.

    Args:
        config: decoder settings.
        feature_dim: n_f, channels per plane.
    """

    config: TriplaneDecoderConfig

    def __init__(self, config: TriplaneDecoderConfig, feature_dim: int) -> None:
        super().__init__()
        self.config = config
        in_dim = feature_dim * (3 if config.plane_reduce == "concat" else 1)
        self.position_encoding = None
        if config.position_input:
            frequencies = config.position_frequencies
            self.position_encoding = NeRFEncoding(in_dim=3, num_frequencies=frequencies, min_freq_exp=0.0,
                                                  max_freq_exp=max(frequencies - 1, 0), include_input=True,
                                                  implementation="torch")
            in_dim += self.position_encoding.get_out_dim()
        layers = []
        for _ in range(config.num_hidden_layers):
            layers += [nn.Linear(in_dim, config.hidden_dim), nn.Softplus()]
            in_dim = config.hidden_dim
        layers.append(nn.Linear(in_dim, 4))
        self.mlp = nn.Sequential(*layers)

    def forward(self, planes: Tensor, xyz: Tensor) -> Tuple[Tensor, Tensor]:
        """Density and colour at points.

        Args:
            planes: ``[B, 3, n_f, N, N]`` triplanes over [-1, 1]^3.
            xyz: ``[B, P, 3]`` points in the triplane's [-1, 1]^3 (points outside read the border features).

        Returns:
            density ``[B, P, 1]`` (>= 0) and rgb ``[B, P, 3]`` in [0, 1].
        """
        features = sample_triplane(planes, xyz, reduce=self.config.plane_reduce)  # [B, P, n_f or 3 n_f]
        if self.position_encoding is not None:
            features = torch.cat([features, self.position_encoding(xyz)], dim=-1)
        raw = self.mlp(features)  # [B, P, 4]
        raw_density = raw[..., :1] + self.config.density_bias
        if self.config.density_activation == "softplus":
            density = F.softplus(raw_density)
        elif self.config.density_activation == "trunc_exp":
            density = torch.exp(raw_density.clamp(max=15.0))
        elif self.config.density_activation == "relu":
            density = F.relu(raw_density)
        else:
            raise ValueError(f"`density_activation` must be softplus, trunc_exp or relu, "
                             f"but is {self.config.density_activation!r}.")
        pad = self.config.rgb_padding
        rgb = torch.sigmoid(raw[..., 1:]) * (1 + 2 * pad) - pad
        return density, rgb
