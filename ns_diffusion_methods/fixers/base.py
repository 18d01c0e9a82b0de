"""The fixer interface: repair artifacts in rendered images, optionally guided by reference images.

A method only calls ``fixer = config.fixer.setup(device=...)`` and ``fixer.fix(images, references)``:

- ``images``: [B, 3, H, W] in [0, 1], renders to repair (one size per call);
- ``references``: ``None`` or a list of B entries, each ``None`` or [V_i, 3, H', W'] in [0, 1] -- zero, one or
  several reference images per render (typically the nearest training images), of any size;
- returns [B, 3, H, W] in [0, 1].

:class:`FixerConfig` is a nerfstudio ``InstantiateConfig`` (tyro- and yaml-serialisable) whose ``_target`` is the Difix
fixer (:class:`~ns_diffusion_methods.fixers.difix.DifixFixer`); :class:`IdentityFixerConfig` returns its input and
serves as ablation baseline. Images of mixed sizes or on disk go through :meth:`Fixer.fix_images`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple, Type, Union

import torch
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

from ns_diffusion_methods.errors import DataError

#: file suffixes read as images
IMAGE_SUFFIXES: Tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")

#: an image given as a tensor [3, H, W] in [0, 1] or as a file
ImageLike = Union[Tensor, str, Path]
#: the references of one image: none, one image, or several (a [V, 3, H, W] tensor or a sequence of images)
ReferencesLike = Union[None, ImageLike, Sequence[ImageLike]]


def _difix_fixer() -> type:
    from ns_diffusion_methods.fixers.difix import DifixFixer

    return DifixFixer


def resolve_dtype(name: str, device: Union[str, torch.device]) -> torch.dtype:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere; otherwise the named dtype."""
    device_type = torch.device(device).type
    if name == "auto":
        return torch.bfloat16 if device_type == "cuda" else torch.float32
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise ValueError(f"`dtype` must be one of auto, fp32, bf16, fp16, but got {name!r}.")
    return table[name]


