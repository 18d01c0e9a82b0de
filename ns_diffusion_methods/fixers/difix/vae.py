"""The SD VAE with encoder-to-decoder skip connections (pix2pix-turbo), as Difix uses it.

Nothing is monkey-patched: the skip path is written out in :func:`encode_with_skips` / :func:`decode_with_skips` over
diffusers' own ``AutoencoderKL`` sub-modules, and :func:`add_skip_connections` adds the 1x1 skip convolutions and a peft
LoRA (adapter ``vae_skip``) under the module names of the official code, so the published state dicts load unchanged.
peft is imported only when the adapters are added.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

#: peft adapter name of the VAE-decoder LoRA in the published weights
LORA_ADAPTER = "vae_skip"
#: decoder modules carrying the LoRA: every module of the decoder whose name ends with one of these (pix2pix-turbo)
LORA_TARGET_SUFFIXES: Tuple[str, ...] = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out",
                                         "to_k", "to_q", "to_v", "to_out.0")
#: initial value of fresh skip convolutions (near zero, so a fresh model starts as the plain VAE)
SKIP_INIT = 1e-5


def skip_conv_channels(block_out_channels: Sequence[int]) -> List[Tuple[int, int]]:
    """(in, out) channels of ``skip_conv_1..n`` for an ``AutoencoderKL`` with ``block_out_channels`` c.

    Encoder down-block inputs are [c0, c0, c1, ..., c_{n-2}]; decoder up-block inputs are [c_{n-1}, c_{n-1},
    c_{n-2}, ..., c1]; skip k maps the k-th *last* encoder input to the k-th decoder input (same resolution).
    SD VAE (128, 256, 512, 512): 512->512, 256->512, 128->512, 128->256.
    """
    c = list(block_out_channels)
    encoder_inputs = [c[0]] + c[:-1]
    decoder_inputs = [c[-1]] + list(reversed(c))[:-1]
    return list(zip(reversed(encoder_inputs), decoder_inputs))


def lora_target_modules(vae: nn.Module) -> List[str]:
    """Full names of the decoder modules that carry the LoRA (including the skip convolutions)."""
    suffixes = LORA_TARGET_SUFFIXES + tuple(f"skip_conv_{k + 1}" for k in range(len(vae.decoder.up_blocks)))
    return [name for name, _ in vae.named_modules()
            if name.startswith("decoder.") and any(name.endswith(suffix) for suffix in suffixes)]


def add_skip_connections(vae: nn.Module, *, lora_rank: int = 4, lora_alpha: float = 8.0) -> None:
    """Give ``vae.decoder`` the 1x1 skip convolutions ``skip_conv_1..n`` and a peft LoRA (adapter ``vae_skip``).

    The module names, the peft adapter and its initialisation (gaussian A, zero B) are those of the official Difix /
    pix2pix-turbo code, so the published state dicts load unchanged. ``lora_alpha`` 8 is peft's default, which the
    official code relied on (scaling alpha / rank = 2 at rank 4).
    """
    from peft import LoraConfig

    for k, (c_in, c_out) in enumerate(skip_conv_channels(vae.config.block_out_channels)):
        conv = nn.Conv2d(c_in, c_out, kernel_size=1, bias=False)
        if not conv.weight.is_meta:
            nn.init.constant_(conv.weight, SKIP_INIT)
        vae.decoder.add_module(f"skip_conv_{k + 1}", conv)
    config = LoraConfig(r=lora_rank, lora_alpha=lora_alpha, init_lora_weights="gaussian",
                        target_modules=lora_target_modules(vae))
    vae.add_adapter(config, adapter_name=LORA_ADAPTER)


def encode_with_skips(vae: nn.Module, images: Tensor) -> Tuple[Tensor, List[Tensor]]:
    """VAE encoder pass keeping the input of every down-block.

    Args:
        vae: an ``AutoencoderKL``.
        images: [N, 3, H, W] in [-1, 1], H and W divisible by 2^(levels-1).

    Returns:
        posterior moments [N, 2*latent, H/8, W/8] (mean and log-variance), and the skip activations, finest first.
    """
    encoder = vae.encoder
    sample = encoder.conv_in(images)
    skips = []
    for down_block in encoder.down_blocks:
        skips.append(sample)
        sample = down_block(sample)
    sample = encoder.mid_block(sample)
    sample = encoder.conv_out(encoder.conv_act(encoder.conv_norm_out(sample)))
    if vae.quant_conv is not None:
        sample = vae.quant_conv(sample)
    return sample, skips


def decode_with_skips(vae: nn.Module, latents: Tensor, skips: Optional[Sequence[Tensor]], gamma: float = 1.0
                      ) -> Tensor:
    """VAE decoder pass adding ``skip_conv_k(gamma * skip)`` before up-block k (no skips when ``skips`` is None).

    Args:
        vae: an ``AutoencoderKL`` prepared by :func:`add_skip_connections`.
        latents: [N, latent, h, w], *unscaled* (already divided by the scaling factor).
        skips: the encoder activations of :func:`encode_with_skips` (finest first), or None.
        gamma: scale of the skip activations (1 for Difix).

    Returns:
        [N, 3, 8h, 8w], not clamped.
    """
    decoder = vae.decoder
    if vae.post_quant_conv is not None:
        latents = vae.post_quant_conv(latents)
    sample = decoder.conv_in(latents)
    sample = decoder.mid_block(sample, None)
    for k, up_block in enumerate(decoder.up_blocks):
        if skips is not None:
            skip_conv = getattr(decoder, f"skip_conv_{k + 1}")
            sample = sample + skip_conv(skips[-1 - k] * gamma)
        sample = up_block(sample, None)
    sample = decoder.conv_act(decoder.conv_norm_out(sample))
    return decoder.conv_out(sample)


def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of ``module``'s (first) parameters."""
    return next(module.parameters()).dtype

