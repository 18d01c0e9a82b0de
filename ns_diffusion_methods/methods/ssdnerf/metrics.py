"""Image metrics of the SSDNeRF / PixelNeRF reconstruction protocol.

Renders are clamped to [0, 1] and quantised to 8 bit first, as SSDNeRF's evaluation code does. PSNR per image
(:func:`ns_diffusion_methods.metrics.image.psnr_from_mse`); SSIM is scikit-image's ``structural_similarity`` (data
range 1, 7x7 uniform window, over the colour channels; :func:`ns_diffusion_methods.metrics.image.skimage_ssim`), as in
the paper's evaluation code; LPIPS is VGG-LPIPS through :func:`ns_diffusion_methods.metrics.lpips.lpips_metric`, left
out of the results when its backbone weights are not available offline.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor, nn

from ns_diffusion_methods.metrics.image import psnr_from_mse, skimage_ssim

_LPIPS: Dict[str, nn.Module] = {}


def quantize(image: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to 8-bit levels (still float)."""
    return torch.round(image.clamp(0.0, 1.0) * 255.0) / 255.0


def lpips_module(device: torch.device) -> nn.Module:
    """VGG-LPIPS (torchmetrics, inputs in [0, 1]), or an unavailable stand-in returning NaN."""
    if "vgg" not in _LPIPS:
        from ns_diffusion_methods.metrics.lpips import lpips_metric

        _LPIPS["vgg"] = lpips_metric(net_type="vgg", normalize=True)
    return _LPIPS["vgg"].to(device)


def image_metrics(prediction: Tensor, target: Tensor, with_lpips: bool = True,
                  lpips: Optional[nn.Module] = None) -> Dict[str, float]:
    """PSNR, SSIM and (where available) LPIPS of a quantised render against its target, ``[H, W, 3]`` each."""
    prediction = quantize(prediction)
    target = target.clamp(0.0, 1.0)
    out = {"psnr": float(psnr_from_mse((prediction - target).square().mean())),
           "ssim": skimage_ssim(prediction, target)}
    if with_lpips:
        module = lpips if lpips is not None else lpips_module(prediction.device)
        if getattr(module, "available", True):
            value = module(prediction.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None])
            out["lpips"] = float(value)
    return out
