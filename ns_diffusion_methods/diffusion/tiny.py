"""Tiny diffusers components with random weights, built from config: nothing is downloaded.

Tests and CPU runs use these in place of published weights (Stable Diffusion, SD-Turbo, Difix, SD-inpainting). They
are real diffusers / transformers classes with the same code paths as the full-size models, only narrow and shallow,
and seeded so that two builds with the same arguments are identical.

- :func:`tiny_unet` -- a ``UNet2DConditionModel`` with cross-attention blocks (so self-attention ``attn1`` and text
  cross-attention ``attn2`` both exist); ``in_channels`` is free (4 for text-to-image and Difix, 9 for inpainting).
- :func:`tiny_vae` -- an ``AutoencoderKL`` with 4 resolution levels (spatial factor 8, like the SD VAE).
- :func:`tiny_text_encoder` + :func:`write_tiny_tokenizer` / :func:`tiny_tokenizer` -- a ``CLIPTextModel`` and a
  real byte-level BPE ``CLIPTokenizer`` read from small ``vocab.json`` / ``merges.txt`` files written to a folder.
- :func:`sd_scheduler_config` -- the Stable Diffusion noise schedule (scaled-linear betas 0.00085 -> 0.012).
- :func:`tiny_components` -- all of the above at matching sizes.

These models produce noise, not images: use them to test shapes, maths, plumbing and learning, never for quality.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

#: words whose BPE merges the tiny vocabulary contains (any other text still tokenizes, byte by byte)
_TINY_WORDS: Tuple[str, ...] = ("remove", "degradation", "a", "photo", "of", "background")


def tiny_unet(
    *,
    in_channels: int = 4,
    out_channels: int = 4,
    block_out_channels: Sequence[int] = (16, 32),
    layers_per_block: int = 1,
    cross_attention_dim: int = 16,
    attention_head_dim: int = 4,
    norm_num_groups: int = 4,
    down_block_types: Sequence[str] = ("CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types: Sequence[str] = ("UpBlock2D", "CrossAttnUpBlock2D"),
    sample_size: int = 8,
    seed: int = 0,
):
    """A small ``UNet2DConditionModel`` (SD layout: cross-attention at the finest level and in the mid block).

    Args:
        in_channels: latent channels in; 4 for text-to-image / Difix, 9 for SD inpainting (latent + mask + masked).
        out_channels: channels predicted (4: the noise of a 4-channel latent).
        block_out_channels: channels per resolution level; each must be divisible by ``norm_num_groups``.
        layers_per_block: resnets (and transformer blocks) per level.
        cross_attention_dim: width of the text embedding (must equal the text encoder's hidden size).
        attention_head_dim: channels per attention head.
        norm_num_groups: GroupNorm groups.
        down_block_types / up_block_types: diffusers block names, one per level.
        sample_size: nominal latent size (only recorded in the config).
        seed: seed of the random initialisation.
    """
    from diffusers import UNet2DConditionModel

    assert len(down_block_types) == len(block_out_channels) == len(up_block_types), (
        down_block_types, block_out_channels, up_block_types)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DConditionModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=out_channels,
            block_out_channels=tuple(block_out_channels),
            layers_per_block=layers_per_block,
            down_block_types=tuple(down_block_types),
            up_block_types=tuple(up_block_types),
            cross_attention_dim=cross_attention_dim,
            # diffusers' SD configs call the number of heads "attention_head_dim"; give true head counts here
            attention_head_dim=tuple(max(1, c // attention_head_dim) for c in block_out_channels),
            norm_num_groups=norm_num_groups,
            use_linear_projection=True,
        )


def tiny_vae(
    *,
    in_channels: int = 3,
    out_channels: int = 3,
    latent_channels: int = 4,
    block_out_channels: Sequence[int] = (8, 8, 16, 16),
    layers_per_block: int = 1,
    norm_num_groups: int = 4,
    scaling_factor: float = 0.18215,
    seed: int = 0,
):
    """A small ``AutoencoderKL``; with the default 4 levels its spatial factor is 8, as for the SD VAE.

    Args:
        in_channels / out_channels: image channels.
        latent_channels: latent channels (4 for SD).
        block_out_channels: channels per level (the number of levels sets the factor 2^(levels-1)).
        layers_per_block: resnets per level.
        norm_num_groups: GroupNorm groups; every channel count must be divisible by it.
        scaling_factor: latent scale recorded in the config (SD: 0.18215).
        seed: seed of the random initialisation.
    """
    from diffusers import AutoencoderKL

    levels = len(block_out_channels)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return AutoencoderKL(
            in_channels=in_channels,
            out_channels=out_channels,
            latent_channels=latent_channels,
            block_out_channels=tuple(block_out_channels),
            down_block_types=("DownEncoderBlock2D",) * levels,
            up_block_types=("UpDecoderBlock2D",) * levels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            scaling_factor=scaling_factor,
            sample_size=32,
        )


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2 / CLIP byte-level alphabet: every byte maps to a printable unicode character."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _word_merges(word: str) -> List[Tuple[str, str]]:
    """Left-to-right merges that build ``word</w>`` from its characters (enough for a real BPE to find it)."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    merges = []
    while len(symbols) > 1:
        merges.append((symbols[0], symbols[1]))
        symbols = [symbols[0] + symbols[1]] + symbols[2:]
    return merges


def write_tiny_tokenizer(folder: Union[str, Path], *, model_max_length: int = 77,
                         words: Sequence[str] = _TINY_WORDS) -> Path:
    """Write a small CLIP byte-level BPE tokenizer (``vocab.json``, ``merges.txt``, configs) to ``folder``.

    The vocabulary holds the 256 byte symbols, their end-of-word forms, merges for ``words`` and the two special
    tokens, so any text tokenizes (unknown words byte by byte) and ``words`` become single tokens.

    Returns:
        ``folder``, loadable with ``CLIPTokenizer.from_pretrained(folder)``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    vocab: Dict[str, int] = {}
    for token in alphabet + [c + "</w>" for c in alphabet]:
        vocab.setdefault(token, len(vocab))
    merges: List[Tuple[str, str]] = []
    for word in words:
        for left, right in _word_merges(word):
            if (left, right) not in merges:
                merges.append((left, right))
                vocab.setdefault(left + right, len(vocab))
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length, **special}))
    return folder


def tiny_tokenizer(folder: Union[str, Path], **kwargs: Any):
    """A ``CLIPTokenizer`` read from a tiny vocabulary written to ``folder`` (see :func:`write_tiny_tokenizer`)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(write_tiny_tokenizer(folder, **kwargs)))


