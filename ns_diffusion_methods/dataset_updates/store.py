"""Images that training rewrites, kept as registered buffers so checkpoints carry them."""

from __future__ import annotations

from typing import Iterable, Optional, Sequence

import torch
from torch import Tensor, nn


class ImageStore(nn.Module):
    """A fixed number of images (padded to one size), each with its own size, update count and step.

    The buffers are part of the owner's ``state_dict``: a run resumed with ``--load-dir`` gets the images back exactly
    as they were at the checkpoint. Images are stored as uint8 (like nerfstudio's image caches) unless ``dtype`` says
    otherwise; :meth:`get` returns float images in [0, 1].

    Args:
        num_images: how many images the store holds (fixed for the run: training views, or pseudo cameras).
        height: the largest image height.
        width: the largest image width.
        channels: channels per pixel. Default is 3.
        dtype: storage type, ``torch.uint8`` (default) or a float type.
    """

    images: Tensor
    sizes: Tensor
    updates: Tensor
    last_step: Tensor

    def __init__(self, num_images: int, height: int, width: int, channels: int = 3,
                 dtype: torch.dtype = torch.uint8) -> None:
        super().__init__()
        if num_images < 0 or height <= 0 or width <= 0:
            raise ValueError(f"ImageStore needs num_images >= 0 and a positive size, got {num_images}x{height}x{width}")
        self.register_buffer("images", torch.zeros(num_images, height, width, channels, dtype=dtype))
        self.register_buffer("sizes", torch.zeros(num_images, 2, dtype=torch.long))  # (h, w) of each image
        self.register_buffer("updates", torch.zeros(num_images, dtype=torch.long))  # times each image was written
        self.register_buffer("last_step", torch.full((num_images,), -1, dtype=torch.long))

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def filled(self) -> Tensor:
        """``[N]`` bool: which images have been written at least once."""
        return self.updates > 0

    def set(self, index: int, image: Tensor, step: int = -1) -> None:
        """Write one image ``[h, w, C]`` (float in [0, 1], or the storage dtype) at ``index``."""
        h, w, c = image.shape
        H, W, C = self.images.shape[1:]
        if h > H or w > W or c != C:
            raise ValueError(f"image of shape {tuple(image.shape)} does not fit the store's {H}x{W}x{C}")
        if self.images.dtype == torch.uint8 and image.is_floating_point():
            image = (image.detach().clamp(0, 1) * 255).round().to(torch.uint8)
        self.images[index].zero_()
        self.images[index, :h, :w] = image.to(self.images.device, self.images.dtype)
        self.sizes[index] = torch.tensor([h, w])
        self.updates[index] += 1
        self.last_step[index] = step

    def set_many(self, indices: Iterable[int], images: Sequence[Tensor], step: int = -1) -> None:
        """Write several images (see :meth:`set`)."""
        for index, image in zip(indices, images):
            self.set(int(index), image, step)

    def get(self, index: int, device: Optional[torch.device] = None) -> Tensor:
        """Image ``index`` as float ``[h, w, C]`` in [0, 1] (uint8 storage is scaled by 1/255)."""
        h, w = (int(v) for v in self.sizes[index])
        image = self.images[index, :h, :w]
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
        return image if device is None else image.to(device)
