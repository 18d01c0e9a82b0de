"""A StyleGAN2-style residual patch discriminator that also returns its intermediate features.

Choice: MALD-NeRF's discriminator is not published. Its losses are StyleGAN2's (non-saturating logistic loss with a
lazy R1 penalty), so the discriminator follows StyleGAN2's residual design
(Karras et al. 2020, "Analyzing and Improving the Image Quality of StyleGAN", https://arxiv.org/abs/1912.04958),
sized for 32-128 px patches instead of full images:

- ``from_rgb``: 1x1 conv to ``base_channels`` at the patch resolution;
- ``log2(patch_size) - 2`` residual blocks, each two 3x3 convs and a [1, 3, 3, 1] blur + 2x down-sampling, with a
  1x1 down-sampled skip, summed with a 1/sqrt(2) gain; the width doubles per block up to ``max_channels``;
- at 4x4: minibatch standard deviation (one extra channel), a 3x3 conv and two linear layers down to one logit;
- equalised learning rate (weights drawn from N(0, 1), scaled by 1/sqrt(fan_in) at run time) and leaky ReLU 0.2
  with a sqrt(2) gain, as in StyleGAN2.

The output of ``from_rgb`` and of every residual block is returned for the discriminator feature-matching loss
(:func:`ns_diffusion_methods.gan.losses.feature_matching_loss`). Patches are expected with the outside of the object
mask already set to black (:func:`ns_diffusion_methods.gan.losses.mask_outside`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Tuple, Type

import torch
import torch.nn.functional as F
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor, nn

_GAIN = math.sqrt(2.0)  # keeps activations' variance through leaky ReLU (StyleGAN2)


class EqualConv2d(nn.Module):
    """Conv with equalised learning rate: weights ~ N(0, 1), scaled by 1/sqrt(fan_in) in forward."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = 1.0 / math.sqrt(in_features)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return F.linear(x, self.weight * self.scale, self.bias)


def _lrelu(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.2) * _GAIN


class Downsample(nn.Module):
    """[1, 3, 3, 1] binomial blur followed by 2x down-sampling (anti-aliased, as in StyleGAN2)."""

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        channels = x.shape[1]
        x = F.pad(x, (1, 2, 1, 2), mode="constant")  # [B, C, H+3, W+3]
        return F.conv2d(x, self.kernel.expand(channels, 1, 4, 4).to(x.dtype), stride=2, groups=channels)


class ResBlock(nn.Module):
    """Two 3x3 convs then blur-downsample, plus a down-sampled 1x1 skip; output = (main + skip) / sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = EqualConv2d(in_channels, in_channels, 3, padding=1)
        self.conv2 = EqualConv2d(in_channels, out_channels, 3, padding=1)
        self.down = Downsample()
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        main = _lrelu(self.conv2(_lrelu(self.conv1(x))))
        main = self.down(main)
        skip = self.skip(self.down(x))
        return (main + skip) / _GAIN


def minibatch_stddev(x: Tensor, group_size: int) -> Tensor:
    """Append one channel: the std over groups of samples, averaged over channels and pixels (StyleGAN2).

    The group is the largest divisor of the batch not above ``group_size`` (a batch of 6 uses groups of 3).
    """
    batch, channels, height, width = x.shape
    group = max(g for g in range(1, min(group_size, batch) + 1) if batch % g == 0)
    y = x.reshape(group, batch // group, channels, height, width)  # [G, B/G, C, H, W]
    y = torch.sqrt(y.var(dim=0, unbiased=False) + 1e-8)  # [B/G, C, H, W]
    y = y.mean(dim=(1, 2, 3)).reshape(batch // group, 1, 1, 1)  # [B/G, 1, 1, 1]
    y = y.repeat(group, 1, height, width)  # [B, 1, H, W]
    return torch.cat([x, y], dim=1)


class PatchDiscriminator(nn.Module):
    """StyleGAN2-style residual discriminator for ``patch_size`` x ``patch_size`` patches (see module docstring)."""

    def __init__(self, config: "PatchDiscriminatorConfig") -> None:
        super().__init__()
        size = config.patch_size
        if size < 8 or size & (size - 1):
            raise ValueError(f"`patch_size` of the discriminator must be a power of two >= 8, but got {size}.")
        self.config = config
        widths = [min(config.base_channels * 2 ** i, config.max_channels) for i in range(int(math.log2(size)) - 1)]
        self.from_rgb = EqualConv2d(config.in_channels, widths[0], 1)
        self.blocks = nn.ModuleList(ResBlock(widths[i], widths[i + 1]) for i in range(len(widths) - 1))
        final = widths[-1]
        self.final_conv = EqualConv2d(final + 1, final, 3, padding=1)
        self.final_linear = EqualLinear(final * 4 * 4, final)
        self.output = EqualLinear(final, 1)

    def forward(self, images: Tensor) -> Tuple[Tensor, List[Tensor]]:
        """Logits and intermediate features of a batch of patches.

        Args:
            images: ``[B, C, P, P]`` patches in [0, 1] (mapped to [-1, 1] inside), P = ``config.patch_size``.

        Returns:
            ``(logits [B], features)``: ``features`` are the outputs of ``from_rgb`` and of each residual block.
        """
        size = self.config.patch_size
        if images.ndim != 4 or images.shape[1] != self.config.in_channels or images.shape[-2:] != (size, size):
            raise ValueError(f"The discriminator takes [B, {self.config.in_channels}, {size}, {size}] patches, "
                             f"but got shape {tuple(images.shape)}.")
        x = _lrelu(self.from_rgb(images * 2 - 1))
        features = [x]
        for block in self.blocks:
            x = block(x)
            features.append(x)
        x = minibatch_stddev(x, self.config.mbstd_group_size)  # [B, C+1, 4, 4]
        x = _lrelu(self.final_conv(x))
        x = _lrelu(self.final_linear(x.flatten(1)))
        return self.output(x).squeeze(1), features


@dataclass
class PatchDiscriminatorConfig(InstantiateConfig):
    """StyleGAN2-style residual patch discriminator (MALD-NeRF's is unpublished; see the module docstring)."""

    _target: Type = field(default_factory=lambda: PatchDiscriminator)
    patch_size: int = 64
    """Side of the square patches it judges, a power of two >= 8 (recommended default 64; the paper does not
    say)."""
    base_channels: int = 64
    """Channels at the patch resolution; they double after every down-sampling block."""
    max_channels: int = 256
    """Channel cap of the deeper blocks (StyleGAN2 uses 512 for full images; patches need less)."""
    mbstd_group_size: int = 4
    """Group size of the minibatch standard-deviation layer (StyleGAN2: 4)."""
    in_channels: int = 3
    """Input channels (RGB)."""
