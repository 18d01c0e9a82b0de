"""Image metrics: the package's one PSNR and SSIM, and the object-removal metrics (full-frame, masked, set-level,
sharpness).

PSNR and SSIM, used by every method:

- :func:`psnr_from_mse`: PSNR of mean squared errors, ``-10 log10(MSE / range^2)`` with the MSE clamped at 1e-10
  (identical images give 100 dB, not infinity); ``data_range=2`` for images in [-1, 1];
- :func:`psnr_per_image`: PSNR of each image of a batch, optionally only inside a mask;
- :func:`psnr`: PSNR over a whole batch, as nerfstudio reports it (torchmetrics);
- :func:`ssim`: torchmetrics' SSIM (11 x 11 Gaussian window), over the batch or per image;
- :func:`skimage_ssim`: scikit-image's SSIM (7 x 7 uniform window), the variant of PixelNeRF's and SSDNeRF's evaluation
  code.

Object removal (batches ``[B, 3, H, W]`` in [0, 1], masks ``[B, 1, H, W]`` bool, True = object region):

- :func:`psnr`, :func:`ssim`, LPIPS through :func:`ns_diffusion_methods.metrics.lpips.lpips_metric`
  (unavailable offline: left out, never made up);
- :func:`masked_psnr`: PSNR over the pixels inside the mask;
- M-LPIPS in both published definitions: :func:`m_lpips_blackout` (MALD-NeRF / InstaInpaint: every pixel outside
  the mask set to black in both images, full frame) and :func:`m_lpips_bbox` (SPIn-NeRF protocol: both images cropped
  to the bounding box of the mask, min/max x and y, optionally expanded);
- :func:`mask_sharpness`: variance of the Laplacian inside the (eroded) mask, for blur comparisons in benchmarks.

Per set of images: :class:`FidKid`, FID and KID between the rendered and the ground-truth test views (torchmetrics,
Inception-v3 features), with the KID subset size clamped to the number of images. When the Inception weights cannot
be obtained (offline), both are reported unavailable with one warning naming the weights file and where to put it.

Masked metrics of an image whose mask is empty (the object out of view) are NaN and skipped by the batch means.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Dict, List, Literal, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ns_diffusion_methods.metrics.lpips import (
    UNAVAILABLE,
    lpips_metric,
    mark_unavailable,
    torch_hub_checkpoint_dir,
    weights_unavailable,
)

#: a perceptual distance: ``(images [1, 3, H, W] in [0, 1], images) -> scalar`` (torchmetrics LPIPS, normalize=True)
PerceptualDistance = Callable[[Tensor, Tensor], Tensor]

#: crops smaller than this (shorter side, pixels) are upsampled before LPIPS: AlexNet/VGG need >= 32 px inputs
MIN_LPIPS_SIZE = 32

#: the Inception-v3 weights torchmetrics' FID/KID load (through torch-fidelity and torch hub)
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" \
                "weights-inception-2015-12-05-6726825d.pth"


def _check(rendered: Tensor, target: Tensor, masks: Optional[Tensor] = None) -> None:
    if rendered.ndim != 4 or rendered.shape[1] != 3 or rendered.shape != target.shape:
        raise ValueError(f"`rendered` and `target` must both be [B, 3, H, W], but got {tuple(rendered.shape)} and "
                         f"{tuple(target.shape)}.")
    if masks is not None and tuple(masks.shape) != (rendered.shape[0], 1, *rendered.shape[-2:]):
        raise ValueError(f"`masks` must be [B, 1, H, W] = {(rendered.shape[0], 1, *rendered.shape[-2:])}, but got "
                         f"{tuple(masks.shape)}.")


def _mean(values: Tensor) -> Tensor:
    """Mean over the finite entries (NaN when there is none)."""
    finite = values[torch.isfinite(values)]
    return finite.mean() if finite.numel() else torch.tensor(float("nan"))


# ------------------------------------------------------------------------------------------------ full frame
#: the smallest MSE :func:`psnr_from_mse` takes: PSNR is at most 100 dB (data range 1) instead of infinite
MIN_MSE = 1e-10


def psnr_from_mse(mse: Tensor, data_range: float = 1.0) -> Tensor:
    """PSNR in dB of mean squared errors (any shape): ``-10 log10(MSE / data_range^2)``.

    Args:
        mse: mean squared errors.
        data_range: the images' value range: 1 for [0, 1], 2 for [-1, 1]. Default is 1.

    .. note::
        The normalised MSE is clamped at :data:`MIN_MSE` first, so identical images give 100 dB, not infinity.
    """
    if data_range != 1.0:
        mse = mse / data_range**2
    return -10.0 * torch.log10(mse.clamp_min(MIN_MSE))


def psnr_per_image(rendered: Tensor, target: Tensor, masks: Optional[Tensor] = None,
                   data_range: float = 1.0) -> Tensor:
    """PSNR of each image, ``[B]``, of ``[B, C, H, W]`` batches; optionally only where ``masks`` is 1.

    Args:
        masks: ``[B, 1, H, W]`` or ``[1, 1, H, W]`` (broadcast over the batch), 1 on the pixels scored. The MSE is over
            the masked pixels and the C channels; an empty mask counts as one pixel (PSNR of an error of 0: 100 dB).
        data_range: the images' value range (2 for [-1, 1]). Default is 1.
    """
    if rendered.ndim != 4 or rendered.shape != target.shape:
        raise ValueError(f"`rendered` and `target` must both be [B, C, H, W], but got {tuple(rendered.shape)} and "
                         f"{tuple(target.shape)}.")
    error = (rendered - target) ** 2
    if masks is None:
        mse = error.flatten(1).mean(1)
    else:
        masks = masks.expand(error.shape[0], 1, *error.shape[2:])
        mse = (error * masks).flatten(1).sum(1) / (error.shape[1] * masks.flatten(1).sum(1)).clamp_min(1)
    return psnr_from_mse(mse, data_range)


def psnr(rendered: Tensor, target: Tensor) -> Tensor:
    """PSNR over the whole batch (data range 1), as nerfstudio reports it (torchmetrics)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check(rendered, target)
    return peak_signal_noise_ratio(rendered, target, data_range=1.0)


