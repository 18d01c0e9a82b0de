"""RenderDiffusion's triplane encoder e_φ: a diffusion U-Net from the noisy image (and t, and the camera) to a triplane.

The paper's Fig. 2: ``g_θ(x_t, v) = ρ_ψ(e_φ(x_t), v)``. ``e_φ`` is an ADM/DDPM-style U-Net with a time embedding
whose output, ``[B, 3·n_f, N, N]``, is split into the three feature planes (xy, xz, yz) of
:mod:`ns_diffusion_methods.triplane`. For ShapeNet the triplane is 256×256×96 (N = 256, n_f = 32) from 64×64
images, so when N > M the U-Net is followed by ×2 up-sampling blocks.

Camera conditioning. The paper's encoder sees the noisy image only, e_φ(x_t) (the default, ``none``: use it with a
view-relative triplane frame, where the input camera's pose in the frame is fixed up to its elevation). Options
(our additions; see ``README.md``):

- ``plucker``: six Plücker channels per pixel (ray direction d and moment o × d, in the triplane frame) are
  concatenated to the noisy image. Each pixel then knows the 3D line it sees, which is what a world-frame triplane
  needs.
- ``embedding``: the flattened camera (c2w 3×4 and normalised intrinsics) goes through an MLP whose output is
  added to the time embedding (diffusers' ``class_embed_type="identity"``).
- ``none`` (default): no camera input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Tuple, Type

import torch
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

from ns_diffusion_methods.methods.renderdiffusion.geometry import pixel_rays, plucker_coordinates


@dataclass
class TriplaneEncoderConfig(InstantiateConfig):
    """The U-Net e_φ: noisy image (+ t, + camera) -> triplane."""

    _target: Type = field(default_factory=lambda: TriplaneEncoder)
    triplane_resolution: int = 256
    """N: side of each feature plane. Paper (ShapeNet): 256, from 64×64 images (so two ×2 up-sampling blocks)."""
    triplane_channels: int = 32
    """n_f: channels per plane. Paper (ShapeNet): 32 (a 256²×96 triplane)."""
    block_out_channels: Tuple[int, ...] = (128, 256, 256, 256)
    """U-Net channels per resolution level (ADM-style; the paper gives no numbers, this is our choice)."""
    attention_levels: Tuple[int, ...] = (2, 3)
    """Indices of the U-Net levels with self-attention (ADM attends at 16×16 and 8×8 for 64×64 inputs)."""
    layers_per_block: int = 2
    """ResNet blocks per U-Net level."""
    norm_num_groups: int = 32
    """GroupNorm groups in the U-Net (must divide every entry of ``block_out_channels``)."""
    upsample_channels: int = 128
    """Channels of the ×2 up-sampling blocks used when N is larger than the image (N/M must be a power of two)."""
    camera_conditioning: Literal["plucker", "embedding", "none"] = "none"
    """How the encoder sees the input camera. ``none`` (the paper's e_φ(x_t): the noisy image and t only; pair it
    with a view-relative ``triplane_frame``), or, as an option, Plücker ray channels or a camera embedding added to
    the time embedding (needed by the ``world`` frame)."""


class TriplaneEncoder(nn.Module):
    """``e_φ``: ``(x_t [B,3,M,M], t [B], camera) -> planes [B, 3, n_f, N, N]``.

    Args:
        config: the encoder settings.
        image_size: M, the side of the (square) training images.
    """

    config: TriplaneEncoderConfig

    def __init__(self, config: TriplaneEncoderConfig, image_size: int) -> None:
        super().__init__()
        self.config = config
        self.image_size = image_size
        ratio = config.triplane_resolution / image_size
        num_upsample = int(round(math.log2(ratio))) if ratio >= 1 else -1
        if num_upsample < 0 or 2**num_upsample * image_size != config.triplane_resolution:
            raise ValueError(
                f"`triplane_resolution` ({config.triplane_resolution}) must be the image size ({image_size}) times a "
                f"power of two. Set --pipeline.model.encoder.triplane-resolution to {image_size}, {2 * image_size}, "
                f"{4 * image_size}, ...")
        for channels in config.block_out_channels:
            if channels % config.norm_num_groups:
                raise ValueError(f"`norm_num_groups` ({config.norm_num_groups}) must divide every entry of "
                                 f"`block_out_channels` {config.block_out_channels}.")
        levels = len(config.block_out_channels)
        if any(level < 0 or level >= levels for level in config.attention_levels):
            raise ValueError(f"`attention_levels` {config.attention_levels} must index the {levels} U-Net levels.")
        if image_size % 2 ** (levels - 1):
            raise ValueError(f"The image size {image_size} must be divisible by 2^(levels-1) = {2 ** (levels - 1)} "
                             f"for a U-Net with {levels} levels; change `block_out_channels`.")

        out_planes = 3 * config.triplane_channels
        # attention heads of 32 channels (fewer when a level is narrower)
        attention_channels = [config.block_out_channels[i] for i in config.attention_levels]
        head_dim = min([32, *attention_channels])
        if any(c % head_dim for c in attention_channels):
            raise ValueError(f"The channels of the attention levels {attention_channels} must be multiples of the "
                             f"head width {head_dim}.")
        down = tuple("AttnDownBlock2D" if i in config.attention_levels else "DownBlock2D" for i in range(levels))
        up = tuple("AttnUpBlock2D" if i in config.attention_levels else "UpBlock2D" for i in reversed(range(levels)))
        time_embed_dim = config.block_out_channels[0] * 4
        in_channels = 3 + (6 if config.camera_conditioning == "plucker" else 0)
        from diffusers import UNet2DModel  # here, not at import: the method registry must stay light

        self.unet = UNet2DModel(
            sample_size=image_size,
            in_channels=in_channels,
            out_channels=out_planes if num_upsample == 0 else config.upsample_channels,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=tuple(config.block_out_channels),
            layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups,
            attention_head_dim=head_dim,
            add_attention=levels - 1 in config.attention_levels,
            class_embed_type="identity" if config.camera_conditioning == "embedding" else None,
        )
        self.camera_embedding = None
        if config.camera_conditioning == "embedding":
            # 12 (c2w) + 4 (fx, fy, cx, cy divided by the image size) -> time-embedding width
            self.camera_embedding = nn.Sequential(nn.Linear(16, time_embed_dim), nn.SiLU(),
                                                  nn.Linear(time_embed_dim, time_embed_dim))
        # Up-sampling head for N > M (the third-party description puts extra blocks after the U-Net).
        blocks = []
        for _ in range(num_upsample):
            blocks += [nn.Upsample(scale_factor=2.0, mode="nearest"),
                       nn.Conv2d(config.upsample_channels, config.upsample_channels, 3, padding=1),
                       nn.GroupNorm(min(32, config.upsample_channels), config.upsample_channels),
                       nn.SiLU()]
        if num_upsample:
            blocks.append(nn.Conv2d(config.upsample_channels, out_planes, 3, padding=1))
        self.upsample = nn.Sequential(*blocks)

    def forward(self, noisy_image: Tensor, timesteps: Tensor, camera_to_worlds: Tensor, intrinsics: Tensor) -> Tensor:
        """Encode noisy images into triplanes.

        Args:
            noisy_image: ``[B, 3, M, M]`` x_t in [-1, 1] (plus noise).
            timesteps: ``[B]`` integer diffusion steps.
            camera_to_worlds: ``[B, 3, 4]`` input cameras (OpenGL convention) expressed in the triplane frame.
            intrinsics: ``[B, 4]`` fx, fy, cx, cy in pixels.

        Returns:
            ``[B, 3, n_f, N, N]`` feature planes (xy, xz, yz).
        """
        B, _, H, W = noisy_image.shape
        assert H == W == self.image_size, (noisy_image.shape, self.image_size)
        assert camera_to_worlds.shape == (B, 3, 4) and intrinsics.shape == (B, 4), (camera_to_worlds.shape,
                                                                                   intrinsics.shape)
        sample = noisy_image
        class_labels = None
        if self.config.camera_conditioning == "plucker":
            origins, directions = pixel_rays(camera_to_worlds, intrinsics, H, W)  # [B, H*W, 3] each
            plucker = plucker_coordinates(origins, directions)  # [B, H*W, 6]
            sample = torch.cat([sample, plucker.permute(0, 2, 1).reshape(B, 6, H, W)], dim=1)
        elif self.config.camera_conditioning == "embedding":
            assert self.camera_embedding is not None
            normalised = intrinsics / torch.tensor([W, H, W, H], dtype=intrinsics.dtype, device=intrinsics.device)
            class_labels = self.camera_embedding(torch.cat([camera_to_worlds.reshape(B, 12), normalised], dim=-1))
        features = self.unet(sample, timesteps, class_labels=class_labels).sample  # [B, C', M, M]
        features = self.upsample(features)  # [B, 3*n_f, N, N]
        n_f, N = self.config.triplane_channels, self.config.triplane_resolution
        assert features.shape == (B, 3 * n_f, N, N), features.shape
        return features.reshape(B, 3, n_f, N, N)
