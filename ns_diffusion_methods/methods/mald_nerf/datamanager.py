"""MALD-NeRF's datamanager: captured images, object masks and the current inpainted images, sampled as rays.

A :class:`~nerfstudio.data.datamanagers.base_datamanager.VanillaDataManager` (not the parallel one, whose worker
processes cannot see images updated during training). It keeps

- the **captured** training images and their **object masks** (True = object to remove), loaded once;
- the **current inpainted** images in an :class:`~ns_diffusion_methods.dataset_updates.ImageStore` (``inpainted``),
  a module of registered buffers: they are saved in checkpoints and restored by ``--load-dir``. The pipeline writes
  them (first inpainting, then every dataset update); outside the object mask they equal the captured images;
- with visibility-aware masks, the object pixels whose background other views see unmasked (``seen``, an
  ``ImageStore`` of one channel, checkpointed the same way). The **inpainting mask** is then the object mask without
  them (:meth:`MaldNerfDataManager.use_seen_masks`): only it is inpainted and only it meets the masked adversarial
  loss. The seen pixels get no loss in their own view (they show the object); the views that see them supervise them.

Each training batch (:meth:`MaldNerfDataManager.next_train`) concatenates

1. ``train_num_rays_per_batch`` single rays drawn uniformly **outside** the object mask, for the pixel loss;
2. ``num_mask_patches`` square patches of ``mask_patch_size`` pixels drawn to **overlap** the inpainting mask
   (:class:`~ns_diffusion_methods.methods.mald_nerf.sampling.MaskPatchSampler`), for the masked adversarial loss
   (none when no view has a pixel left to inpaint).

Per ray the batch holds ``image`` (captured colour), ``inpainted`` (current inpainted colour), ``object_mask``,
``inpaint_mask`` (the object mask, or the part of it no other view sees) and ``indices``; ``num_single_rays``,
``patch_corners`` and ``patch_size`` describe the layout (patch rays come last, patch-major, row-major).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Literal, Optional, Tuple, Type, Union

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.model_components.ray_generators import RayGenerator
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from ns_diffusion_methods.data.object_mask_data import ObjectMaskDataParserConfig
from ns_diffusion_methods.data.object_mask_dataset import ObjectMaskDataset
from ns_diffusion_methods.dataset_updates import ImageStore
from ns_diffusion_methods.errors import DataError
from ns_diffusion_methods.methods.mald_nerf.sampling import MaskPatchSampler, OutsideRaySampler, patch_indices


@dataclass
class MaldNerfDataManagerConfig(VanillaDataManagerConfig):
    """Rays outside the object mask plus patches overlapping it; current inpainted images kept in checkpoints."""

    _target: Type = field(default_factory=lambda: MaldNerfDataManager)
    dataparser: AnnotatedDataParserUnion = field(default_factory=ObjectMaskDataParserConfig)
    """The capture's dataparser: it must provide object masks (object-mask-data or spinnerf-data)."""
    train_num_rays_per_batch: int = 4096
    """Single rays per step, drawn outside the object mask for the reconstruction losses (nerfacto's 4096)."""
    mask_patch_size: int = 64
    """Side in pixels of the patches that overlap the object mask (the discriminator's input size; a power of two).
    The paper does not say; recommended default."""
    num_mask_patches: int = 4
    """Patches per step for the masked adversarial loss (the paper does not say; recommended default)."""
    sampling_seed: int = 0
    """Seed of the ray and patch sampling (each rank adds its rank)."""
    inpainted_dtype: Literal["uint8", "float32"] = "uint8"
    """Storage of the inpainted images in the checkpoint: uint8 (like nerfstudio's image caches) or float32."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mask_patch_size < 8 or self.mask_patch_size & (self.mask_patch_size - 1):
            raise ValueError(f"`mask_patch_size` must be a power of two >= 8 (the discriminator's input), but got "
                             f"{self.mask_patch_size}.")
        if self.num_mask_patches < 1 or self.train_num_rays_per_batch < 1:
            raise ValueError(f"`num_mask_patches` and `train_num_rays_per_batch` must be >= 1, but got "
                             f"{self.num_mask_patches} and {self.train_num_rays_per_batch}.")


class MaldNerfDataManager(VanillaDataManager[ObjectMaskDataset]):
    """See the module docstring."""

    config: MaldNerfDataManagerConfig
    inpainted: ImageStore

    def __init__(self, config: MaldNerfDataManagerConfig, device: Union[torch.device, str] = "cpu",
                 test_mode: Literal["test", "val", "inference"] = "val", world_size: int = 1, local_rank: int = 0,
                 **kwargs) -> None:
        super().__init__(config, device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank,
                         **kwargs)
        # sized from the cameras so that every mode (ns-eval, ns-render, ns-viewer) can load a checkpoint's images
        cameras = self.train_dataset.cameras
        dtype = torch.uint8 if self.config.inpainted_dtype == "uint8" else torch.float32
        self.inpainted = ImageStore(len(self.train_dataset), int(cameras.height.max()), int(cameras.width.max()),
                                    dtype=dtype)
        self.seen = ImageStore(len(self.train_dataset), int(cameras.height.max()), int(cameras.width.max()),
                               channels=1)

    # ------------------------------------------------------------------------------------------------ datasets
    def create_train_dataset(self) -> ObjectMaskDataset:
        """The training dataset; refuses dataparsers without object masks before anything is loaded."""
        dataset = ObjectMaskDataset(dataparser_outputs=self.train_dataparser_outputs,
                                    scale_factor=self.config.camera_res_scale_factor)
        if not dataset.has_object_masks:
            raise DataError(
                f"mald-nerf needs an object mask for every training image, but the dataparser "
                f"`{type(self.config.dataparser).__name__}` provides none for {self.config.dataparser.data}. Use "
                f"`object-mask-data` (nerfstudio captures whose frames carry \"object_mask_path\") or "
                f"`spinnerf-data` (SPIn-NeRF layout).")
        return dataset

    def create_eval_dataset(self) -> ObjectMaskDataset:  # noqa: D102
        return ObjectMaskDataset(dataparser_outputs=self.dataparser.get_dataparser_outputs(split=self.test_split),
                                 scale_factor=self.config.camera_res_scale_factor)

    # ------------------------------------------------------------------------------------------------ training data
    def setup_train(self) -> None:
        """Load every training image and object mask once, and build the samplers and the ray generator."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        dataset = self.train_dataset
        images, masks, valid = [], [], []
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), transient=True,
                      console=CONSOLE) as progress:
            for index in progress.track(range(len(dataset)), description="Loading training images and object masks"):
                data = dataset[index]
                image = data["image"]
                if image.shape[-1] != 3:
                    raise DataError(f"{dataset.image_filenames[index]} has {image.shape[-1]} channels: mald-nerf "
                                    f"needs RGB training images. object-mask-data composites RGBA images on its "
                                    f"--alpha-color; with another dataparser, convert the images to RGB.")
                images.append(image)
                masks.append(data["object_mask"][..., 0])
                if "mask" in data:
                    valid.append(data["mask"][..., 0].bool())
        sizes = {tuple(image.shape[:2]) for image in images}
        if len(sizes) > 1:
            raise DataError(f"mald-nerf needs training images of one size, but {dataset.image_filenames[0].parent} "
                            f"holds sizes {sorted(sizes)} (HxW).")
        image_device = self.device if self.config.images_on_gpu else "cpu"
        self.captured = torch.stack(images).to(image_device)  # [N, H, W, 3] float in [0, 1]
        self.object_masks = torch.stack(masks).to(image_device)  # [N, H, W] bool
        valid_masks = torch.stack(valid) if valid else None
        self.inpaint_masks = self.object_masks
        self.patch_sampler: Optional[MaskPatchSampler] = MaskPatchSampler(self.object_masks)
        self.ray_sampler = OutsideRaySampler(self.object_masks, valid_masks)
        self.generator = torch.Generator().manual_seed(self.config.sampling_seed + self.local_rank)
        self.train_ray_generator = RayGenerator(dataset.cameras.to(self.device))
        if self.config.mask_patch_size > min(self.captured.shape[1:3]):
            raise DataError(f"--pipeline.datamanager.mask-patch-size {self.config.mask_patch_size} exceeds the "
                            f"training images ({self.captured.shape[1]}x{self.captured.shape[2]}).")
        self.train_pixel_sampler = None

    @property
    def num_train_images(self) -> int:
        """Number of training views."""
        return len(self.train_dataset)

    def captured_image(self, index: int) -> Tensor:
        """Captured training image ``index``: ``[H, W, 3]`` float in [0, 1]."""
        return self.captured[index]

    def object_mask(self, index: int) -> Tensor:
        """Object mask of training image ``index``: ``[H, W]`` bool, True = object."""
        return self.object_masks[index]

    def inpaint_mask(self, index: int) -> Tensor:
        """Inpainting mask of training image ``index``: ``[H, W]`` bool, the object mask without the pixels other
        views see (the whole object mask until visibility-aware masks are in use)."""
        return self.inpaint_masks[index]

    def seen_mask(self, index: int) -> Optional[Tensor]:
        """``[H, W]`` bool: object pixels of view ``index`` that other views see unmasked; None until computed."""
        if not bool(self.seen.filled.all()):
            return None
        return self.seen.get(index)[..., 0].to(self.object_masks.device) > 0.5

    def set_seen_masks(self, seen: Tensor, step: int) -> None:
        """Store the seen object pixels ``[N, H, W]`` (bool) computed at ``step`` and use them
        (:meth:`use_seen_masks`)."""
        for index in range(self.num_train_images):
            self.seen.set(index, (seen[index] & self.object_masks[index].to(seen.device))[..., None].float(), step)
        self.use_seen_masks()

    def use_seen_masks(self) -> bool:
        """Inpaint (and sample adversarial patches) only where no other view sees the background, if the seen
        pixels are known (computed in this run or restored from its checkpoint). Returns whether they are."""
        if not bool(self.seen.filled.all()):
            return False
        seen = torch.stack([self.seen_mask(i) for i in range(self.num_train_images)])
        self.inpaint_masks = self.object_masks & ~seen
        self.patch_sampler = MaskPatchSampler(self.inpaint_masks) if bool(self.inpaint_masks.any()) else None
        return True

    def set_inpainted(self, index: int, image: Tensor, step: int) -> None:
        """Store the inpainted training image ``index`` (``[H, W, 3]`` in [0, 1]) written at ``step``."""
        self.inpainted.set(index, image, step)

    def next_train(self, step: int) -> Tuple[RayBundle, Dict]:
        """Single rays outside the object mask, then patches overlapping it (see the module docstring)."""
        self.train_count += 1
        size, count = self.config.mask_patch_size, self.config.num_mask_patches
        single = self.ray_sampler.sample(self.config.train_num_rays_per_batch, self.generator)
        if self.patch_sampler is not None:
            corners = self.patch_sampler.sample_corners(count, size, self.generator)
        else:  # every object pixel is seen by another view: nothing left for the adversarial loss
            corners = torch.zeros(0, 3, dtype=torch.long)
        indices = torch.cat([single, patch_indices(corners, size)], dim=0)  # [R + K*P*P, 3] on CPU
        views, rows, cols = indices.unbind(dim=1)
        store = self.inpainted.images
        inpainted = store[views.to(store.device), rows.to(store.device), cols.to(store.device)]
        inpainted = inpainted.float() / 255.0 if store.dtype == torch.uint8 else inpainted.float()
        image_index = (views.to(self.captured.device), rows.to(self.captured.device), cols.to(self.captured.device))
        batch = {
            "image": self.captured[image_index],
            "inpainted": inpainted,
            "object_mask": self.object_masks[image_index][:, None],
            "inpaint_mask": self.inpaint_masks[image_index][:, None],
            "indices": indices,
            "num_single_rays": single.shape[0],
            "patch_corners": corners,
            "patch_size": size,
        }
        ray_bundle = self.train_ray_generator(indices.to(self.device))
        return ray_bundle, batch

    def get_train_rays_per_batch(self) -> int:  # noqa: D102
        return self.config.train_num_rays_per_batch + self.config.num_mask_patches * self.config.mask_patch_size ** 2

    def inpainted_images(self, indices: Optional[list] = None) -> Tensor:
        """The current inpainted images ``[n, H, W, 3]`` in [0, 1] (all by default)."""
        indices = list(range(self.num_train_images)) if indices is None else indices
        return torch.stack([self.inpainted.get(i) for i in indices])
