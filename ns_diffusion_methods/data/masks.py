"""Object masks for object removal: reading, dilation and validation before training.

An *object mask* marks the pixels of the object to remove (True / non-zero = object, to be inpainted). This is the
opposite of nerfstudio's ``mask_path`` masks, where True means "a valid pixel that may be sampled"; the two are kept
apart (``object_mask_path`` in ``transforms.json``, ``label/`` folders in the SPIn-NeRF layout).

Mask files may be 8-bit with {0, 255} (the synthetic captures), {0, 1} (SPIn-NeRF's ``label/`` PNGs) or anything in
between: like SPIn-NeRF's loader, a mask is normalised by its maximum and thresholded at one half. Colour masks use
their first channel.

:func:`validate_object_masks` runs before any training: every training image needs a mask of the same size that is
neither empty nor full (after dilation). All problems are collected and reported together, naming the files, so a user
fixes a capture in one go.

This module is import-light (numpy, PIL, OpenCV): the dataparsers import it during nerfstudio's plugin discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ns_diffusion_methods.errors import DataError

#: (kernel size, iterations) of a square dilation; (0, 0) or any zero means "no dilation"
Dilation = Tuple[int, int]

#: how many offending files an error message lists before summarising the rest
MAX_LISTED = 12


def mask_from_array(values: np.ndarray) -> np.ndarray:
    """Boolean ``[H, W]`` object mask from a mask image array (``[H, W]`` or ``[H, W, C]``, any numeric range).

    The values are divided by their maximum and thresholded at 0.5, as SPIn-NeRF's loader does (``msk / msk.max()``);
    an all-zero image is an empty mask.
    """
    if values.ndim == 3:
        values = values[..., 0]
    if values.ndim != 2:
        raise ValueError(f"a mask image must be [H, W] or [H, W, C], but has shape {values.shape}")
    values = values.astype(np.float64)
    peak = values.max() if values.size else 0.0
    if peak <= 0:
        return np.zeros(values.shape, dtype=bool)
    return values / peak >= 0.5


def read_object_mask(path: Path) -> np.ndarray:
    """The object mask stored at ``path`` as a boolean ``[H, W]`` array (True = object)."""
    with Image.open(path) as image:
        return mask_from_array(np.asarray(image))


def dilate_mask(mask: np.ndarray, dilation: Dilation) -> np.ndarray:
    """Dilate a boolean ``[H, W]`` mask with a ``k x k`` square kernel, ``iterations`` times (OpenCV, as SPIn-NeRF)."""
    kernel_size, iterations = (int(v) for v in dilation)
    if kernel_size <= 1 or iterations <= 0:
        return mask
    import cv2

    kernel = np.ones((kernel_size, kernel_size), np.uint8)
    return cv2.dilate(mask.astype(np.uint8), kernel, iterations=iterations).astype(bool)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a boolean mask to ``height x width`` (for downscaled images)."""
    if mask.shape == (height, width):
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(image.resize((width, height), resample=Image.Resampling.NEAREST)) > 127


def load_object_mask(path: Path, height: int, width: int, dilation: Dilation = (0, 0)) -> np.ndarray:
    """Read, dilate (at the file's resolution, as SPIn-NeRF does) and resize an object mask to ``height x width``."""
    return resize_mask(dilate_mask(read_object_mask(path), dilation), height, width)


@dataclass(frozen=True)
class MaskProblem:
    """One image whose object mask cannot be used, and why."""

    image: Path
    mask: Optional[Path]
    reason: str

    def line(self) -> str:
        """One line of an error message."""
        target = self.mask if self.mask is not None else self.image
        return f"  - {target}: {self.reason}"


def check_object_mask(image: Path, mask: Optional[Path], dilation: Dilation = (0, 0),
                      allow_empty: bool = False) -> Optional[MaskProblem]:
    """The problem with ``mask`` as the object mask of ``image``, or None when it is usable.

    Checks, in order: a mask is given, the file exists and is readable, it has the image's size, it is not empty
    (unless ``allow_empty``) and, after ``dilation``, it does not cover the whole image.
    """
    if mask is None:
        return MaskProblem(image, None, "has no object mask")
    if not Path(mask).is_file():
        return MaskProblem(image, mask, f"object mask file does not exist (for image {image})")
    try:
        with Image.open(image) as pil_image:
            image_size = pil_image.size  # (w, h), read from the header only
    except (OSError, ValueError) as err:
        return MaskProblem(image, mask, f"its image {image} cannot be read ({err})")
    try:
        values = read_object_mask(Path(mask))
    except (OSError, ValueError) as err:
        return MaskProblem(image, mask, f"cannot be read as an image ({err})")
    mask_size = (values.shape[1], values.shape[0])
    if mask_size != image_size:
        return MaskProblem(image, mask, f"is {mask_size[0]}x{mask_size[1]} (WxH) but its image {image} is "
                                        f"{image_size[0]}x{image_size[1]}")
    if not values.any():
        if allow_empty:
            return None
        return MaskProblem(image, mask, "is empty (no object pixel): nothing to remove in this view")
    if dilate_mask(values, dilation).all():
        extra = f" after dilation {dilation[0]}x{dilation[0]} x{dilation[1]}" if dilation[0] > 1 else ""
        return MaskProblem(image, mask, f"covers the whole image{extra}: nothing is left to reconstruct from")
    return None


def validate_object_masks(pairs: Sequence[Tuple[Path, Optional[Path]]], dilation: Dilation = (0, 0),
                          split: str = "training", allow_empty: bool = False, hint: str = "") -> None:
    """Raise :class:`DataError` naming every image of ``pairs`` whose object mask is unusable.

    Args:
        pairs: ``(image file, object mask file or None)`` for every image of the split.
        dilation: the dilation applied at load time (a mask that becomes full only after dilation is refused).
        split: the split's name for the message (``training``, ``test``).
        allow_empty: accept masks without object pixels (test views where the object is out of view).
        hint: what to do, appended to the message.
    """
    problems: List[MaskProblem] = []
    for image, mask in pairs:
        problem = check_object_mask(Path(image), None if mask is None else Path(mask), dilation, allow_empty)
        if problem is not None:
            problems.append(problem)
    if not problems:
        return
    lines = [problem.line() for problem in problems[:MAX_LISTED]]
    if len(problems) > MAX_LISTED:
        lines.append(f"  ... and {len(problems) - MAX_LISTED} more")
    message = (f"{len(problems)} of {len(pairs)} {split} images have unusable object masks (an object mask marks "
               f"the object to remove with non-zero pixels and must have its image's size):\n" + "\n".join(lines))
    if hint:
        message += f"\n{hint}"
    raise DataError(message)
