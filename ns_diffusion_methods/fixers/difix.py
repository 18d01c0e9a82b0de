"""Difix: SD-Turbo fine-tuned as a single-step image fixer, with reference-view attention (Difix3D+, CVPR 2025).

Wu, Zhang, Turki, Ren, Gao, Shou, Fidler, Gojcic, Ling, "DIFIX3D+: Improving 3D Reconstructions with Single-Step
Diffusion Models", CVPR 2025, https://arxiv.org/abs/2503.01774. Weights: ``nvidia/difix`` (no reference view) and
``nvidia/difix_ref`` (with reference views), NVIDIA non-commercial licence plus the SD-Turbo licence.

One forward pass (:meth:`DifixModel.forward`), for a render and its V-1 reference views stacked as [B, V, 3, H, W]:

1. encode all B*V images with the SD VAE, ``z = sample(q(z|x)) * scaling_factor``, keeping the inputs of the 4
   encoder down-blocks (pix2pix-turbo skip activations);
2. one UNet pass at t = 199 with the cached embedding of "remove degradation"; the self-attention layers mix the
   tokens of the V views of each sample (:mod:`~ns_diffusion_methods.fixers.attention`); no noise is added to ``z``;
3. the clean-latent prediction with the scheduler's alpha-bar a: ``z0 = (z - sqrt(1 - a) * eps) / sqrt(a)``;
4. decode ``z0 / scaling_factor`` with a decoder that adds ``skip_conv_k(gamma * skip_k)`` before each up-block
   (1x1 convolutions) and carries a rank-4 LoRA (peft, adapter ``vae_skip``); clamp to [-1, 1]; keep view 0.

This module uses diffusers and peft only (no nerfstudio API). Nothing is monkey-patched: the skip path is written out in
:func:`encode_with_skips` / :func:`decode_with_skips` over diffusers' own sub-modules, and the view mixing is an
attention processor installed on this model's UNet.

Weights layout (``from_pretrained`` / ``save_pretrained``), that of the published diffusers repositories::

    model_index.json
    unet/config.json, unet/diffusion_pytorch_model.safetensors     full UNet2DConditionModel state dict
    vae/config.json (+ lora_rank, gamma, ignore_skip), vae/diffusion_pytorch_model.safetensors
        AutoencoderKL state dict after peft injection: decoder.skip_conv_{1..4}.base_layer.weight,
        <decoder module>.base_layer.{weight,bias}, <decoder module>.lora_{A,B}.vae_skip.weight
    scheduler/scheduler_config.json
    text_encoder/ + tokenizer/    (published repos)  or  prompt_embeds.safetensors (folders saved here)
"""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ns_diffusion_methods.errors import ModelUnavailableError, ResourceError, is_out_of_memory
from ns_diffusion_methods.fixers.attention import install_reference_attention
from ns_diffusion_methods.fixers.base import (
    Fixer,
    FixerConfig,
    check_fixer_inputs,
    resize_images,
    resolve_dtype,
)

DEFAULT_PROMPT = "remove degradation"
DEFAULT_TIMESTEP = 199
#: peft adapter name of the VAE-decoder LoRA in the published weights
LORA_ADAPTER = "vae_skip"
#: decoder modules carrying the LoRA: every module of the decoder whose name ends with one of these (pix2pix-turbo)
LORA_TARGET_SUFFIXES: Tuple[str, ...] = ("conv1", "conv2", "conv_in", "conv_shortcut", "conv", "conv_out",
                                         "to_k", "to_q", "to_v", "to_out.0")
#: initial value of fresh skip convolutions (near zero, so a fresh model starts as the plain VAE)
SKIP_INIT = 1e-5

#: ``stabilityai/sd-turbo`` UNet configuration (SD 2.1 architecture, 865,910,724 parameters)
SD_TURBO_UNET_CONFIG: Dict[str, Any] = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280, 1280],
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn", attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
    use_linear_projection=True, act_fn="silu", norm_num_groups=32, norm_eps=1e-5, flip_sin_to_cos=True, freq_shift=0,
    downsample_padding=1, mid_block_scale_factor=1, center_input_sample=False, upcast_attention=False)
