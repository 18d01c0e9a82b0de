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

This module uses diffusers and peft only (no nerfstudio API), imported where models are built. Nothing is
monkey-patched: the skip path is written out over diffusers' own sub-modules, and the view mixing is an attention
processor installed on this model's UNet.

Weights on disk: :mod:`~ns_diffusion_methods.fixers.difix.weights`; the skip-connected VAE:
:mod:`~ns_diffusion_methods.fixers.difix.vae`; the fixer built on this model:
:class:`~ns_diffusion_methods.fixers.difix.fixer.DifixFixer`.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from ns_diffusion_methods.fixers.attention import install_reference_attention
from ns_diffusion_methods.fixers.difix import weights
from ns_diffusion_methods.fixers.difix.config import DEFAULT_PROMPT, DEFAULT_TIMESTEP
from ns_diffusion_methods.fixers.difix.vae import (
    LORA_ADAPTER,
    add_skip_connections,
    decode_with_skips,
    encode_with_skips,
    module_dtype,
)

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
        moments, skips = encode_with_skips(self.vae, images.to(module_dtype(self.vae)))
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
        dtype = module_dtype(self.unet)
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
        dtype = module_dtype(self.vae)
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
            embeds = weights.encode_prompt(parts["text_encoder"], parts["tokenizer"], prompt)
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

        folder = resolve_pretrained(name_or_path, required=weights.REQUIRED_FILES, flag=flag,
                                    allow_patterns=list(weights.DOWNLOAD_PATTERNS))
        return weights.load_folder(cls, folder, str(name_or_path), prompt=prompt, timestep=timestep, flag=flag,
                                   fresh_adapters=fresh_adapters)

    def save_pretrained(self, folder: Union[str, Path]) -> Path:
        """Write the diffusers layout :meth:`from_pretrained` reads (published key names; prompt embedding cached).

        Weights are written in float32 with unmerged LoRA.
        """
        if self.lora_merged:
            raise RuntimeError("This model's decoder LoRA was merged for inference, so its weights no longer match "
                               "the published layout; save the model before prepare_for_inference().")
        return weights.save_folder(self, Path(folder))
