"""The inpainter interface shared by every backend, and the config that picks a backend.

An inpainter fills the masked pixels of a batch of images. Two uses in MALD-NeRF (reference §1.2, §1.7):

- the first round fills the object region of the captured images starting from pure noise
  (``start_timestep=None``);
- every later round of the iterative dataset update re-inpaints from the current NeRF render ``source``, noised to
  ``start_timestep`` and denoised by *partial DDIM* (only the DDIM timesteps ``<= start_timestep``), still
  conditioned on the masked captured image and the mask.

Whatever the backend, pixels outside the mask are returned exactly as given in ``images`` (composite), so a dataset
update can never change them.

Backends (``InpainterConfig.model``):

- a Hugging Face id or a local diffusers folder of an inpainting LDM (9-channel UNet), default
  :data:`DEFAULT_MODEL` (:mod:`ns_diffusion_methods.inpainters.ldm`);
- ``tiny``: the same LDM code path with random-weight tiny models built from config, for tests and CPU smoke runs
  (:mod:`ns_diffusion_methods.inpainters.tiny`);
- ``opencv``: classical OpenCV inpainting (Telea), no weights, offline (:mod:`ns_diffusion_methods.inpainters.opencv`).

Inpainters are plain objects, not ``nn.Module``s: a pipeline that holds one never puts diffusion weights in its
checkpoints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Tuple, Type, Union

import torch
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

#: ``InpainterConfig.model`` values that are not a Hugging Face id or folder
OPENCV = "opencv"
TINY = "tiny"
#: the default inpainting LDM: SD-2-inpainting from its maintained Hub copy (Stability AI removed
#: ``stabilityai/stable-diffusion-2-inpainting`` from the Hub in November 2025; the files are the same)
DEFAULT_MODEL = "sd2-community/stable-diffusion-2-inpainting"


class Inpainter(ABC):
    """Fills the masked pixels of images; see the module docstring for the two modes."""

    config: "InpainterConfig"
    device: torch.device
    #: whether ``start_timestep`` is used (False for classical backends, which ignore it)
    uses_diffusion: bool = False
    #: whether scene customisation (LoRA fine-tuning) applies to this backend
    customizable: bool = False

    @property
    @abstractmethod
    def num_train_timesteps(self) -> int:
        """Number of diffusion training timesteps T; ``start_timestep`` lies in ``[0, T)``."""

    @abstractmethod
    def inpaint(
        self,
        images: Tensor,
        masks: Tensor,
        start_timestep: Optional[int] = None,
        source: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """Fill the masked pixels of ``images``.

        Args:
            images: ``[B, 3, H, W]`` in [0, 1], the captured images (the known pixels and the conditioning).
            masks: ``[B, 1, H, W]`` bool, True = pixel to fill.
            start_timestep: None = inpaint from pure noise; ``t`` = partial DDIM from ``source`` noised to ``t``.
            source: ``[B, 3, H, W]`` in [0, 1], the image to start from when ``start_timestep`` is given (the
                current NeRF render). Required with ``start_timestep``.
            generator: random generator for the noise; default is the inpainter's own, seeded by ``config.seed``.

        Returns:
            ``[B, 3, H, W]`` in [0, 1]: ``images`` outside the mask (exactly), the inpainting inside.
        """


def check_inputs(images: Tensor, masks: Tensor, start_timestep: Optional[int], source: Optional[Tensor],
                 num_train_timesteps: int) -> None:
    """Validate the arguments of :meth:`Inpainter.inpaint`, with messages naming the argument and its value."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"`images` must be [B, 3, H, W], but got shape {tuple(images.shape)}.")
    batch, _, height, width = images.shape
    if masks.shape != (batch, 1, height, width):
        raise ValueError(f"`masks` must be [B, 1, H, W] = {(batch, 1, height, width)} like `images`, "
                         f"but got shape {tuple(masks.shape)}.")
    if masks.dtype != torch.bool:
        raise ValueError(f"`masks` must be a bool tensor (True = fill), but got dtype {masks.dtype}.")
    if start_timestep is not None:
        if source is None:
            raise ValueError("`start_timestep` was given without `source`: partial denoising needs the image to "
                             "start from (the current render).")
        if source.shape != images.shape:
            raise ValueError(f"`source` must have the shape of `images` {tuple(images.shape)}, "
                             f"but got {tuple(source.shape)}.")
        if not 0 <= int(start_timestep) < num_train_timesteps:
            raise ValueError(f"`start_timestep` must be in [0, {num_train_timesteps}), but got {start_timestep}.")


