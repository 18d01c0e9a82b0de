"""Object masks for object removal: reading, dilation and validation before training.

An *object mask* marks the pixels of the object to remove (True / non-zero = object, to be inpainted). This is the
opposite of nerfstudio's ``mask_path`` masks, where True means "a valid pixel that may be sampled"; the two are kept
apart (``object_mask_path`` in ``transforms.json``, ``label/`` folders in the SPIn-NeRF layout).

Mask files may be in any image format PIL reads, and their values are read the same way everywhere (the dataparsers,
``ns-diffusion add-masks``), by :func:`mask_from_image`:

- a mask whose largest value is 1 is a label mask (SPIn-NeRF's ``label/`` PNGs, palette PNGs with index 1 = object):
  1 = object;
- otherwise a pixel is object when its value is above half the format's range (above 127 for 8-bit images, 32767 for
  16-bit, 0.5 for floating point), so 0/255 masks and JPEG-compressed masks (noise around 0 and 255) read as drawn;
- colour masks: a pixel is object when any of its colour channels is; a mask with a transparency channel that is not
  uniformly opaque (a cut-out of the object) is read from that channel, opaque = object.

:func:`validate_object_masks` runs before any training: every training image needs a mask of its size that is
neither empty nor full (after dilation). All problems are collected and reported together, naming the files, so a user
fixes a capture in one go.

This module is import-light (numpy, PIL; OpenCV only when dilating): the dataparsers import it during nerfstudio's
plugin discovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from ns_diffusion_methods.data.images import image_size
from ns_diffusion_methods.errors import DataError

#: (kernel size, iterations) of a square dilation; (0, 0) or any zero means "no dilation"
Dilation = Tuple[int, int]

#: how many offending files an error message lists before summarising the rest
MAX_LISTED = 12


def _value_range(mode: str) -> float:
    """The largest value of a PIL image mode's samples (8-bit unless the mode says otherwise)."""
    if mode.startswith("I"):
        return 65535.0  # 16-bit PNGs ("I;16", or "I" once converted)
    if mode == "F":
        return 1.0
    return 255.0


def mask_from_array(values: np.ndarray, value_range: float = 255.0) -> np.ndarray:
    """Boolean ``[H, W]`` object mask from mask values ``[H, W]`` or colour ``[H, W, C]`` (see the module docstring).

    Args:
        values: the mask's samples; with channels, a pixel is object when any channel is.
        value_range: the largest value the format can hold (255 for 8-bit images).
    """
    if values.ndim == 3:
        values = values.max(axis=-1)
    if values.ndim != 2:
        raise ValueError(f"a mask image must be [H, W] or [H, W, C], but has shape {values.shape}")
    if values.dtype == bool:
        return values.copy()
    if values.size and values.max() == 1 and value_range > 1:
        return values == 1  # a label mask: 0 = keep, 1 = object
    return values.astype(np.float64) > value_range / 2


def mask_from_image(image: Image.Image) -> np.ndarray:
    """Boolean ``[H, W]`` object mask (True = object) of a mask image, any mode (see the module docstring)."""
    if image.mode == "P":
        # palette masks (DAVIS-style annotations) hold class indices; a palette with transparency becomes RGBA
        image = image.convert("RGBA") if "transparency" in image.info else image
    if image.mode == "PA":
        image = image.convert("RGBA")
    if image.mode in ("LA", "La", "RGBA", "RGBa"):
        alpha = np.asarray(image.getchannel("A"))
        if alpha.min() < 255:  # a cut-out: opaque = object
            return mask_from_array(alpha)
        image = image.convert("L" if image.mode in ("LA", "La") else "RGB")
    if image.mode not in ("1", "L", "P", "RGB", "F") and not image.mode.startswith("I"):
        image = image.convert("RGB")  # CMYK, YCbCr, ...
    return mask_from_array(np.asarray(image), _value_range(image.mode))


def read_object_mask(path: Path) -> np.ndarray:
    """The object mask stored at ``path`` as a boolean ``[H, W]`` array (True = object)."""
    with Image.open(path) as image:
        return mask_from_image(image)


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


def _size(size: Tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def check_object_mask(image: Path, mask: Optional[Path], dilation: Dilation = (0, 0), allow_empty: bool = False,
                      sizes: Optional[Sequence[Tuple[int, int]]] = None) -> Optional[MaskProblem]:
    """The problem with ``mask`` as the object mask of ``image``, or None when it is usable.

    Checks, in order: a mask is given, the file exists and is readable, it has an accepted size, it is not empty
    (unless ``allow_empty``) and, after ``dilation``, it does not cover the whole image.

    Args:
        image: the image file the mask belongs to (named in the messages).
        mask: the mask file, or None when the frame has none.
        dilation: the dilation applied at load time.
        allow_empty: accept a mask without object pixels.
        sizes: the accepted mask sizes ``(w, h)``, the first one named in the message; default: the size of
            ``image`` (read from its header).
    """
    if mask is None:
        return MaskProblem(image, None, "has no object mask")
    if not Path(mask).is_file():
        return MaskProblem(image, mask, f"object mask file does not exist (for image {image})")
    if sizes is None:
        try:
            sizes = [image_size(image)]  # (w, h), read from the header only
        except (OSError, ValueError) as err:
            return MaskProblem(image, mask, f"its image {image} cannot be read ({err})")
    try:
        values = read_object_mask(Path(mask))
    except (OSError, ValueError) as err:
        return MaskProblem(image, mask, f"cannot be read as an image ({err})")
    mask_size = (values.shape[1], values.shape[0])
    if mask_size not in [tuple(size) for size in sizes]:
        others = "".join(f" or {_size(size)}" for size in sizes[1:])
        return MaskProblem(image, mask, f"is {_size(mask_size)} (WxH) but its image {image} is {_size(sizes[0])}"
                                        f"{others}")
    if not values.any():
        if allow_empty:
            return None
        return MaskProblem(image, mask, "is empty (no object pixel): nothing to remove in this view")
    if dilate_mask(values, dilation).all():
        extra = f" after dilation {dilation[0]}x{dilation[0]} x{dilation[1]}" if dilation[0] > 1 else ""
        return MaskProblem(image, mask, f"covers the whole image{extra}: nothing is left to reconstruct from")
    return None


def validate_object_masks(pairs: Sequence[Tuple[Path, Optional[Path]]], dilation: Dilation = (0, 0),
                          split: str = "training", allow_empty: bool = False, hint: str = "",
                          sizes: Optional[Sequence[Optional[Sequence[Tuple[int, int]]]]] = None) -> None:
    """Raise :class:`DataError` naming every image of ``pairs`` whose object mask is unusable.

    Args:
        pairs: ``(image file, object mask file or None)`` for every image of the split.
        dilation: the dilation applied at load time (a mask that becomes full only after dilation is refused).
        split: the split's name for the message (``training``, ``test``).
        allow_empty: accept masks without object pixels (test views where the object is out of view).
        hint: what to do, appended to the message.
        sizes: per pair, the accepted mask sizes ``(w, h)`` (see :func:`check_object_mask`); default: each image's.
    """
    problems: List[MaskProblem] = []
    for index, (image, mask) in enumerate(pairs):
        accepted = None if sizes is None else sizes[index]
        problem = check_object_mask(Path(image), None if mask is None else Path(mask), dilation, allow_empty,
                                    accepted)
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