def ssim(rendered: Tensor, target: Tensor, reduction: Literal["mean", "none"] = "mean") -> Tensor:
    """torchmetrics' SSIM (11 x 11 Gaussian window, data range 1), as nerfstudio's models report it.

    Args:
        reduction: 'mean' over the batch (a scalar), or 'none' (``[B]``, one value per image). Default is 'mean'.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check(rendered, target)
    return structural_similarity_index_measure(rendered, target, data_range=1.0,
                                               reduction="elementwise_mean" if reduction == "mean" else "none")


def skimage_ssim(rendered: Tensor, target: Tensor) -> float:
    """scikit-image's SSIM of one image, ``[H, W, 3]`` in [0, 1]: 7 x 7 uniform window, data range 1, over the colour
    channels; what PixelNeRF's and SSDNeRF's evaluation code report (not the same numbers as :func:`ssim`)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(rendered.detach().cpu().numpy(), target.detach().cpu().numpy(),
                                       data_range=1.0, channel_axis=-1))


# ------------------------------------------------------------------------------------------------ masked
def masked_psnr(rendered: Tensor, target: Tensor, masks: Tensor, reduction: str = "mean") -> Tensor:
    """PSNR over the pixels inside each mask: ``10 log10(1 / MSE)``, MSE over the mask's pixels and 3 channels.

    Args:
        reduction: 'mean' (over images with a non-empty mask) or 'none' (``[B]``, NaN for empty masks).
    """
    _check(rendered, target, masks)
    weights = masks.to(rendered.dtype).expand_as(rendered)
    count = weights.sum(dim=(1, 2, 3))
    mse = ((rendered - target).pow(2) * weights).sum(dim=(1, 2, 3)) / count
    values = torch.where(count > 0, -10.0 * torch.log10(mse), torch.full_like(mse, float("nan")))
    return values if reduction == "none" else _mean(values)