def composite(images: Tensor, filled: Tensor, masks: Tensor) -> Tensor:
    """``filled`` inside the mask, ``images`` (exactly) outside: ``[B, 3, H, W]``."""
    return torch.where(masks.expand_as(images), filled.to(images.dtype), images)


def build_inpainter(config: "InpainterConfig", device: Union[str, torch.device] = "cpu",
                    flag: str = "--pipeline.inpainter.model", **kwargs: Any) -> Inpainter:
    """The backend named by ``config.model`` (the config's ``_target``).

    ``flag`` is the command-line flag named when the model cannot be found; ``kwargs`` go to the tiny builder.
    """
    if config.model == OPENCV:
        from ns_diffusion_methods.inpainters.opencv import OpenCVInpainter

        return OpenCVInpainter(config, device=device)
    if config.model == TINY:
        from ns_diffusion_methods.inpainters.tiny import build_tiny_inpainter

        return build_tiny_inpainter(config, device=device, **kwargs)
    from ns_diffusion_methods.inpainters.ldm import LatentInpainter

    return LatentInpainter.from_pretrained(config, device=device, flag=flag)


@dataclass
class CustomizationConfig:
    """Scene customisation of an inpainting LDM: LoRA fine-tuning on the scene's own training images (reference §1.6).

    MALD-NeRF's values are unpublished; the defaults are nerfiller's LoRA "dreambooth" settings [REC].
    """

    steps: int = 1000
    """Optimisation steps (nerfiller: 1000 [REC])."""
    learning_rate: float = 1e-3
    """AdamW learning rate of the LoRA weights (nerfiller: 1e-3 [REC])."""
    rank: int = 4
    """LoRA rank on the UNet attention projections to_q/to_k/to_v/to_out.0 (nerfiller: 4 [REC])."""
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
    """Probability that a crop is masked entirely (generation from text alone; nerfiller: 0.25)."""
    seed: int = 0
    """Seed of crops, rectangles, timesteps and noise."""


@dataclass
class InpainterConfig(InstantiateConfig):
    """Which inpainter fills the object region, and its sampling settings. ``setup(device=...)`` builds it."""

    _target: Type = field(default_factory=lambda: build_inpainter)
    model: str = DEFAULT_MODEL
    """Inpainting model: a Hugging Face id or local diffusers folder of an inpainting LDM (9-channel UNet),
    'opencv' (classical inpainting, no weights, offline) or 'tiny' (random-weight tiny LDM, for tests)."""
    num_inference_steps: int = 20
    """DDIM steps for a full (from-noise) inpainting; partial DDIM uses the subset <= the start timestep
    (nerfiller's 20 [REC])."""
    guidance_scale: float = 7.5
    """Classifier-free guidance scale on the text prompt (diffusers' default for SD inpainting [REC]); <= 1 turns
    guidance off (one UNet pass per step)."""
    prompt: str = "a photo of sks scene"
    """Text prompt; 'sks' is the scene token that customisation binds to the scene [REC]."""
    negative_prompt: str = ""
    """Prompt of the unconditional branch of classifier-free guidance."""
    resolution: Optional[int] = None
    """Short side, in pixels, at which the LDM inpaints: each frame is resized, keeping its aspect, so that its
    short side is this, or kept at its own size when its short side is smaller (never enlarged); both sides are
    rounded to the nearest multiple of the VAE factor (8 for SD-2-inpainting) and the result is resized back to the
    frame. Default: the model's native size (UNet sample size x VAE factor: 512 for SD-2-inpainting, 64 for 'tiny').
    Scene customisation trains at the same scale. Ignored by 'opencv'."""
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    """Weights and activations dtype of the LDM: 'auto' = float16 on CUDA, float32 on CPU."""
    seed: int = 0
    """Seed of the inpainter's own noise generator (used when no generator is passed)."""
    lora_path: Optional[Path] = None
    """Folder of LoRA weights from scene customisation (`ns-diffusion customize`), loaded with peft."""
    batch_size: int = 4
    """Images inpainted per LDM batch (memory bound)."""
    opencv_method: Literal["telea", "ns"] = "telea"
    """OpenCV algorithm: 'telea' (fast marching) or 'ns' (Navier-Stokes). Only for model='opencv'."""
    opencv_radius: int = 5
    """Neighbourhood radius in pixels of the OpenCV algorithm. Only for model='opencv'."""
    customization: CustomizationConfig = field(default_factory=CustomizationConfig)
    """Scene customisation (LoRA fine-tuning before training; `ns-diffusion customize`). Not for 'opencv'."""