def tiny_text_encoder(*, tokenizer=None, hidden_size: int = 16, num_hidden_layers: int = 2,
                      num_attention_heads: int = 2, max_position_embeddings: int = 77, seed: int = 0):
    """A small ``CLIPTextModel`` whose vocabulary and special-token ids match ``tokenizer`` (when given).

    Args:
        tokenizer: the tokenizer it will read ids from (sets vocab size and bos/eos/pad ids).
        hidden_size: embedding width (= the UNet's ``cross_attention_dim``).
        num_hidden_layers / num_attention_heads: transformer depth and heads.
        max_position_embeddings: longest token sequence (the tokenizer's ``model_max_length``).
        seed: seed of the random initialisation.
    """
    from transformers import CLIPTextConfig, CLIPTextModel

    if tokenizer is not None:
        vocab_size = len(tokenizer)
        ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                   pad_token_id=tokenizer.pad_token_id)
    else:
        vocab_size, ids = 1000, dict(bos_token_id=0, eos_token_id=2, pad_token_id=1)
    config = CLIPTextConfig(vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                            num_hidden_layers=num_hidden_layers, num_attention_heads=num_attention_heads,
                            max_position_embeddings=max_position_embeddings, layer_norm_eps=1e-5, **ids)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CLIPTextModel(config).eval()


def sd_scheduler_config(**overrides: Any) -> Dict[str, Any]:
    """The Stable Diffusion (1.x / 2.x / SD-Turbo) training noise schedule, as a scheduler config dict."""
    config: Dict[str, Any] = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                                  beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False,
                                  set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
    config.update(overrides)
    return config


def tiny_components(folder: Union[str, Path], *, in_channels: int = 4, hidden_size: int = 16,
                    model_max_length: int = 77, seed: int = 0,
                    unet_kwargs: Optional[Dict[str, Any]] = None,
                    vae_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Matching tiny ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and ``scheduler`` (a ``DDPMScheduler``).

    Args:
        folder: where the tokenizer's vocabulary files are written.
        in_channels: UNet input channels (9 for an inpainting UNet).
        hidden_size: text embedding width, also the UNet's cross-attention width.
        model_max_length: tokenizer length and text positions.
        seed: base seed; each component uses its own offset of it.
        unet_kwargs / vae_kwargs: further arguments for :func:`tiny_unet` / :func:`tiny_vae`.
    """
    from diffusers import DDPMScheduler

    tokenizer = tiny_tokenizer(folder, model_max_length=model_max_length)
    return dict(
        unet=tiny_unet(in_channels=in_channels, cross_attention_dim=hidden_size, seed=seed, **(unet_kwargs or {})),
        vae=tiny_vae(seed=seed + 1, **(vae_kwargs or {})),
        text_encoder=tiny_text_encoder(tokenizer=tokenizer, hidden_size=hidden_size,
                                       max_position_embeddings=model_max_length, seed=seed + 2),
        tokenizer=tokenizer,
        scheduler=DDPMScheduler.from_config(sd_scheduler_config()),
    )