def blackout_outside(images: Tensor, masks: Tensor) -> Tensor:
    """Every pixel outside the mask set to 0 (black)."""
    return torch.where(masks.bool().expand_as(images), images, torch.zeros((), dtype=images.dtype,
                                                                         device=images.device))


def mask_bbox(mask: Tensor, expand: float = 0.0) -> Optional[Tuple[int, int, int, int]]:
    """Bounding box ``(top, bottom, left, right)`` (bottom/right exclusive) of a ``[H, W]`` (or ``[1, H, W]``) mask.

    The box spans the minimum and maximum row and column of the mask (MVIP-NeRF's reading of SPIn-NeRF's protocol);
    ``expand`` grows it by that fraction of its height and width on each side (0.1 in a widely used third-party
    script), clipped to the image. None for an empty mask.
    """
    mask = mask.reshape(mask.shape[-2:]).bool()
    rows = torch.nonzero(mask.any(dim=1)).flatten()
    cols = torch.nonzero(mask.any(dim=0)).flatten()
    if rows.numel() == 0:
        return None
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    left, right = int(cols[0]), int(cols[-1]) + 1
    grow_y, grow_x = int(round(expand * (bottom - top))), int(round(expand * (right - left)))
    height, width = mask.shape
    return max(0, top - grow_y), min(height, bottom + grow_y), max(0, left - grow_x), min(width, right + grow_x)


def _min_size(images: Tensor, size: int = MIN_LPIPS_SIZE) -> Tensor:
    """Upsample ``[B, 3, h, w]`` so that its shorter side is at least ``size`` (aspect kept)."""
    height, width = images.shape[-2:]
    if min(height, width) >= size:
        return images
    scale = size / min(height, width)
    return F.interpolate(images, size=(max(size, round(height * scale)), max(size, round(width * scale))),
                         mode="bilinear", align_corners=False)


def m_lpips_blackout(rendered: Tensor, target: Tensor, masks: Tensor, lpips: PerceptualDistance,
                     reduction: str = "mean") -> Tensor:
    """M-LPIPS as defined by MALD-NeRF: LPIPS(render * M, ground truth * M), full frame, outside pixels black."""
    _check(rendered, target, masks)
    values = []
    for i in range(rendered.shape[0]):
        if not masks[i].any():
            values.append(torch.tensor(float("nan")))
            continue
        a, b = blackout_outside(rendered[i:i + 1], masks[i:i + 1]), blackout_outside(target[i:i + 1], masks[i:i + 1])
        values.append(lpips(_min_size(a), _min_size(b)).detach().float().reshape(()).cpu())
    stacked = torch.stack(values)
    return stacked if reduction == "none" else _mean(stacked)


def m_lpips_bbox(rendered: Tensor, target: Tensor, masks: Tensor, lpips: PerceptualDistance, expand: float = 0.0,
                 reduction: str = "mean") -> Tensor:
    """M-LPIPS as in SPIn-NeRF's protocol: LPIPS on both images cropped to the mask's bounding box.

    Crops whose shorter side is below 32 px are upsampled to 32 px (the LPIPS backbones need it).
    """
    _check(rendered, target, masks)
    values = []
    for i in range(rendered.shape[0]):
        box = mask_bbox(masks[i], expand)
        if box is None:
            values.append(torch.tensor(float("nan")))
            continue
        top, bottom, left, right = box
        a = rendered[i:i + 1, :, top:bottom, left:right]
        b = target[i:i + 1, :, top:bottom, left:right]
        values.append(lpips(_min_size(a), _min_size(b)).detach().float().reshape(()).cpu())
    stacked = torch.stack(values)
    return stacked if reduction == "none" else _mean(stacked)


