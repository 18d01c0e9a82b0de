"""``ns-diffusion`` commands of the inpainters: ``customize`` (scene customisation of an inpainting LDM).

Import-light: the command's work is imported inside ``main()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Tuple

from ns_diffusion_methods.diffusion.precision import DType
from ns_diffusion_methods.inpainters.ldm import CustomizationConfig, LDMInpainterConfig


def _default_cache_dir() -> Path:
    from ns_diffusion_methods.inpainters.customization import default_cache_dir

    return default_cache_dir()


@dataclass
class CustomizeCommand:
    """LoRA-customise an inpainting LDM on a capture with object masks (MALD-NeRF scene customisation).

    The result is cached under ``--output`` keyed by the data, the model and the settings; `ns-train mald-nerf`
    reuses it when given the same data and settings.
    """

    data: Path
    """nerfstudio capture folder: transforms.json with `object_mask_path` per frame (255 = object)."""
    model: str = LDMInpainterConfig.model
    """Base inpainting model: Hugging Face id or local diffusers folder ('tiny' for a test model)."""
    num_steps: int = CustomizationConfig.steps
    """Optimisation steps."""
    output: Path = field(default_factory=_default_cache_dir)
    """Cache folder; the LoRA is written to a sub-folder named by the data hash."""
    prompt: str = LDMInpainterConfig.prompt
    """Prompt with the scene token (must match the one used in training: --pipeline.inpainter.prompt)."""
    resolution: Optional[int] = LDMInpainterConfig.resolution
    """Short side the frames are resized to, as for inpainting (must match --pipeline.inpainter.resolution for
    ns-train to reuse the result). Default: the model's native size (512 for SD-2-inpainting); smaller frames keep
    their size."""
    crop_size: Optional[int] = CustomizationConfig.crop_size
    """Side of the square training crops at that scale (default: the short side)."""
    batch_size: int = CustomizationConfig.batch_size
    """Crops per step."""
    learning_rate: float = CustomizationConfig.learning_rate
    """AdamW learning rate of the LoRA weights."""
    rank: int = CustomizationConfig.rank
    """LoRA rank."""
    dilation: Tuple[int, int] = (0, 0)
    """Object-mask dilation (kernel size, iterations) applied before customisation; match the dataparser's."""
    dtype: DType = "auto"
    """Model dtype: auto (float16 on CUDA), float32, float16 or bfloat16."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device to train on: auto = CUDA when available."""
    seed: int = CustomizationConfig.seed
    """Seed of crops, rectangles, timesteps and noise."""

    def main(self) -> int:
        """Read the capture, customise (or reuse the cache) and print the LoRA folder."""
        from ns_diffusion_methods.compat.device import default_device_type
        from ns_diffusion_methods.inpainters.customization import CONSOLE, customize, read_capture

        if self.model == "opencv":
            CONSOLE.print("[yellow]Nothing to do: scene customisation applies to diffusion inpainters; 'opencv' has "
                          "no weights.[/yellow]")
            return 0
        config = LDMInpainterConfig(
            model=self.model, prompt=self.prompt, resolution=self.resolution, dtype=self.dtype,
            customization=CustomizationConfig(steps=self.num_steps, crop_size=self.crop_size,
                                              batch_size=self.batch_size, learning_rate=self.learning_rate,
                                              rank=self.rank, alpha=float(self.rank), seed=self.seed))
        images, masks = read_capture(Path(self.data), self.dilation)
        device = default_device_type() if self.device == "auto" else self.device
        folder = customize(images, masks, config, self.output, device=device, model_flag="--model")
        print(folder)
        return 0
