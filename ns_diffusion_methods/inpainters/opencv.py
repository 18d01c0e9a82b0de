"""Classical OpenCV inpainting: no weights, works offline, the default for CPU demos.

``cv2.inpaint`` (Telea's fast-marching method, or Navier-Stokes) propagates the colours around the hole into it.
It has no notion of noise, so ``start_timestep`` and ``source`` are accepted and **ignored**: every dataset-update
round re-inpaints the captured images the same way (deterministically). MALD-NeRF's coarse-to-fine schedule therefore
has no effect with this backend; the masked adversarial loss still applies.
"""

from __future__ import annotations

from typing import Optional, Union

import cv2
import numpy as np
import torch
from torch import Tensor

from ns_diffusion_methods.inpainters.base import Inpainter, InpainterConfig, check_inputs, composite

_METHODS = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}


class OpenCVInpainter(Inpainter):
    """``cv2.inpaint`` per image; the result keeps the original pixels outside the mask exactly."""

    uses_diffusion = False
    customizable = False

    def __init__(self, config: InpainterConfig, device: Union[str, torch.device] = "cpu") -> None:
        if config.opencv_method not in _METHODS:
            raise ValueError(f"`opencv_method` must be one of {sorted(_METHODS)}, but got {config.opencv_method!r}.")
        if config.opencv_radius < 1:
            raise ValueError(f"`opencv_radius` must be >= 1, but got {config.opencv_radius}.")
        self.config = config
        self.device = torch.device(device)

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
        check_inputs(images, masks, start_timestep, source, self.num_train_timesteps)
        # OpenCV works on 8-bit images: [B, 3, H, W] float -> B x [H, W, 3] uint8
        pixels = (images.detach().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        holes = masks[:, 0].cpu().numpy().astype(np.uint8) * 255
        filled = np.stack([
            cv2.inpaint(np.ascontiguousarray(img), hole, float(self.config.opencv_radius),
                        _METHODS[self.config.opencv_method])
            for img, hole in zip(pixels, holes)
        ])
        filled_t = torch.from_numpy(filled).to(images.device).permute(0, 3, 1, 2).float() / 255.0
        return composite(images, filled_t, masks)