def mask_sharpness(images: Tensor, masks: Tensor, reduction: str = "mean") -> Tensor:
    """Variance of the Laplacian of the luma inside the mask (higher = sharper); x 255² for 8-bit-like scale.

    Only pixels whose whole 3 x 3 neighbourhood lies inside the mask count, so the mask's border (where the filled
    region meets the captured pixels) does not add edges of its own.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"`images` must be [B, 3, H, W], but got {tuple(images.shape)}.")
    luma = (0.299 * images[:, 0:1] + 0.587 * images[:, 1:2] + 0.114 * images[:, 2:3]) * 255.0
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=luma.dtype,
                          device=luma.device)
    laplacian = F.conv2d(luma, kernel[None, None], padding=1)
    # erode by one pixel: a 3 x 3 min-pool of the mask (the image border counts as outside)
    inside = -F.max_pool2d(-F.pad(masks.to(luma.dtype), (1, 1, 1, 1)), kernel_size=3, stride=1) > 0.5
    values = []
    for i in range(images.shape[0]):
        selected = laplacian[i][inside[i]]
        values.append(selected.var(unbiased=False) if selected.numel() > 1 else torch.tensor(float("nan")))
    stacked = torch.stack([v.detach().float().cpu() for v in values])
    return stacked if reduction == "none" else _mean(stacked)


def object_removal_metrics(rendered: Tensor, target: Tensor, masks: Tensor,
                           lpips: Optional[nn.Module] = None, bbox_expand: float = 0.0) -> Dict[str, float]:
    """All per-image metrics of a rendered test view against its ground truth (for ``ns-eval``).

    Keys: ``psnr``, ``ssim``, ``masked_psnr``, ``mask_sharpness``, ``mask_sharpness_gt``, and with an available
    ``lpips``: ``lpips``, ``m_lpips`` (blackout) and ``m_lpips_bbox``. Masked metrics are left out for an empty mask.
    """
    values: Dict[str, float] = {"psnr": float(psnr(rendered, target)), "ssim": float(ssim(rendered, target))}
    masked = {"masked_psnr": masked_psnr(rendered, target, masks), "mask_sharpness": mask_sharpness(rendered, masks),
              "mask_sharpness_gt": mask_sharpness(target, masks)}
    if lpips is not None and getattr(lpips, "available", True):
        values["lpips"] = float(lpips(rendered, target))
        masked["m_lpips"] = m_lpips_blackout(rendered, target, masks, lpips)
        masked["m_lpips_bbox"] = m_lpips_bbox(rendered, target, masks, lpips, expand=bbox_expand)
    values.update({key: float(value) for key, value in masked.items() if math.isfinite(float(value))})
    return values


def default_lpips(device: Union[str, torch.device] = "cpu") -> nn.Module:
    """The package's LPIPS (AlexNet, inputs in [0, 1]), or an UnavailableMetric offline."""
    return lpips_metric(normalize=True).to(device)


# ------------------------------------------------------------------------------------------------ sets
def inception_weights_hint() -> str:
    """Which file FID/KID need and where to put it."""
    filename = INCEPTION_URL.rsplit("/", 1)[-1]
    return (f"FID and KID need the Inception-v3 weights '{filename}' ({INCEPTION_URL}), which could not be obtained. "
            f"Offline, copy that file to {torch_hub_checkpoint_dir()}/ (or point TORCH_HOME at a folder holding "
            f"hub/checkpoints/{filename}).")


def kid_subset_size(requested: int, num_images: int) -> int:
    """KID's subset size: the requested one, at most the number of images (torchmetrics requires it)."""
    return max(1, min(int(requested), int(num_images)))


