"""Datamanagers of the difix3d methods: nerfstudio's stock ones plus a pseudo-view batch.

The pseudo views themselves live in the pipeline's :class:`~ns_diffusion_methods.dataset_updates.pseudo_views.
PseudoViews` (registered buffers, saved in checkpoints); the datamanagers only turn them into training batches of the
same kind as their real ones:

- :class:`Difix3DNerfactoDataManager` (a ``VanillaDataManager``: ``ParallelDataManager`` cannot be updated from the
  trainer process) samples rays of the pseudo images with the run's pixel sampler (32x32 patches in the paper
  setting), drops pixels whose render accumulation was below the threshold, and gives the rays camera index -1 so no
  per-training-image parameter is used for them;
- :class:`Difix3DSplatDataManager` (a ``FullImageDatamanager``) returns one pseudo camera (without ``cam_idx``) and its
  fixed image with ``mask`` = accumulation above the threshold, which splatfacto's loss applies to both images.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.model_components.ray_generators import RayGenerator
from torch import Tensor

from ns_diffusion_methods.dataset_updates.pseudo_views import PseudoViews

#: camera index given to pseudo-view rays: outside every per-training-image table
PSEUDO_CAMERA_INDEX = -1


def pseudo_view_key(views: PseudoViews) -> Tuple[int, int]:
    """Changes whenever the pseudo views are rewritten (round count, step of the last round)."""
    return int(views.rounds), int(views.last_round_step)


@dataclass
class Difix3DNerfactoDataManagerConfig(VanillaDataManagerConfig):
    """nerfacto's data, as Difix3D trains it: a ``VanillaDataManager`` with 32x32 patches of 16384 rays."""

    _target: Type = field(default_factory=lambda: Difix3DNerfactoDataManager)
    dataparser: AnnotatedDataParserUnion = field(default_factory=NerfstudioDataParserConfig)
    """Dataparser of the capture: any of nerfstudio's (a subcommand after the flags: nerfstudio-data, colmap,
    blender-data, ...)."""
    train_num_rays_per_batch: int = 16384
    """Rays per training batch (real or pseudo)."""
    eval_num_rays_per_batch: int = 4096
    """Rays per evaluation batch."""
    patch_size: int = 32
    """Rays are sampled as patch_size x patch_size patches (official Difix3D nerfstudio setting)."""


class Difix3DNerfactoDataManager(VanillaDataManager):
    """``VanillaDataManager`` with :meth:`next_pseudo_train` (see the module docstring).

    Args:
        config: :class:`Difix3DNerfactoDataManagerConfig`.
    """

    config: Difix3DNerfactoDataManagerConfig

    def __init__(self, config: Difix3DNerfactoDataManagerConfig, *args, **kwargs) -> None:
        patch_area = config.patch_size ** 2
        if config.train_num_rays_per_batch < patch_area or config.train_num_rays_per_batch % patch_area:
            raise ValueError(f"`train_num_rays_per_batch` ({config.train_num_rays_per_batch}) must be a positive "
                             f"multiple of patch_size^2 ({patch_area}); set --pipeline.datamanager.patch-size or "
                             f"--pipeline.datamanager.train-num-rays-per-batch accordingly.")
        super().__init__(config, *args, **kwargs)
        self._pseudo_key: Optional[Tuple[int, int]] = None
        self._pseudo_batch: Optional[Dict[str, Tensor]] = None
        self._pseudo_rays: Optional[RayGenerator] = None

    def _get_pixel_sampler(self, dataset, num_rays_per_batch: int):  # type: ignore[override]
        sampler = super()._get_pixel_sampler(dataset, num_rays_per_batch)
        # nerfstudio 1.1.5's PatchPixelSampler rounds the ray count with the default 32x32 patch before it sets the
        # configured patch size (256 rays in 8x8 patches become 0 rays): round again with the real patch size
        sampler.set_num_rays_per_batch(num_rays_per_batch)
        return sampler

    def _build_pseudo_batch(self, views: PseudoViews, min_accumulation: float) -> None:
        filled = torch.nonzero(views.filled).squeeze(-1).tolist()
        if not filled:
            self._pseudo_batch = None
            return
        images = torch.stack([views.images.images[i] for i in filled]).float() / 255.0  # [M', H, W, 3] padded
        accumulations = torch.stack([views.accumulations.images[i] for i in filled]).float() / 255.0
        self._pseudo_batch = {"image": images, "image_idx": torch.tensor(filled, dtype=torch.long),
                              "valid": accumulations >= min_accumulation}
        self._pseudo_rays = RayGenerator(views.cameras().to(self.device))

    def next_pseudo_train(self, step: int, views: PseudoViews, min_accumulation: float
                          ) -> Optional[Tuple[RayBundle, Dict[str, Tensor]]]:
        """A batch of pseudo-view rays (about ``train_num_rays_per_batch``; pixels whose accumulation was below
        ``min_accumulation`` when the view was fixed are dropped), or None when no pseudo pixel is usable."""
        key = pseudo_view_key(views)
        if key != self._pseudo_key:
            self._build_pseudo_batch(views, min_accumulation)
            self._pseudo_key = key
        if self._pseudo_batch is None or not bool(self._pseudo_batch["valid"].any()):
            return None
        assert self.train_pixel_sampler is not None and self._pseudo_rays is not None
        source = {"image": self._pseudo_batch["image"], "image_idx": self._pseudo_batch["image_idx"]}
        batch = self.train_pixel_sampler.sample(source)
        indices = batch["indices"]  # [R, 3]: (pseudo view, y, x)
        position = torch.searchsorted(self._pseudo_batch["image_idx"], indices[:, 0])
        keep = self._pseudo_batch["valid"][position, indices[:, 1], indices[:, 2], 0]
        if not bool(keep.any()):
            return None
        batch = {name: value[keep] for name, value in batch.items()}
        ray_bundle = self._pseudo_rays(batch["indices"])
        ray_bundle.camera_indices = torch.full_like(ray_bundle.camera_indices, PSEUDO_CAMERA_INDEX)
        return ray_bundle, batch


