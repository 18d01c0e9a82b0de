"""The fixer interface: repair artifacts in rendered images, optionally guided by reference images.

A method only calls ``fixer = config.fixer.setup(device=...)`` and ``fixer.fix(images, references)``:

- ``images``: [B, 3, H, W] in [0, 1], renders to repair (one size per call);
- ``references``: ``None`` or a list of B entries, each ``None`` or [V_i, 3, H', W'] in [0, 1] -- zero, one or
  several reference images per render (typically the nearest training images), of any size;
- returns [B, 3, H, W] in [0, 1].

Each backend has its config beside its code, a subclass of the abstract :class:`FixerConfig` whose ``_target`` is the
backend's :class:`Fixer`: Difix (:mod:`~ns_diffusion_methods.fixers.difix`), the identity ablation baseline
(:mod:`~ns_diffusion_methods.fixers.identity`) and the synthetic-scene oracle
(:mod:`~ns_diffusion_methods.fixers.oracle`); :mod:`~ns_diffusion_methods.fixers.configs` collects them into the
command-line union (``pipeline.fixer:difix``, ``:identity``, ``:oracle``). This module imports no backend. Images of
mixed sizes or on disk go through :meth:`Fixer.fix_images`.

Fixers are plain objects, not ``nn.Module`` s: a pipeline that holds one never puts fixer weights in its checkpoints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor

from ns_diffusion_methods.data.images import (  # noqa: F401  (re-exported for the fixers' callers)
    IMAGE_SUFFIXES,
    list_images,
    load_image,
    resize_images,
    save_image,
)

#: an image given as a tensor [3, H, W] in [0, 1] or as a file
ImageLike = Union[Tensor, str, Path]
#: the references of one image: none, one image, or several (a [V, 3, H, W] tensor or a sequence of images)
ReferencesLike = Union[None, ImageLike, Sequence[ImageLike]]


@dataclass
class FixerConfig(InstantiateConfig):
    """Abstract config of a fixer backend; ``setup(device=...)`` builds its :class:`Fixer`.

    Subclasses set ``_target`` (their fixer class) and add their own settings.
    """

    seed: int = 42
    """Seed of the fixer's randomness (Difix: the VAE posterior sample; oracle: its noise): the same inputs and seed
    give the same output."""

    def setup(self, device: Union[str, torch.device] = "cpu", **kwargs: Any) -> "Fixer":  # type: ignore[override]
        """Build the fixer on ``device`` (``flag=``: the command-line flag naming its weights, for error messages)."""
        return self._target(self, device=device, **kwargs)

    def weights(self) -> Optional[str]:
        """The pretrained weights the backend loads (a Hub id, a folder or ``tiny``), or None when it loads none."""
        return None

    def summary(self) -> str:
        """A short description of the backend and its main settings, for messages (e.g. ``difix nvidia/difix_ref``)."""
        return type(self).__name__

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Load a ``config.yml`` (yaml) of a run from before the backends had configs of their own, where the base
        config was Difix's: such a config becomes a :class:`~ns_diffusion_methods.fixers.difix.config.DifixFixerConfig`
        with the same settings."""
        if type(self) is FixerConfig and "model" in state:
            from ns_diffusion_methods.fixers.difix.config import DifixFixerConfig

            self.__class__ = DifixFixerConfig
            state = {**state, "dtype": DifixFixerConfig.canonical_dtype(state.get("dtype", "auto"))}
        self.__dict__.update(state)


class Fixer(ABC):
    """Repairs artifacts in renders; see the module docstring for the tensor contract."""

    config: FixerConfig

    def __init__(self, config: FixerConfig, device: Union[str, torch.device] = "cpu", flag: str = "--model") -> None:
        self.config = config
        self.device = torch.device(device)
        #: the command-line flag naming the weights, for error messages (difix3d: pipeline.fixer:difix
        #: --pipeline.fixer.model)
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

        Images of equal size go to :meth:`fix` together (a backend may split them further to bound memory).

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