def _as_uint8(images: Tensor) -> Tensor:
    return (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


class FidKid:
    """FID and KID between the set of rendered views and the set of ground-truth views (torchmetrics).

    Images are fed to both metrics as 8-bit tensors, sharing one Inception network. When the Inception weights cannot
    be obtained, :attr:`available` is False, one warning says how to provide them, and :meth:`compute` returns no
    values ('fid', 'kid' and 'kid_std' are registered as unavailable, so nerfstudio results drop them). ``kid_std``
    exists only when the KID subsets are smaller than the set (see :meth:`compute`).

    Args:
        feature: Inception feature size (2048 as in the papers), or an ``nn.Module`` mapping uint8 images
            ``[B, 3, H, W]`` to features ``[B, D]`` (tests use random-weight networks).
        kid_subset_size: KID subset size; clamped to the number of images at compute time.
        kid_subsets: number of KID subsets.
        device: where features are computed.
    """

    def __init__(self, feature: Union[int, nn.Module] = 2048, kid_subset_size: int = 1000, kid_subsets: int = 100,
                 device: Union[str, torch.device] = "cpu") -> None:
        self.kid_subset_size = kid_subset_size
        self.available = True
        self.num_images = 0
        try:
            from torchmetrics.image.fid import FrechetInceptionDistance
            from torchmetrics.image.kid import KernelInceptionDistance

            self.fid = FrechetInceptionDistance(feature=feature, normalize=False).to(device)
            # KID reuses FID's network (a custom module receives the uint8 images unchanged)
            with warnings.catch_warnings():  # "KID will save all extracted features": expected, test sets are small
                warnings.filterwarnings("ignore", message=".*Kernel Inception Distance.*")
                self.kid = KernelInceptionDistance(feature=self.fid.inception, subsets=kid_subsets,
                                                   subset_size=kid_subset_size, normalize=False).to(device)
        except Exception as err:  # noqa: BLE001 - only missing weights are turned into "unavailable"
            if not weights_unavailable(err):
                raise
            self.available = False
            mark_unavailable("fid", f"{inception_weights_hint()} [{type(err).__name__}: {err}]")
            UNAVAILABLE.setdefault("kid", UNAVAILABLE["fid"])  # same cause: one warning for both

    def update(self, rendered: Tensor, target: Tensor) -> None:
        """Add rendered views and their ground truth, ``[B, 3, H, W]`` in [0, 1]."""
        _check(rendered, target)
        self.num_images += rendered.shape[0]
        if not self.available:
            return
        device = self.fid.device
        fake, real = _as_uint8(rendered).to(device), _as_uint8(target).to(device)
        self.fid.update(real, real=True)
        self.fid.update(fake, real=False)
        self.kid.update(real, real=True)
        self.kid.update(fake, real=False)

    def compute(self) -> Dict[str, float]:
        """``{'fid', 'kid', 'kid_std'}``, or ``{}`` when unavailable. Needs at least 2 images per set.

        ``kid_std`` (the spread of KID over its random subsets) is reported only when the subsets are smaller than
        the set. When the subset size is clamped to the number of images, every subset is the whole set: ``kid`` is
        then the unbiased estimate over all the images and no spread exists, so no ``kid_std`` is given (a 0 there
        would read as a certain value).
        """
        if not self.available:
            return {}
        if self.num_images < 2:
            raise ValueError(f"FID and KID need at least 2 images per set, but got {self.num_images}.")
        self.kid.subset_size = kid_subset_size(self.kid_subset_size, self.num_images)
        kid_mean, kid_std = self.kid.compute()
        values = {"fid": float(self.fid.compute()), "kid": float(kid_mean)}
        if self.kid.subset_size < self.num_images:
            values["kid_std"] = float(kid_std)
        return values


def fid_kid(rendered: Sequence[Tensor], target: Sequence[Tensor], **kwargs) -> Dict[str, float]:
    """FID and KID of two equally long lists of ``[3, H, W]`` or ``[B, 3, H, W]`` images (see :class:`FidKid`)."""
    metric = FidKid(**kwargs)
    for a, b in zip(rendered, target):
        metric.update(a if a.ndim == 4 else a[None], b if b.ndim == 4 else b[None])
    return metric.compute()


__all__: List[str] = [
    "FidKid", "blackout_outside", "default_lpips", "fid_kid", "inception_weights_hint", "kid_subset_size",
    "m_lpips_bbox", "m_lpips_blackout", "mask_bbox", "mask_sharpness", "masked_psnr", "object_removal_metrics",
    "psnr", "psnr_from_mse", "psnr_per_image", "skimage_ssim", "ssim",
]
