"""Image metrics: the package's one PSNR and SSIM, optional LPIPS, masked metrics (masked PSNR, M-LPIPS), FID/KID and
mask sharpness."""

from ns_diffusion_methods.metrics.image import (
    FidKid,
    blackout_outside,
    default_lpips,
    fid_kid,
    kid_subset_size,
    m_lpips_bbox,
    m_lpips_blackout,
    mask_bbox,
    mask_sharpness,
    masked_psnr,
    object_removal_metrics,
    psnr,
    psnr_from_mse,
    psnr_per_image,
    skimage_ssim,
    ssim,
)

__all__ = [
    "FidKid", "blackout_outside", "default_lpips", "fid_kid", "kid_subset_size", "m_lpips_bbox", "m_lpips_blackout",
    "mask_bbox", "mask_sharpness", "masked_psnr", "object_removal_metrics", "psnr", "psnr_from_mse", "psnr_per_image",
    "skimage_ssim", "ssim",
]