@dataclass
class Difix3DSplatDataManagerConfig(FullImageDatamanagerConfig):
    """splatfacto's data: full images cached on the training device (``gpu`` means "the device", CPU included)."""

    _target: Type = field(default_factory=lambda: Difix3DSplatDataManager)
    dataparser: AnnotatedDataParserUnion = field(
        default_factory=lambda: NerfstudioDataParserConfig(load_3D_points=True))
    """Dataparser of the capture: any of nerfstudio's (a subcommand after the flags: nerfstudio-data, colmap,
    blender-data, ...). 3D points, when the dataparser loads them (nerfstudio-data and colmap: --load-3D-points),
    seed the Gaussians."""
    cache_images: Literal["cpu", "gpu"] = "gpu"
    """Where images are cached: gpu = on the training device (use it on a CPU-only machine too); cpu = pinned host
    memory (needs an accelerator)."""
    cache_images_type: Literal["uint8", "float32"] = "uint8"
    """Cached image type (splatfacto's setting)."""


class Difix3DSplatDataManager(FullImageDatamanager):
    """``FullImageDatamanager`` with :meth:`next_pseudo_train` (see the module docstring).

    Args:
        config: :class:`Difix3DSplatDataManagerConfig`.
    """

    config: Difix3DSplatDataManagerConfig

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pseudo_order: list = []
        self._pseudo_random = random.Random(self.config.train_cameras_sampling_seed)

    def next_pseudo_train(self, step: int, views: PseudoViews, min_accumulation: float
                          ) -> Optional[Tuple[Cameras, Dict[str, Tensor]]]:
        """The next pseudo camera (each filled view once per epoch, shuffled) and ``{"image", "mask"}``, or None."""
        filled = set(torch.nonzero(views.filled).squeeze(-1).tolist())
        self._pseudo_order = [i for i in self._pseudo_order if i in filled]
        if not self._pseudo_order:
            self._pseudo_order = sorted(filled)
            self._pseudo_random.shuffle(self._pseudo_order)
        if not self._pseudo_order:
            return None
        index = self._pseudo_order.pop(0)
        camera = views.cameras([index]).to(self.device)  # no cam_idx: camera optimiser and bilateral grid skip it
        mask = views.accumulation(index, self.device) >= min_accumulation
        if not bool(mask.any()):
            return None
        data = {"image": views.image(index, self.device), "mask": mask, "image_idx": torch.tensor(-1)}
        return camera, data