#: ``stabilityai/sd-turbo`` VAE configuration (the SD 2 VAE, 83,653,863 parameters)
SD_TURBO_VAE_CONFIG: Dict[str, Any] = dict(
    in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512], layers_per_block=2,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, act_fn="silu",
    norm_num_groups=32, sample_size=768, scaling_factor=0.18215)
#: SD-Turbo's text embedding shape (77 CLIP tokens of width 1024)
SD_TURBO_PROMPT_SHAPE = (1, 77, 1024)

#: files a published or saved Difix folder must contain (the prompt source is checked separately)
REQUIRED_FILES: Tuple[str, ...] = ("model_index.json", "unet/config.json", "vae/config.json",
                                   "scheduler/scheduler_config.json")
DOWNLOAD_PATTERNS: Tuple[str, ...] = ("model_index.json", "unet/*", "vae/*", "scheduler/*", "text_encoder/*",
                                      "tokenizer/*", "prompt_embeds.safetensors")
PROMPT_FILE = "prompt_embeds.safetensors"
WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"


# ---------------------------------------------------------------------------------------------------------------
# VAE with encoder-to-decoder skips (pix2pix-turbo)


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


def _module_dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


# ---------------------------------------------------------------------------------------------------------------
# the model


class DifixModel(nn.Module):
    """Difix: SD-Turbo UNet + skip-connected, LoRA-adapted SD VAE, run as one denoising step.

    Args:
        unet: a ``UNet2DConditionModel`` (epsilon or v prediction).
        vae: an ``AutoencoderKL``; skip convolutions and the decoder LoRA are added here unless already present.
        scheduler: a diffusers scheduler; only its ``alphas_cumprod`` and ``prediction_type`` are used.
        prompt_embeds: [1, L, D] text embedding of ``prompt`` (computed once; the text encoder is not kept).
        prompt: the text ``prompt_embeds`` encodes (recorded by :meth:`save_pretrained`).
        timestep: the denoising timestep (199).
        gamma: scale of the skip activations.
        ignore_skip: decode without the skip connections (pix2pix-turbo's flag; False for Difix).
        lora_rank / lora_alpha: the decoder LoRA.
        reference_views: whether the weights were trained with reference views (``nvidia/difix_ref``); a model
            without them ignores references in :class:`DifixFixer`.
        sample_posterior: encode with a sample of the VAE posterior (the official code) instead of its mean.
    """

    def __init__(self, unet: nn.Module, vae: nn.Module, scheduler: Any, prompt_embeds: Tensor, *,
                 prompt: str = DEFAULT_PROMPT, timestep: int = DEFAULT_TIMESTEP, gamma: float = 1.0,
                 ignore_skip: bool = False, lora_rank: int = 4, lora_alpha: float = 8.0,
                 reference_views: bool = True, sample_posterior: bool = True) -> None:
        super().__init__()
        num_train = len(scheduler.alphas_cumprod)
        if not 0 <= timestep < num_train:
            raise ValueError(f"`timestep` must be in [0, {num_train}), but got {timestep}.")
        prediction_type = scheduler.config.get("prediction_type", "epsilon")
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            raise ValueError(f"Unsupported scheduler prediction_type {prediction_type!r}.")
        if prompt_embeds.ndim != 3 or prompt_embeds.shape[0] != 1:
            raise ValueError(f"`prompt_embeds` must be [1, L, D], but got {tuple(prompt_embeds.shape)}.")
        if prompt_embeds.shape[-1] != unet.config.cross_attention_dim:
            raise ValueError(f"The prompt embedding width {prompt_embeds.shape[-1]} differs from the UNet's "
                             f"cross_attention_dim {unet.config.cross_attention_dim}.")
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.prompt = prompt
        self.timestep = int(timestep)
        #: alpha-bar of the scheduler at ``timestep`` (0.75524 for SD at t = 199)
        self.alpha_bar = float(scheduler.alphas_cumprod[self.timestep])
        self.prediction_type = prediction_type
        self.gamma = float(gamma)
        self.ignore_skip = bool(ignore_skip)
        self.lora_rank = int(lora_rank)
        self.lora_alpha = float(lora_alpha)
        self.reference_views = bool(reference_views)
        self.sample_posterior = bool(sample_posterior)
        self.lora_merged = False
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)
        if not hasattr(vae.decoder, "skip_conv_1"):  # a plain VAE (not already prepared by a loader)
            add_skip_connections(vae, lora_rank=self.lora_rank, lora_alpha=self.lora_alpha)
        #: the reference-view processor shared by all UNet self-attention layers
        self.attention = install_reference_attention(unet)

    # -- geometry ---------------------------------------------------------------------------------------------

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (8 for the SD VAE): the skips pair encoder and decoder levels."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    # -- the three stages -------------------------------------------------------------------------------------

    def encode(self, images: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, List[Tensor]]:
        """[N, 3, H, W] in [-1, 1] -> scaled latents [N, 4, H/8, W/8] and the encoder skip activations."""
        height, width = images.shape[-2:]
        if height % self.size_multiple or width % self.size_multiple:
            raise ValueError(f"Image size {height}x{width} must be divisible by {self.size_multiple}; "
                             f"DifixFixer resizes inputs for you.")
        moments, skips = encode_with_skips(self.vae, images.to(_module_dtype(self.vae)))
        mean, logvar = moments.chunk(2, dim=1)
        if self.sample_posterior:
            std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))
            noise = torch.randn(mean.shape, generator=generator, dtype=torch.float32,
                                device=generator.device if generator is not None else mean.device)
            mean = mean + std * noise.to(device=mean.device, dtype=mean.dtype)
        return mean * self.scaling_factor, skips

    def predict_clean_latents(self, latents: Tensor, num_views: int = 1) -> Tensor:
        """One UNet pass at ``timestep`` on latents laid out (b v), then the scheduler's x0 prediction.

        ``latents`` are treated as x_t without adding noise (Difix); returns (z - sqrt(1-a) eps) / sqrt(a) in float32
        for an epsilon model (the equivalent formulas for v / sample prediction).
        """
        count = latents.shape[0]
        dtype = _module_dtype(self.unet)
        timesteps = torch.full((count,), self.timestep, device=latents.device, dtype=torch.long)
        embeds = self.prompt_embeds.to(device=latents.device, dtype=dtype).expand(count, -1, -1)
        # V reaches every attention layer as an argument of the call, so blocks recomputed by gradient checkpointing
        # in the backward pass mix the same views as in the forward pass
        output = self.unet(latents.to(dtype), timesteps, encoder_hidden_states=embeds,
                           cross_attention_kwargs={"num_views": num_views}).sample
        # the scheduler step with previous alpha-bar = 1 reduces to the clean-sample prediction
        alpha, sigma = math.sqrt(self.alpha_bar), math.sqrt(1.0 - self.alpha_bar)
        latents, output = latents.float(), output.float()
        if self.prediction_type == "epsilon":
            return (latents - sigma * output) / alpha
        if self.prediction_type == "v_prediction":
            return alpha * latents - sigma * output
        return output

    def decode(self, latents: Tensor, skips: Optional[Sequence[Tensor]]) -> Tensor:
        """Scaled latents [N, 4, h, w] (+ skips) -> images [N, 3, 8h, 8w] clamped to [-1, 1]."""
        dtype = _module_dtype(self.vae)
        use_skips = None if self.ignore_skip else skips
        images = decode_with_skips(self.vae, (latents / self.scaling_factor).to(dtype), use_skips, self.gamma)
        return images.clamp(-1.0, 1.0)

    def forward(self, images: Tensor, generator: Optional[torch.Generator] = None,
                decode_views: Literal["first", "all"] = "first") -> Tensor:
        """Fix renders, each with V-1 reference views.

        Args:
            images: [B, V, 3, H, W] in [-1, 1]; view 0 is the image to fix, views 1.. its references.
            generator: randomness of the VAE posterior sample.
            decode_views: "first" decodes view 0 only (inference); "all" decodes every view (training, where the
                reconstruction of the references is supervised too).

        Returns:
            [B, 1, 3, H, W] ("first") or [B, V, 3, H, W] ("all") in [-1, 1].
        """
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"`images` must be [B, V, 3, H, W], but got {tuple(images.shape)}.")
        batch, views, _, height, width = images.shape
        latents, skips = self.encode(images.reshape(batch * views, 3, height, width), generator)  # (b v) layout
        clean = self.predict_clean_latents(latents, num_views=views)
        if decode_views == "first":
            # [B*V, ...] -> [B, V, ...][:, 0]: only the render is decoded, with its own skips
            clean = clean.unflatten(0, (batch, views))[:, 0]
            skips = [s.unflatten(0, (batch, views))[:, 0] for s in skips]
        decoded = self.decode(clean, skips)
        return decoded.unflatten(0, (batch, -1))

    # -- inference preparation ----------------------------------------------------------------------------------

    def merge_lora(self) -> "DifixModel":
        """Fold the decoder LoRA into its base weights (faster inference; :meth:`save_pretrained` then refuses)."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        if not self.lora_merged:
            for module in self.vae.modules():
                if isinstance(module, BaseTunerLayer) and not module.merged:
                    module.merge(adapter_names=[LORA_ADAPTER])
            self.lora_merged = True
        return self

    def prepare_for_inference(self, device: Union[str, torch.device], dtype: torch.dtype,
                              merge_lora: bool = True) -> "DifixModel":
        """Freeze, merge the LoRA (in float32), then move to ``device`` / ``dtype``.

        In fp16 the VAE stays in float32 when its config asks for it (``force_upcast``; the SD VAE overflows in fp16).
        """
        self.eval().requires_grad_(False)
        if merge_lora:
            self.float().merge_lora()
        self.to(device=device)
        vae_dtype = torch.float32 if (dtype == torch.float16 and self.vae.config.get("force_upcast", True)) else dtype
        # nn.Module.to: diffusers' ModelMixin.to warns about fp32-pinned modules, which these models do not have
        nn.Module.to(self.unet, dtype=dtype)
        nn.Module.to(self.vae, dtype=vae_dtype)
        return self

    def trainable_parameters(self) -> List[nn.Parameter]:
        """Difix's fine-tuned parameters: the whole UNet, the decoder LoRA and the skip convolutions (full weights).

        The VAE encoder, the rest of the decoder and the text embedding stay frozen. Sets ``requires_grad``.
        """
        if self.lora_merged:
            raise RuntimeError("The decoder LoRA was merged for inference; load the model again to train it.")
        self.unet.requires_grad_(True)
        self.vae.requires_grad_(False)
        params = list(self.unet.parameters())
        for name, param in self.vae.named_parameters():
            if f".lora_A.{LORA_ADAPTER}." in name or f".lora_B.{LORA_ADAPTER}." in name or ".skip_conv_" in name:
                param.requires_grad_(True)
                params.append(param)
        return params

    # -- builders -----------------------------------------------------------------------------------------------

    @classmethod
    def tiny(cls, *, seed: int = 0, reference_views: bool = True, prompt: str = DEFAULT_PROMPT,
             timestep: int = DEFAULT_TIMESTEP) -> "DifixModel":
        """Tiny random Difix (same code paths; for tests and CPU runs).

        The prompt embedding is computed by a tiny CLIP text encoder and tokenizer, as for published weights; the skip
        convolutions and LoRA B matrices get small random values so that every path changes the output.
        """
        from ns_diffusion_methods.diffusion.tiny import tiny_components

        with tempfile.TemporaryDirectory() as folder:
            parts = tiny_components(folder, seed=seed)
            embeds = encode_prompt(parts["text_encoder"], parts["tokenizer"], prompt)
        model = cls(parts["unet"], parts["vae"], parts["scheduler"], embeds, prompt=prompt, timestep=timestep,
                    reference_views=reference_views)
        generator = torch.Generator().manual_seed(seed + 3)
        with torch.no_grad():
            for name, param in model.vae.named_parameters():
                if ".skip_conv_" in name and ".lora_" not in name:
                    param.copy_(0.1 * torch.randn(param.shape, generator=generator))
                elif f".lora_B.{LORA_ADAPTER}." in name:
                    param.copy_(0.05 * torch.randn(param.shape, generator=generator))
        return model

    @classmethod
    def full_size_random(cls, *, seed: int = 0, device: Union[str, torch.device] = "cpu",
                         reference_views: bool = True) -> "DifixModel":
        """The full SD-Turbo-size architecture with random weights (for speed and memory benchmarks only).

        Built on the meta device, then materialised on ``device`` and filled with N(0, 0.02) weights (norm layers:
        weight 1, bias 0), which is much faster than the layers' default initialisation.
        """
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        from ns_diffusion_methods.diffusion.tiny import sd_scheduler_config

        generator = torch.Generator().manual_seed(seed)
        embeds = torch.randn(SD_TURBO_PROMPT_SHAPE, generator=generator)
        scheduler = DDPMScheduler.from_config(sd_scheduler_config())
        with torch.device("meta"):
            model = cls(UNet2DConditionModel(**SD_TURBO_UNET_CONFIG), AutoencoderKL(**SD_TURBO_VAE_CONFIG), scheduler,
                        embeds, reference_views=reference_views)
        model.to_empty(device=device)
        model.prompt_embeds = embeds.to(device)
        torch.manual_seed(seed)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.ndim > 1:
                    param.normal_(0.0, 0.02)
                elif name.endswith("weight") and "norm" in name:
                    param.fill_(1.0)
                else:
                    param.zero_()
        return model

    @classmethod
    def from_pretrained(cls, name_or_path: Union[str, Path], *, prompt: str = DEFAULT_PROMPT,
                        timestep: int = DEFAULT_TIMESTEP, flag: str = "--model",
                        fresh_adapters: bool = False) -> "DifixModel":
        """Load Difix weights from a Hub id (``nvidia/difix_ref``, ``nvidia/difix``), a folder, or ``tiny``.

        Every weight must be present and every stored key used: otherwise :class:`ModelUnavailableError` lists the
        missing and unexpected keys. The prompt embedding is computed from ``text_encoder/`` + ``tokenizer/``
        when present (then freed), else read from ``prompt_embeds.safetensors`` (folders written by
        :meth:`save_pretrained`).

        Args:
            name_or_path: Hub id, folder, or ``tiny``.
            prompt: the prompt to embed.
            timestep: the denoising timestep.
            flag: the command-line flag naming the model (for error messages).
            fresh_adapters: the folder is a plain SD-Turbo-style model (``stabilityai/sd-turbo``) without skip
                convolutions or LoRA: create them fresh (skips 1e-5, LoRA identity), as for training from scratch.
                Only the skip/LoRA keys may then be missing.
        """
        if str(name_or_path) == "tiny":
            return cls.tiny(prompt=prompt, timestep=timestep)
        from ns_diffusion_methods.diffusion.hub import resolve_pretrained

        folder = resolve_pretrained(name_or_path, required=REQUIRED_FILES, flag=flag,
                                    allow_patterns=list(DOWNLOAD_PATTERNS))
        return _load_folder(cls, folder, str(name_or_path), prompt=prompt, timestep=timestep, flag=flag,
                            fresh_adapters=fresh_adapters)

    def save_pretrained(self, folder: Union[str, Path]) -> Path:
        """Write the diffusers layout :meth:`from_pretrained` reads (published key names; prompt embedding cached).

        Weights are written in float32 with unmerged LoRA.
        """
        if self.lora_merged:
            raise RuntimeError("This model's decoder LoRA was merged for inference, so its weights no longer match "
                               "the published layout; save the model before prepare_for_inference().")
        from safetensors.torch import save_file

        folder = Path(folder)
        for sub in ("unet", "vae", "scheduler"):
            (folder / sub).mkdir(parents=True, exist_ok=True)

        def tensors(module: nn.Module) -> Dict[str, Tensor]:
            return {k: v.detach().to(device="cpu", dtype=torch.float32 if v.is_floating_point() else v.dtype)
                    .contiguous() for k, v in module.state_dict().items()}

        self.unet.save_config(folder / "unet")
        save_file(tensors(self.unet), str(folder / "unet" / WEIGHTS_NAME))
        self.vae.save_config(folder / "vae")
        vae_config = json.loads((folder / "vae" / "config.json").read_text())
        vae_config.update(lora_rank=self.lora_rank, lora_alpha=self.lora_alpha, gamma=self.gamma,
                          ignore_skip=self.ignore_skip)
        (folder / "vae" / "config.json").write_text(json.dumps(vae_config, indent=2, sort_keys=True))
        save_file(tensors(self.vae), str(folder / "vae" / WEIGHTS_NAME))
        self.scheduler.save_config(folder / "scheduler")
        save_file({"prompt_embeds": self.prompt_embeds.detach().float().cpu().contiguous()},
                  str(folder / PROMPT_FILE), metadata={"prompt": self.prompt})
        import diffusers

        index = {
            "_class_name": "DifixPipeline",
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", type(self.scheduler).__name__],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "ns_diffusion_methods": {"prompt": self.prompt, "timestep": self.timestep,
                                     "reference_views": self.reference_views},
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        return folder


# ---------------------------------------------------------------------------------------------------------------
# loading


def encode_prompt(text_encoder: nn.Module, tokenizer: Any, prompt: str) -> Tensor:
    """[1, L, D] CLIP embedding of ``prompt`` (last hidden state, padded to the tokenizer's max length)."""
    tokens = tokenizer(prompt, max_length=tokenizer.model_max_length, padding="max_length", truncation=True,
                       return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(tokens.to(next(text_encoder.parameters()).device))[0].float().cpu()


def _key_listing(keys: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")


def _weights_error(model: str, file: Path, missing: Sequence[str], unexpected: Sequence[str], flag: str
                   ) -> ModelUnavailableError:
    parts = []
    if missing:
        parts.append(f"missing keys: {_key_listing(missing)}")
    if unexpected:
        parts.append(f"unexpected keys: {_key_listing(unexpected)}")
    return ModelUnavailableError(
        f"The weights {file} (of `{model}`) do not match the Difix architecture; {'; '.join(parts)}.\n"
        f"  The model is not used half-initialised. Re-download or re-save it (a folder written by "
        f"`ns-diffusion train-fixer` or DifixModel.save_pretrained), or point {flag} at a complete copy.")


def _read_state_dict(component: Path, model: str, flag: str) -> Tuple[Dict[str, Tensor], Path]:
    """The tensors of ``component/diffusion_pytorch_model.safetensors`` (or its shards)."""
    from safetensors.torch import load_file

    def read(file: Path) -> Dict[str, Tensor]:
        try:
            return load_file(str(file))
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for truncated files
            raise ModelUnavailableError(
                f"The weights {file} (of `{model}`) cannot be read ({type(err).__name__}: {err}). Re-download or "
                f"re-save the model, or point {flag} at a complete copy.") from None

    single = component / WEIGHTS_NAME
    index = component / (WEIGHTS_NAME + ".index.json")
    if single.exists():
        return read(single), single
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: Dict[str, Tensor] = {}
        for shard in shards:
            state.update(read(component / shard))
        return state, index
    raise ModelUnavailableError(f"The model folder {component.parent} (for `{model}`) has no {component.name}/"
                                f"{WEIGHTS_NAME}. Re-download or re-save it, or point {flag} at a complete copy.")


def _load_into(module: nn.Module, component: Path, model: str, flag: str) -> None:
    """Load ``component``'s weights into ``module``; any missing or unexpected key is an error naming it."""
    state, file = _read_state_dict(component, model, flag)
    result = module.load_state_dict(state, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise _weights_error(model, file, result.missing_keys, result.unexpected_keys, flag)


def _class_config(cls: Any, config: Dict[str, Any]) -> Dict[str, Any]:
    """The entries of a saved diffusers config that ``cls``'s constructor accepts (drops _class_name & co)."""
    import inspect

    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    return {k: v for k, v in config.items() if k in accepted}


def _load_folder(cls: type, folder: Path, model: str, *, prompt: str, timestep: int, flag: str,
                 fresh_adapters: bool) -> DifixModel:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

    index = json.loads((folder / "model_index.json").read_text())
    ours = index.get("ns_diffusion_methods", {})
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    vae_config = json.loads((folder / "vae" / "config.json").read_text())
    scheduler = DDPMScheduler.from_config(json.loads((folder / "scheduler" / "scheduler_config.json").read_text()))
    # nvidia/difix_ref ships its cross-view UNet as custom code; folders saved here record the flag
    reference_views = bool(ours.get("reference_views", (folder / "unet" / "unet_2d_condition.py").exists()))
    embeds = _prompt_embedding(folder, model, prompt, flag)

    lora_rank, lora_alpha = vae_config.get("lora_rank", 4), vae_config.get("lora_alpha", 8.0)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the files (checked below)
        unet = UNet2DConditionModel(**_class_config(UNet2DConditionModel, unet_config))
        vae = AutoencoderKL(**_class_config(AutoencoderKL, vae_config))
        if not fresh_adapters:
            add_skip_connections(vae, lora_rank=lora_rank, lora_alpha=lora_alpha)
    _load_into(unet, folder / "unet", model, flag)
    _load_into(vae, folder / "vae", model, flag)
    if fresh_adapters:  # a plain SD VAE: new skip convolutions (1e-5) and an identity LoRA, as for training
        add_skip_connections(vae, lora_rank=lora_rank, lora_alpha=lora_alpha)
    difix = cls(unet, vae, scheduler, embeds, prompt=prompt, timestep=timestep, gamma=vae_config.get("gamma", 1.0),
                ignore_skip=vae_config.get("ignore_skip", False), lora_rank=lora_rank, lora_alpha=lora_alpha,
                reference_views=reference_views)
    leftover = [name for name, t in list(difix.named_parameters()) + list(difix.named_buffers()) if t.is_meta]
    assert not leftover, f"tensors left uninitialised after loading {folder}: {leftover[:5]}"
    return difix


def _prompt_embedding(folder: Path, model: str, prompt: str, flag: str) -> Tensor:
    """Encode ``prompt`` with the folder's text encoder (then free it), or read the cached embedding."""
    if (folder / "text_encoder").is_dir() and (folder / "tokenizer").is_dir():
        from transformers import CLIPTextModel, CLIPTokenizer

        tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"))
        text_encoder, info = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), output_loading_info=True)
        bad_missing, bad_unexpected = info.get("missing_keys", []), info.get("unexpected_keys", [])
        if bad_missing or bad_unexpected:
            raise _weights_error(model, folder / "text_encoder", list(bad_missing), list(bad_unexpected), flag)
        embeds = encode_prompt(text_encoder.eval(), tokenizer, prompt)
        del text_encoder
        return embeds
    cached = folder / PROMPT_FILE
    if cached.exists():
        from safetensors import safe_open

        with safe_open(str(cached), framework="pt") as file:
            stored = (file.metadata() or {}).get("prompt")
            embeds = file.get_tensor("prompt_embeds")
        if stored != prompt:
            raise ModelUnavailableError(
                f"The model folder {folder} stores the embedding of the prompt {stored!r} but has no text_encoder/ "
                f"and tokenizer/ to encode {prompt!r}. Use its prompt, or add the text encoder and tokenizer of the "
                f"base model (stabilityai/sd-turbo) to the folder.")
        return embeds.float()
    raise ModelUnavailableError(
        f"The model folder {folder} (for `{model}`) has neither text_encoder/ + tokenizer/ nor {PROMPT_FILE}, so "
        f"the prompt cannot be embedded. Re-download or re-save it, or point {flag} at a complete copy.")


# ---------------------------------------------------------------------------------------------------------------
# the fixer


def working_size(height: int, width: int, multiple: int) -> Tuple[int, int]:
    """(height, width) rounded to the nearest multiples of ``multiple`` (at least one multiple)."""
    return (max(multiple, int(round(height / multiple)) * multiple),
            max(multiple, int(round(width / multiple)) * multiple))


class DifixFixer(Fixer):
    """Difix behind the :class:`~ns_diffusion_methods.fixers.base.Fixer` interface.

    - any image size: the network runs at the size rounded to a multiple of 8 (or ``config.resolution``), and the
      output is resized back to the input size (exact when no rounding is needed);
    - references of any size and number per image (resized to the image's working size); images with equal
      reference counts are batched, ``config.chunk_size`` at a time, to bound memory; after a GPU out-of-memory error
      the batch is halved (down to one image) and retried with the same noise, so the result does not change;
    - weights in ``config.dtype`` (bf16 on CUDA by default; diffusers' reduced-precision path, faster than autocast),
      SDPA attention, ``torch.inference_mode``; deterministic for a seed.

    Args:
        config: the fixer configuration.
        device: where to run.
        model: an already built :class:`DifixModel` (default: ``DifixModel.from_pretrained(config.model)``).
    """

    def __init__(self, config: FixerConfig, device: Union[str, torch.device] = "cpu",
                 model: Optional[DifixModel] = None, flag: str = "--model") -> None:
        super().__init__(config, device, flag)
        if config.chunk_size < 1:
            raise ValueError(f"`chunk_size` must be >= 1, but got {config.chunk_size}.")
        self.dtype = resolve_dtype(config.dtype, self.device)
        if model is None:
            model = DifixModel.from_pretrained(config.model, prompt=config.prompt, timestep=config.timestep,
                                               flag=flag)
        self.model = model.prepare_for_inference(self.device, self.dtype)
        self._warned_references = False
        #: images per network pass: ``config.chunk_size``, halved for the rest of the run after an out-of-memory error
        self.chunk_size = config.chunk_size

    @property
    def uses_references(self) -> bool:
        return self.model.reference_views

    def fix(self, images: Tensor, references: Optional[Sequence[Optional[Tensor]]] = None, *,
            seed: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        check_fixer_inputs(images, references)
        if generator is None:
            generator = torch.Generator().manual_seed(self.config.seed if seed is None else seed)
        batch, _, height, width = images.shape
        refs: List[Optional[Tensor]] = list(references) if references is not None else [None] * batch
        if not self.model.reference_views and any(r is not None and len(r) for r in refs):
            if not self._warned_references:
                warnings.warn(f"The fixer model `{self.config.model}` was trained without reference views; the "
                              f"reference images are ignored (use nvidia/difix_ref to use them).", stacklevel=2)
                self._warned_references = True
            refs = [None] * batch
        counts = [0 if r is None else len(r) for r in refs]
        size = tuple(self.config.resolution) if self.config.resolution is not None else \
            working_size(height, width, self.model.size_multiple)
        if size[0] % self.model.size_multiple or size[1] % self.model.size_multiple:
            raise ValueError(f"`resolution` {size} must be divisible by {self.model.size_multiple}.")

        output = torch.empty_like(images)
        start = 0
        while start < batch:  # chunks of consecutive images with the same number of references
            stop = start + 1
            while stop < batch and stop - start < self.chunk_size and counts[stop] == counts[start]:
                stop += 1
            views = [resize_images(images[start:stop].float(), size)]  # [b, 3, h, w]
            if counts[start]:
                views += [torch.stack([resize_images(refs[i][v:v + 1].float().to(images.device), size)[0]
                                       for i in range(start, stop)]) for v in range(counts[start])]
            stacked = torch.stack(views, dim=1).to(self.device)  # [b, V, 3, h, w], view 0 = the render
            noise_state = generator.get_state()
            try:
                with torch.inference_mode():
                    fixed = self.model(stacked * 2.0 - 1.0, generator=generator, decode_views="first")[:, 0]
            except RuntimeError as err:
                if not is_out_of_memory(err):
                    raise
                fixed = None  # the failed pass's activations go with the traceback at the end of this block
            if fixed is None:
                del stacked, views
                generator.set_state(noise_state)  # the retry draws the same posterior noise
                self._halve_chunk(stop - start, size, counts[start])
                continue
            fixed = (fixed.float() + 1.0) / 2.0
            output[start:stop] = resize_images(fixed, (height, width)).clamp(0.0, 1.0).to(output)
            start = stop
        return output

    def _halve_chunk(self, failed: int, size: Tuple[int, int], references: int) -> None:
        """After an out-of-memory error on ``failed`` images: half as many per pass from now on, or give up at one."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        if failed <= 1:
            raise ResourceError(
                f"Out of GPU memory fixing a single {size[1]}x{size[0]} image with {references} reference view(s) "
                f"(`{self.config.model}`, {self.dtype}). Free GPU memory (other processes on the GPU), lower the "
                f"working size (resolution) or the number of reference views, use bf16, or use a GPU with more "
                f"memory.")
        self.chunk_size = failed // 2
        warnings.warn(f"Out of GPU memory fixing {failed} images at once: retrying with {self.chunk_size} per pass.",
                      stacklevel=3)