@dataclass
class FixerConfig(InstantiateConfig):
    """Difix single-step fixer (Difix3D+, Wu et al., CVPR 2025); ``setup(device)`` returns a :class:`Fixer`."""

    _target: Type = field(default_factory=_difix_fixer)
    model: str = "nvidia/difix_ref"
    """Weights: `nvidia/difix_ref` (with reference view), `nvidia/difix` (without), a folder in the same diffusers
    layout (for example written by `ns-diffusion train-fixer`), or `tiny` (random tiny model for tests and CPU runs)."""
    dtype: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Compute precision: auto = bf16 on CUDA, fp32 on CPU."""
    chunk_size: int = 2
    """Most images (each with its reference views) run through the network at once; lower it to bound memory."""
    seed: int = 42
    """Seed of the VAE posterior sample: the same inputs and seed give the same output."""
    resolution: Optional[Tuple[int, int]] = None
    """Working size (H, W) of the network; None = each image's own size rounded to a multiple of 8 (the diffusers
    pipeline's behaviour), (576, 1024) = Difix's training size. Outputs always have the input size."""
    prompt: str = "remove degradation"
    """Text prompt the fixer was trained with (its embedding is computed once, at load)."""
    timestep: int = 199
    """Diffusion timestep of the single denoising step (Difix: 199, the paper's tau = 200)."""

    def setup(self, device: Union[str, torch.device] = "cpu", **kwargs) -> "Fixer":  # type: ignore[override]
        """Load the fixer on ``device`` (``flag=``: the command-line flag naming the weights, for error messages)."""
        return self._target(self, device=device, **kwargs)


class Fixer(ABC):
    """Repairs artifacts in renders; see the module docstring for the tensor contract."""

    config: FixerConfig

    def __init__(self, config: FixerConfig, device: Union[str, torch.device] = "cpu", flag: str = "--model") -> None:
        self.config = config
        self.device = torch.device(device)
        #: the command-line flag naming the weights, for error messages (difix3d: --pipeline.fixer.model)
        self.flag = flag

    @property
    def uses_references(self) -> bool:
        """Whether reference images influence the result (False: they are accepted and ignored)."""
        return False

    @abstractmethod
    def fix(self, images: Tensor, references: Optional[Sequence[Optional[Tensor]]] = None, *,
            seed: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        """Repair ``images`` [B, 3, H, W] in [0, 1]; returns [B, 3, H, W] in [0, 1].

        Args:
            images: renders to repair, all of one size.
            references: ``None`` or B entries, each ``None`` or [V_i, 3, H', W'] in [0, 1] (any size, any V_i).
            seed: seed for this call (default: ``config.seed``); ignored when ``generator`` is given.
            generator: a torch generator to draw the call's randomness from.
        """

    def fix_images(self, images: Sequence[ImageLike], references: Optional[Sequence[ReferencesLike]] = None, *,
                   seed: Optional[int] = None) -> List[Tensor]:
        """Repair images of any sizes, given as tensors [3, H, W] in [0, 1] or files; returns [3, H, W] each.

        Images of equal size are batched together (in chunks of ``config.chunk_size``).

        Args:
            images: the images.
            references: ``None`` or one entry per image: ``None``, an image, a [V, 3, H, W] tensor, or a list of
                images (tensors or files).
            seed: seed of the call (default ``config.seed``).
        """
        tensors = [as_image_tensor(image) for image in images]
        if references is not None and len(references) != len(tensors):
            raise ValueError(f"Got {len(references)} reference entries for {len(tensors)} images; give one entry "
                             f"(possibly None) per image.")
        refs = [as_reference_tensor(r) for r in references] if references is not None else [None] * len(tensors)
        generator = torch.Generator().manual_seed(self.config.seed if seed is None else seed)
        groups: "OrderedDict[Tuple[int, int], List[int]]" = OrderedDict()
        for index, image in enumerate(tensors):
            groups.setdefault(tuple(image.shape[-2:]), []).append(index)
        results: List[Optional[Tensor]] = [None] * len(tensors)
        for indices in groups.values():
            fixed = self.fix(torch.stack([tensors[i] for i in indices]).to(self.device),
                             [refs[i] for i in indices], generator=generator)
            for i, image in zip(indices, fixed):
                results[i] = image
        return results  # type: ignore[return-value]


@dataclass
class IdentityFixerConfig(FixerConfig):
    """A fixer that returns its input unchanged: the ablation baseline (no diffusion model is loaded)."""

    _target: Type = field(default_factory=lambda: IdentityFixer)


class IdentityFixer(Fixer):
    """Returns the renders unchanged."""

    def fix(self, images: Tensor, references: Optional[Sequence[Optional[Tensor]]] = None, *,
            seed: Optional[int] = None, generator: Optional[torch.Generator] = None) -> Tensor:
        check_fixer_inputs(images, references)
        return images.clone()


def check_fixer_inputs(images: Tensor, references: Optional[Sequence[Optional[Tensor]]]) -> None:
    """Validate the :meth:`Fixer.fix` arguments (shapes, counts), with messages naming what is wrong."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"`images` must be [B, 3, H, W] in [0, 1], but got shape {tuple(images.shape)}.")
    if references is None:
        return
    if len(references) != images.shape[0]:
        raise ValueError(f"`references` must have one entry per image ({images.shape[0]}), but has "
                         f"{len(references)}; use None for an image without references.")
    for index, refs in enumerate(references):
        if refs is not None and (refs.ndim != 4 or refs.shape[1] != 3):
            raise ValueError(f"references[{index}] must be [V, 3, H, W] in [0, 1], but got shape "
                             f"{tuple(refs.shape)}.")


# ---------------------------------------------------------------------------------------------------------------
# images on disk


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


def load_image(path: Union[str, Path]) -> Tensor:
    """An image file as [3, H, W] float32 in [0, 1] (RGB; alpha is dropped)."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError) as err:
        raise DataError(f"Cannot read the image {path}: {err}. Provide a readable PNG or JPEG file.") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def save_image(image: Tensor, path: Union[str, Path]) -> None:
    """Write [3, H, W] in [0, 1] to ``path`` (format from the suffix; 8 bits per channel)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.detach().float().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    kwargs = {"quality": 95} if path.suffix.lower() in (".jpg", ".jpeg") else {}
    Image.fromarray(array).save(path, **kwargs)


def as_image_tensor(image: ImageLike) -> Tensor:
    """A tensor [3, H, W] in [0, 1] from a tensor or an image file."""
    if isinstance(image, Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"An image tensor must be [3, H, W] in [0, 1], but got shape {tuple(image.shape)}.")
        return image
    return load_image(image)


def as_reference_tensor(references: ReferencesLike) -> Optional[Tensor]:
    """The references of one image as [V, 3, H, W] (None when there are none); several files must share a size."""
    if references is None:
        return None
    if isinstance(references, Tensor):
        return references.unsqueeze(0) if references.ndim == 3 else references
    if isinstance(references, (str, Path)):
        return load_image(references).unsqueeze(0)
    tensors = [as_image_tensor(r) for r in references]
    if not tensors:
        return None
    sizes = {tuple(t.shape[-2:]) for t in tensors}
    if len(sizes) > 1:  # resize to the first one's size: the fixer resizes references to the image's size anyway
        size = tuple(tensors[0].shape[-2:])
        tensors = [resize_images(t[None], size)[0] for t in tensors]
    return torch.stack(tensors)


def resize_images(images: Tensor, size: Tuple[int, int]) -> Tensor:
    """Resize [N, C, H, W] to ``size`` (H, W) with antialiased bicubic filtering; a no-op at the same size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    dtype = images.dtype
    resized = torch.nn.functional.interpolate(images.float(), size=tuple(size), mode="bicubic", align_corners=False,
                                              antialias=True)
    return resized.to(dtype)
