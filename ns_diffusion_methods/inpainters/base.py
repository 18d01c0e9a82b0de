"""The inpainter interface shared by every backend, and the abstract config every backend's config extends.

An inpainter fills the masked pixels of a batch of images. MALD-NeRF uses it twice:

- the first round fills the object region of the captured images before training (a diffusion backend starts from
  pure noise, ``start_timestep=None``);
- every later round of the iterative dataset update re-inpaints from the current NeRF render ``source``, noised to
  ``start_timestep`` and denoised by *partial DDIM* (only the DDIM timesteps ``<= start_timestep``), still
  conditioned on the masked captured image and the mask. Backends that do not start from renders ignore both.

Whatever the backend, pixels outside the mask are returned exactly as given in ``images`` (composite), so a dataset
update can never change them.

Each backend has its config beside its code, a subclass of :class:`InpainterConfig` whose ``_target`` is the
backend's :class:`Inpainter` (built by ``config.setup(device=...)``); :mod:`ns_diffusion_methods.inpainters.configs`
collects them into the command-line union (``pipeline.inpainter:ldm``, ``:opencv``, ``:oracle``). This module
imports no backend.

Inpainters are plain objects, not ``nn.Module``s: a pipeline that holds one never puts diffusion weights in its
checkpoints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Optional, Union

import torch
from nerfstudio.configs.base_config import InstantiateConfig
from torch import Tensor


@dataclass
class InpainterConfig(InstantiateConfig):
    """Abstract config of an inpainting backend; ``setup(device=...)`` builds its :class:`Inpainter`.

    Subclasses set ``_target`` (their inpainter class) and :attr:`backend`, and add their own settings.
    """

    #: the backend's name (its command-line subcommand: ``pipeline.inpainter:NAME``)
    backend: ClassVar[str] = "inpainter"

    def setup(self, device: Union[str, torch.device] = "cpu", **kwargs: Any) -> "Inpainter":  # type: ignore[override]
        """Build the backend on ``device``."""
        return self._target(self, device=device, **kwargs)

    def summary(self) -> str:
        """A short description of the backend and its main settings, for messages (e.g. ``opencv (telea, radius
        5)``)."""
        return self.backend

    def pretrained_models(self, flag_prefix: str) -> Dict[str, str]:
        """The backend's pretrained-weight slots: command-line flag -> model name (none by default).

        ``flag_prefix`` is the flag of the config itself, e.g. ``--pipeline.inpainter``.
        """
        return {}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        """Load a ``config.yml`` (yaml) of a run from before the backends had configs of their own, where one config
        named its backend by ``model`` (``opencv``, ``tiny`` or a Hub id/folder): it becomes the backend's config
        with the same settings, so ``ns-eval``, ``ns-render`` and ``--load-dir`` work on those runs."""
        if type(self) is InpainterConfig and "model" in state:
            state = {k: v for k, v in state.items() if k != "_target"}
            method, radius = state.pop("opencv_method", "telea"), state.pop("opencv_radius", 5)
            if state["model"] == "opencv":
                from ns_diffusion_methods.inpainters.opencv import OpenCVInpainterConfig

                self.__class__ = OpenCVInpainterConfig
                state = {"method": method, "radius": radius}
            else:
                from ns_diffusion_methods.inpainters.ldm import LDMInpainterConfig

                self.__class__ = LDMInpainterConfig
            state["_target"] = type(self)()._target
        self.__dict__.update(state)


def build_inpainter(config: InpainterConfig, device: Union[str, torch.device] = "cpu", **kwargs: Any) -> "Inpainter":
    """The ``_target`` that configs of runs from before the backend configs name; builds ``config``'s backend."""
    return config.setup(device=device, **kwargs)


def __getattr__(name: str) -> Any:
    """``CustomizationConfig`` where configs of runs from before the backend configs look for it."""
    if name == "CustomizationConfig":
        from ns_diffusion_methods.inpainters.ldm import CustomizationConfig

        return CustomizationConfig
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Inpainter(ABC):
    """Fills the masked pixels of images; see the module docstring for the two modes."""

    config: InpainterConfig
    device: torch.device
    #: whether ``start_timestep`` and ``source`` are used (False for backends that ignore renders and noise)
    uses_diffusion: bool = False
    #: whether scene customisation (LoRA fine-tuning) applies to this backend
    customizable: bool = False
    #: how the first inpainting (before training) fills the hole, for messages
    first_inpainting: str = "once, before training"

    @property
    @abstractmethod
    def num_train_timesteps(self) -> int:
        """Number of diffusion training timesteps T; ``start_timestep`` lies in ``[0, T)``."""

    @abstractmethod
    def inpaint(
        self,
        images: Tensor,
        masks: Tensor,
        start_timestep: Optional[int] = None,
        source: Optional[Tensor] = None,
        generator: Optional[torch.Generator] = None,
    ) -> Tensor:
        """Fill the masked pixels of ``images``.

        Args:
            images: ``[B, 3, H, W]`` in [0, 1], the captured images (the known pixels and the conditioning).
            masks: ``[B, 1, H, W]`` bool, True = pixel to fill.
            start_timestep: None = inpaint from pure noise; ``t`` = partial DDIM from ``source`` noised to ``t``.
            source: ``[B, 3, H, W]`` in [0, 1], the image to start from when ``start_timestep`` is given (the
                current NeRF render). Required with ``start_timestep``.
            generator: random generator for the noise; default is the inpainter's own.

        Returns:
            ``[B, 3, H, W]`` in [0, 1]: ``images`` outside the mask (exactly), the inpainting inside.
        """


def check_inputs(images: Tensor, masks: Tensor, start_timestep: Optional[int], source: Optional[Tensor],
                 num_train_timesteps: int) -> None:
    """Validate the arguments of :meth:`Inpainter.inpaint`, with messages naming the argument and its value."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"`images` must be [B, 3, H, W], but got shape {tuple(images.shape)}.")
    batch, _, height, width = images.shape
    if masks.shape != (batch, 1, height, width):
        raise ValueError(f"`masks` must be [B, 1, H, W] = {(batch, 1, height, width)} like `images`, "
                         f"but got shape {tuple(masks.shape)}.")
    if masks.dtype != torch.bool:
        raise ValueError(f"`masks` must be a bool tensor (True = fill), but got dtype {masks.dtype}.")
    if start_timestep is not None:
        if source is None:
            raise ValueError("`start_timestep` was given without `source`: partial denoising needs the image to "
                             "start from (the current render).")
        if source.shape != images.shape:
            raise ValueError(f"`source` must have the shape of `images` {tuple(images.shape)}, "
                             f"but got {tuple(source.shape)}.")
        if not 0 <= int(start_timestep) < num_train_timesteps:
            raise ValueError(f"`start_timestep` must be in [0, {num_train_timesteps}), but got {start_timestep}.")


def composite(images: Tensor, filled: Tensor, masks: Tensor) -> Tensor:
    """``filled`` inside the mask, ``images`` (exactly) outside: ``[B, 3, H, W]``."""
    return torch.where(masks.expand_as(images), filled.to(images.dtype), images)
