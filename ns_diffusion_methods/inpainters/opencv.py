"""Classical OpenCV inpainting and its config: no weights, works offline, the default for CPU demos.

``cv2.inpaint`` (Telea's fast-marching method, or Navier-Stokes) propagates the colours around the hole into it.
It has no notion of noise, so ``start_timestep`` and ``source`` are accepted and **ignored**: a re-inpainting would
repeat the first one exactly, so MALD-NeRF's dataset updates are skipped with this backend (the masked adversarial
loss still applies). OpenCV is imported only when the inpainter is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Optional, Type, Union

import numpy as np
import torch
from torch import Tensor

from ns_diffusion_methods.inpainters.base import Inpainter, InpainterConfig, check_inputs, composite

#: OpenCV's inpainting algorithms, by their config name
METHODS = ("telea", "ns")


@dataclass
class OpenCVInpainterConfig(InpainterConfig):
    """Classical OpenCV inpainting (no weights, offline); it ignores renders and noise levels."""

    backend: ClassVar[str] = "opencv"
    _target: Type = field(default_factory=lambda: OpenCVInpainter)
    method: Literal["telea", "ns"] = "telea"
    """OpenCV algorithm: 'telea' (Telea's fast marching) or 'ns' (Navier-Stokes)."""
    radius: int = 5
    """Radius in pixels of the neighbourhood each filled pixel is computed from (recommended default; OpenCV's
    tutorial uses 3)."""

    def summary(self) -> str:
        """``opencv (METHOD, radius R)``."""
        return f"opencv ({self.method}, radius {self.radius})"


class OpenCVInpainter(Inpainter):
    """``cv2.inpaint`` per image; the result keeps the original pixels outside the mask exactly."""

    uses_diffusion = False
    customizable = False

    def __init__(self, config: OpenCVInpainterConfig, device: Union[str, torch.device] = "cpu") -> None:
        if config.method not in METHODS:
            raise ValueError(f"`method` must be one of {list(METHODS)}, but got {config.method!r}. Set "
                             f"--pipeline.inpainter.method.")
        if config.radius < 1:
            raise ValueError(f"`radius` must be >= 1, but got {config.radius}. Set --pipeline.inpainter.radius.")
        self.config = config
        self.device = torch.device(device)
        name = {"telea": "Telea's fast marching", "ns": "Navier-Stokes"}[config.method]
        self.first_inpainting = f"classical OpenCV inpainting ({name}, no noise)"

    @property
    def num_train_timesteps(self) -> int:
        """Nominal 1000 (the usual T), so that a noise schedule computed from it stays valid; it is not used."""
        return 1000

    @torch.no_grad()
    def inpaint(
        self,
        images: Tensor,
        masks: Tensor,
        start_timestep: Optional[int] = None,
        source: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """Inpaint each image with OpenCV; ``start_timestep``, ``source`` and ``generator`` are ignored."""
        import cv2

        check_inputs(images, masks, start_timestep, source, self.num_train_timesteps)
        flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[self.config.method]
        # OpenCV works on 8-bit images: [B, 3, H, W] float -> B x [H, W, 3] uint8
        pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        holes = masks[:, 0].cpu().numpy().astype(np.uint8) * 255
        filled = np.stack([
            cv2.inpaint(np.ascontiguousarray(img), hole, float(self.config.radius), flags)
            for img, hole in zip(pixels, holes)
        ])
        filled_t = torch.from_numpy(filled).to(images.device).permute(0, 3, 1, 2).float() / 255.0
        return composite(images, filled_t, masks)
