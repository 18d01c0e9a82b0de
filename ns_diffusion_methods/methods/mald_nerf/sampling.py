"""Ray sampling for MALD-NeRF: square patches that overlap the object mask, and single rays outside it.

nerfstudio's ``PatchPixelSampler`` erodes the sampling mask by half the patch size and only places patches fully
inside it, so it never returns a patch that straddles the hole. The masked adversarial loss needs
exactly those patches. :class:`MaskPatchSampler` draws each patch so that it contains at least one object pixel:

1. pick a training view uniformly among the views with object pixels;
2. pick one of its object pixels uniformly;
3. place that pixel at a uniformly random position inside the patch, and clamp the patch into the image.

Clamping keeps the chosen pixel inside the patch (a patch that would leave the image is shifted back, towards the
pixel), so every patch overlaps the mask, and every object pixel has a positive chance of being covered.

:class:`OutsideRaySampler` draws the rays for the reconstruction losses uniformly among the pixels outside the
object mask (and inside nerfstudio's validity mask when the capture has one), by rejection sampling.

Indices follow nerfstudio's ray-generator convention: ``[N, 3]`` long tensors of (image index, row, column).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor


class MaskPatchSampler:
    """Draws ``patch_size`` x ``patch_size`` patches that overlap the object mask (see the module docstring).

    Args:
        object_masks: ``[N, H, W]`` bool, True = object. Views without object pixels are never drawn.
    """

    def __init__(self, object_masks: Tensor) -> None:
        if object_masks.ndim != 3 or object_masks.dtype != torch.bool:
            raise ValueError(f"`object_masks` must be a bool [N, H, W] tensor, but got {object_masks.dtype} "
                             f"{tuple(object_masks.shape)}.")
        masks = object_masks.cpu()
        self.num_images, self.height, self.width = masks.shape
        flat = masks.reshape(self.num_images, -1)
        counts = flat.sum(dim=1)  # object pixels per view
        self.views = torch.nonzero(counts > 0).squeeze(1)  # views that can be drawn
        if self.views.numel() == 0:
            raise ValueError("No training view has object pixels: there is nothing for the patch sampler to cover.")
        # CSR layout of the object pixels: view v's flat pixel indices are pixels[offsets[v]:offsets[v] + counts[v]]
        self.counts = counts
        self.offsets = torch.cumsum(counts, 0) - counts
        self.pixels = torch.nonzero(flat)[:, 1].to(torch.int32)  # row-major per view, views in order

    def sample_corners(self, num_patches: int, patch_size: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """Top-left corners ``[num_patches, 3]`` (image index, row, column) of patches that overlap the mask."""
        if patch_size > min(self.height, self.width):
            raise ValueError(f"The patch size {patch_size} exceeds the training images ({self.height}x{self.width}): "
                             f"set a smaller --pipeline.datamanager.mask-patch-size.")
        choice = torch.randint(0, self.views.numel(), (num_patches,), generator=generator)
        views = self.views[choice]
        # a uniformly chosen object pixel of each view
        within = (torch.rand(num_patches, generator=generator) * self.counts[views]).long()
        within = torch.minimum(within, self.counts[views] - 1)
        flat = self.pixels[(self.offsets[views] + within)].long()
        rows, cols = flat // self.width, flat % self.width
        # its position inside the patch, uniform, then clamp the patch into the image
        dy = torch.randint(0, patch_size, (num_patches,), generator=generator)
        dx = torch.randint(0, patch_size, (num_patches,), generator=generator)
        top = (rows - dy).clamp(0, self.height - patch_size)
        left = (cols - dx).clamp(0, self.width - patch_size)
        return torch.stack([views, top, left], dim=1)


def patch_indices(corners: Tensor, patch_size: int) -> Tensor:
    """Ray indices ``[K * P * P, 3]`` of the patches with top-left ``corners`` ``[K, 3]``, patch-major, row-major."""
    offsets = torch.arange(patch_size, device=corners.device)
    rows = corners[:, 1, None, None] + offsets[None, :, None]  # [K, P, 1]
    cols = corners[:, 2, None, None] + offsets[None, None, :]  # [K, 1, P]
    views = corners[:, 0, None, None].expand(-1, patch_size, patch_size)
    rows, cols = rows.expand(-1, patch_size, patch_size), cols.expand(-1, patch_size, patch_size)
    return torch.stack([views, rows, cols], dim=-1).reshape(-1, 3)


class OutsideRaySampler:
    """Uniform single rays among the pixels outside the object mask (and inside the validity mask, if given).

    Args:
        object_masks: ``[N, H, W]`` bool, True = object (never sampled).
        valid_masks: optional ``[N, H, W]`` bool, nerfstudio's ``mask_path`` masks (True = may be sampled).
    """

    def __init__(self, object_masks: Tensor, valid_masks: Optional[Tensor] = None) -> None:
        allowed = ~object_masks.cpu()
        if valid_masks is not None:
            allowed &= valid_masks.cpu().bool()
        self.allowed = allowed
        self.num_images, self.height, self.width = allowed.shape
        self.fraction = float(allowed.float().mean())
        if self.fraction == 0:
            raise ValueError("No pixel outside the object masks: there is nothing to reconstruct from.")

    def sample(self, num_rays: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``[num_rays, 3]`` (image index, row, column) of pixels outside the object mask."""
        chunks = []
        remaining = num_rays
        while remaining > 0:
            draw = int(remaining / self.fraction * 1.2) + 16
            candidates = torch.stack([
                torch.randint(0, self.num_images, (draw,), generator=generator),
                torch.randint(0, self.height, (draw,), generator=generator),
                torch.randint(0, self.width, (draw,), generator=generator),
            ], dim=1)
            keep = candidates[self.allowed[candidates[:, 0], candidates[:, 1], candidates[:, 2]]][:remaining]
            chunks.append(keep)
            remaining -= keep.shape[0]
        return torch.cat(chunks, dim=0)
