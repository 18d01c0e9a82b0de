"""Image files and image tensors: the package's one home for reading, writing, listing and resizing images.

Tensors are ``[3, H, W]`` (one image) or ``[N, C, H, W]`` (a batch), float in [0, 1]; arrays are ``uint8``
``[H, W, 3]`` (RGB) or ``[H, W]`` (greyscale, masks); files are 8-bit PNG or JPEG (any format PIL reads on input).

- reading: :func:`read_image` (a ``uint8`` array; transparency dropped or composited on white) and :func:`load_image`
  (a float tensor), :func:`image_size`, :func:`list_images`, :data:`IMAGE_SUFFIXES`;
- writing: :func:`save_image` (a tensor or an array), :func:`save_gif` (an animation), :func:`to_uint8`;
- resizing: :func:`resize_images` (float tensors, antialiased bicubic), :func:`resize_views` (``uint8 [V, H, W, 3]``
  views, area averaging) and :func:`resize_array` (arrays, PIL filters).

Import-light: PIL, numpy and torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from ns_diffusion_methods.errors import DataError

#: file suffixes read as images
IMAGE_SUFFIXES: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

#: what to do with an image's transparency: drop the alpha channel, or composite the image on white
AlphaMode = Literal["drop", "white"]


def list_images(path: Union[str, Path]) -> List[Path]:
    """An image file, or the image files of a folder (sorted by name)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"{path} is neither an image file nor a folder.")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise DataError(f"The folder {path} contains no image ({', '.join(IMAGE_SUFFIXES)}).")
    return files


def read_image(path: Union[str, Path], mode: Literal["RGB", "L"] = "RGB", alpha: AlphaMode = "drop",
               hint: str = "Provide a readable PNG or JPEG file.") -> np.ndarray:
    """An image file as a ``uint8`` array: ``[H, W, 3]`` for ``mode="RGB"``, ``[H, W]`` for ``mode="L"`` (luma).

    Args:
        path: the file.
        mode: 'RGB' (greyscale images are expanded) or 'L' (colour images are converted to luma). Default is 'RGB'.
        alpha: for images with transparency (RGBA, LA, palette with a transparent colour): 'drop' the alpha channel
            (PIL's conversion), or composite the image on 'white' (RGB only; rounded to the nearest level).
            Default is 'drop'.
        hint: what the user should do when the file cannot be read (the end of the error message).

    Raises:
        DataError: the file does not exist or cannot be read as an image.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"The image file {path} does not exist. {hint}")
    try:
        with Image.open(path) as image:
            image.load()
            transparent = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
            if alpha == "white" and mode == "RGB" and transparent:
                rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
                weight = rgba[..., 3:4] / 255.0
                return np.floor(rgba[..., :3] * weight + 255.0 * (1.0 - weight) + 0.5).astype(np.uint8)
            return np.asarray(image if image.mode == mode else image.convert(mode), dtype=np.uint8)
    except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
        raise DataError(f"Cannot read image {path} ({err}). {hint}") from None


def image_size(path: Union[str, Path]) -> Tuple[int, int]:
    """``(width, height)`` of an image file, read from its header only (PIL's errors propagate)."""
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def load_image(path: Union[str, Path], alpha: AlphaMode = "drop") -> Tensor:
    """An image file as [3, H, W] float32 in [0, 1] (RGB; transparency dropped unless ``alpha='white'``)."""
    array = read_image(path, "RGB", alpha).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def to_uint8(image: Tensor) -> np.ndarray:
    """[3, H, W] (or [1, H, W]) float in [0, 1] as a ``uint8`` array [H, W, 3] (or [H, W, 1]), clamped and rounded."""
    return (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def save_image(image: Union[Tensor, np.ndarray], path: Union[str, Path]) -> None:
    """Write an image to ``path`` (format from the suffix; 8 bits per channel; folders are created).

    Args:
        image: a float tensor [3, H, W] in [0, 1] (clamped and rounded), or a ``uint8`` array [H, W, 3] or [H, W]
            (written as it is).
        path: the file; JPEG is written at quality 95, PNG with PIL's default compression.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image if isinstance(image, np.ndarray) else to_uint8(image)
    if array.dtype != np.uint8:
        raise ValueError(f"`image` arrays must be uint8, but got {array.dtype}.")
    kwargs = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array).save(path, **kwargs)


def save_gif(frames: Sequence[np.ndarray], path: Union[str, Path], frame_ms: int = 80) -> None:
    """Write ``uint8`` frames [H, W, 3] as an animated GIF that loops forever, ``frame_ms`` milliseconds per frame."""
    from PIL import Image

    if not frames:
        raise ValueError("`frames` must hold at least one frame.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(frame) for frame in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=frame_ms, loop=0)


def resize_images(images: Tensor, size: Tuple[int, int]) -> Tensor:
    """Resize [N, C, H, W] to ``size`` (H, W) with antialiased bicubic filtering; a no-op at the same size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    dtype = images.dtype
    resized = torch.nn.functional.interpolate(images.float(), size=tuple(size), mode="bicubic", align_corners=False,
                                              antialias=True)
    return resized.to(dtype)


def resize_views(images: Tensor, height: int, width: int) -> Tensor:
    """``uint8 [V, H, W, 3]`` to ``uint8 [V, height, width, 3]``: area averaging when shrinking (for an integer factor
    the mean of each block of pixels), bilinear interpolation when enlarging; a no-op at the same size."""
    if tuple(images.shape[1:3]) == (height, width):
        return images
    x = images.permute(0, 3, 1, 2).to(torch.float32)
    if height <= images.shape[1] and width <= images.shape[2]:
        out = torch.nn.functional.interpolate(x, size=(height, width), mode="area")
    else:
        out = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def resize_array(array: np.ndarray, size: Tuple[int, int],
                 resample: Literal["nearest", "bilinear"] = "bilinear") -> np.ndarray:
    """Resize a ``uint8`` array [H, W, 3] or [H, W] to ``size`` (H, W) with PIL's filter; a no-op at the same size.
    Use 'nearest' for masks and for enlarging small images into visible pixels."""
    from PIL import Image

    if tuple(array.shape[:2]) == tuple(size):
        return array
    filters = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR}
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), filters[resample]))


__all__ = ["IMAGE_SUFFIXES", "image_size", "list_images", "load_image", "read_image", "resize_array", "resize_images",
           "resize_views", "save_gif", "save_image", "to_uint8"]
