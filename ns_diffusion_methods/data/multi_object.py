"""Multi-object data for methods that learn over many objects (SSDNeRF, RenderDiffusion).

nerfstudio's datamanagers assume one scene. Here the training split is many objects, each with its own views, and the
held-out split is other objects with designated input views. :class:`MultiObjectDataManager` keeps every training
image in memory as ``uint8`` (SRN cars: 6 GB at 128 px, decoded into one tensor; the synthetic ``objects`` set a
few MB), decodes held-out objects only when evaluation asks for them (a few kept at a time), knows which object each
image shows, and serves:

- ``mode="rays"`` (SSDNeRF): a batch of B objects and, per object, R random rays drawn over the pixels of all its
  views (:meth:`MultiObjectDataManager.next_train`, or :meth:`~MultiObjectDataManager.sample_rays` for more rays of
  the same objects, e.g. SSDNeRF's inner steps);
- ``mode="images"`` (RenderDiffusion): B random whole images with their cameras and object indices;
- evaluation: the held-out objects with their input views (1 and 2 views, see
  :func:`ns_diffusion_methods.data.srn_dataparser.resolve_input_views`) and scored views
  (:meth:`~MultiObjectDataManager.eval_object`).

``train_dataset``/``eval_dataset`` are nerfstudio ``InputDataset``s served from memory, so the viewer, the trainer and
``ns-eval`` find what they look for.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Dict, List, Literal, Optional, Sequence, Tuple, Type, Union

import numpy as np
import numpy.typing as npt
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from torch import Tensor
from torch.nn import Parameter

from ns_diffusion_methods.data.object_images import LazyObjectImages
from ns_diffusion_methods.data.srn_dataparser import SRNDataParserConfig
from ns_diffusion_methods.engine.distributed import DistributedContext, Shard
from ns_diffusion_methods.errors import DataError


class InMemoryImageDataset(InputDataset):
    """A nerfstudio ``InputDataset`` whose images come from a ``uint8 [N, H, W, 3]`` tensor instead of files (or a
    :class:`~ns_diffusion_methods.data.object_images.LazyObjectImages`, which decodes them object by object).

    Each item also carries ``object_index`` and ``view_index`` (from the dataparser's metadata).
    """

    def __init__(self, dataparser_outputs: DataparserOutputs, images: Union[Tensor, LazyObjectImages]):
        super().__init__(dataparser_outputs, scale_factor=1.0)
        assert images.dtype == torch.uint8 and images.dim() == 4 and images.shape[-1] == 3, (images.dtype, images.shape)
        assert images.shape[0] == len(dataparser_outputs.image_filenames), (images.shape, len(self))
        self.images = images

    def get_numpy_image(self, image_idx: int) -> npt.NDArray[np.uint8]:
        return self.images[image_idx].numpy()

    def get_metadata(self, data: Dict) -> Dict:
        idx = data["image_idx"]
        return {"object_index": int(self.metadata["object_indices"][idx]),
                "view_index": int(self.metadata["view_indices"][idx])}


@dataclass
class ObjectViews:
    """All views of one object: what a per-object test-time procedure needs."""

    object_index: int
    """Index of the object in its split."""
    name: str
    """Folder name of the object."""
    cameras: Cameras
    """Its cameras, ``[V]``."""
    images: Tensor
    """Its images, float in [0, 1], ``[V, H, W, 3]``."""
    image_indices: Tensor
    """Dataset index of each view, ``[V]``."""
    input_views: List[int]
    """Views given as input (positions in ``images``); empty when not asked for."""

    @property
    def scored_views(self) -> List[int]:
        """Every view that is not an input view."""
        return [v for v in range(self.images.shape[0]) if v not in self.input_views]


@dataclass
class MultiObjectDataManagerConfig(DataManagerConfig):
    """Many objects with their views, all images in memory (see :mod:`ns_diffusion_methods.data.multi_object`)."""

    _target: Type = field(default_factory=lambda: MultiObjectDataManager)
    dataparser: AnnotatedDataParserUnion = field(default_factory=SRNDataParserConfig)
    """Dataparser of the multi-object dataset (``srn-data``)."""
    mode: Literal["rays", "images"] = "rays"
    """What ``next_train`` returns: ``rays`` = B objects x R random rays over all their views (SSDNeRF);
    ``images`` = B random whole images with their cameras (RenderDiffusion)."""
    objects_per_batch: int = 16
    """B in ``rays`` mode: objects per training batch (SSDNeRF: 16)."""
    rays_per_object: int = 4096
    """R in ``rays`` mode: random rays per object per batch (SSDNeRF: 4096)."""
    images_per_batch: int = 8
    """B in ``images`` mode: whole images per training batch."""
    eval_rays_per_batch: int = 4096
    """Rays of one held-out object returned by ``next_eval``."""
    seed: int = 0
    """Seed of the batch order and of the ray sampling."""


class MultiObjectDataManager(DataManager):
    """Datamanager over many objects; see the module docstring.

    Attributes:
        train_images: ``uint8 [N, H, W, 3]`` training images (CPU).
        object_of_image: ``[N]`` the object each training image shows.
        views_of_object: per training object, the dataset indices of its views.
    """

    config: MultiObjectDataManagerConfig
    train_dataset: InMemoryImageDataset
    eval_dataset: Optional[InMemoryImageDataset]

    def __init__(self, config: MultiObjectDataManagerConfig, device: Union[torch.device, str] = "cpu",
                 test_mode: Literal["test", "val", "inference"] = "val", world_size: int = 1, local_rank: int = 0,
                 **kwargs):
        self.config = config
        self.device = device
        self.world_size = world_size
        self.local_rank = local_rank
        self.test_mode = test_mode
        self.includes_time = False
        if config.data is not None:
            config.dataparser.data = Path(config.data)
        self.dataparser_config = config.dataparser
        self.dataparser = self.dataparser_config.setup()
        self._check_batch_sizes()

        self.train_dataparser_outputs = self.dataparser.get_dataparser_outputs(split="train")
        self.train_dataset = InMemoryImageDataset(self.train_dataparser_outputs, self.dataparser.images("train"))
        self.eval_dataset = None
        if test_mode != "inference":
            eval_split = "test" if test_mode == "test" else "val"
            self.eval_dataparser_outputs = self.dataparser.get_dataparser_outputs(split=eval_split)
            self.eval_dataset = InMemoryImageDataset(self.eval_dataparser_outputs,
                                                     self.dataparser.images(eval_split, lazy=True))
        context = DistributedContext.current() if world_size > 1 else DistributedContext()
        self.object_shard = Shard(self.num_train_objects, context.rank, context.world_size) \
            if config.mode == "rays" else Shard(self.num_train_objects)
        """The training objects this process draws its batches from: in ``rays`` mode on several GPUs, every
        ``world_size``-th object starting at the rank (each rank trains its own objects); all of them otherwise."""
        self.generator = torch.Generator().manual_seed(config.seed + 1000 * context.rank)
        self._object_order: List[int] = []
        self._image_order: List[int] = []
        super().__init__()

    def _check_batch_sizes(self) -> None:
        for name in ("objects_per_batch", "rays_per_object", "images_per_batch", "eval_rays_per_batch"):
            value = getattr(self.config, name)
            if value < 1:
                flag = name.replace("_", "-")
                raise DataError(f"`{name}` must be >= 1, but is {value}. Set --pipeline.datamanager.{flag}.")

    # ------------------------------------------------------------------ structure
    @property
    def num_train_objects(self) -> int:
        """Number of training objects."""
        return int(self.train_dataparser_outputs.metadata["num_objects"])

    @property
    def num_eval_objects(self) -> int:
        """Number of held-out objects (0 when the eval split is not loaded)."""
        return 0 if self.eval_dataset is None else int(self.eval_dataset.metadata["num_objects"])

    @property
    def train_images(self) -> Tensor:
        return self.train_dataset.images

    @property
    def object_of_image(self) -> Tensor:
        return self.train_dataset.metadata["object_indices"]

    @cached_property
    def views_of_object(self) -> List[Tensor]:
        return _views_of_objects(self.train_dataset)

    @cached_property
    def eval_views_of_object(self) -> List[Tensor]:
        assert self.eval_dataset is not None, "the held-out split is not loaded (test_mode='inference')"
        return _views_of_objects(self.eval_dataset)

    @cached_property
    def _train_cameras(self) -> Cameras:
        return self.train_dataset.cameras.to(self.device)

    @cached_property
    def _eval_cameras(self) -> Cameras:
        assert self.eval_dataset is not None
        return self.eval_dataset.cameras.to(self.device)

    def _split(self, split: Literal["train", "eval"]) -> Tuple[InMemoryImageDataset, Cameras, List[Tensor]]:
        if split == "train":
            return self.train_dataset, self._train_cameras, self.views_of_object
        return self.eval_dataset, self._eval_cameras, self.eval_views_of_object  # type: ignore[return-value]

    # ------------------------------------------------------------------ nerfstudio API
    def setup_train(self):
        """Nothing to set up: every image is already in memory."""

    def setup_eval(self):
        """Nothing to set up: every image is already in memory."""

    def get_datapath(self) -> Path:
        return Path(self.dataparser_config.data)

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        return {}

    def get_train_rays_per_batch(self) -> int:
        if self.config.mode == "rays":
            return min(self.config.objects_per_batch, self.object_shard.num_local) * self.config.rays_per_object
        height, width = self.train_images.shape[1:3]
        return self.config.images_per_batch * height * width

    def get_eval_rays_per_batch(self) -> int:
        return self.config.eval_rays_per_batch

    def next_train(self, step: int) -> Tuple[Union[RayBundle, Cameras], Dict]:
        """A training batch: rays of B objects (``mode="rays"``) or B whole images (``mode="images"``).

        ``rays``: ``(RayBundle [B*R], batch)``, where ``batch`` holds ``image`` (``[B*R, 3]`` target colours),
        ``object_indices`` (``[B]``), ``rays_per_object`` (R), ``num_views`` (``[B]``, views of each object) and
        ``indices`` (``[B*R, 3]`` image, row, column). Ray ``b*R + r`` belongs to object ``object_indices[b]``.

        ``images``: ``(Cameras [B], batch)`` with ``image`` (``[B, H, W, 3]``), ``object_indices`` and
        ``image_indices`` (``[B]``).
        """
        self.train_count += 1
        if self.config.mode == "rays":
            objects = self.next_objects()
            return self.sample_rays(objects, self.config.rays_per_object)
        indices = self._take(self._image_order, len(self.train_dataset), self.config.images_per_batch)
        cameras = self._train_cameras[indices]
        batch = {
            "image": self.train_images[indices].to(self.device).float() / 255.0,
            "object_indices": self.object_of_image[indices].to(self.device),
            "image_indices": indices.to(self.device),
        }
        return cameras, batch

    def next_eval(self, step: int) -> Tuple[RayBundle, Dict]:
        """Random rays of one random held-out object (all its views), same batch layout as ``next_train``."""
        self.eval_count += 1
        obj = torch.randint(self.num_eval_objects, (1,), generator=self.generator)
        return self.sample_rays(obj, self.config.eval_rays_per_batch, split="eval")

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        """One random held-out image: ``(Cameras [1], batch)`` with ``image``, ``image_idx``, ``object_index``."""
        assert self.eval_dataset is not None
        idx = int(torch.randint(len(self.eval_dataset), (1,), generator=self.generator))
        return self._eval_item(idx)

    @property
    def fixed_indices_eval_dataloader(self) -> "EvalImages":
        """Every held-out image as ``(Cameras [1], batch)``, like nerfstudio's full-image datamanager (lazy)."""
        return EvalImages(self)

    def _eval_item(self, idx: int) -> Tuple[Cameras, Dict]:
        assert self.eval_dataset is not None
        data = self.eval_dataset[idx]
        data["image"] = data["image"].to(self.device)
        return self._eval_cameras[idx : idx + 1], data

    # ------------------------------------------------------------------ sampling
    def next_objects(self) -> Tensor:
        """The next B training objects (a shuffled pass over all objects of :attr:`object_shard`, then the next
        pass); global object indices."""
        owned = self.object_shard.items
        count = min(self.config.objects_per_batch, len(owned))
        return owned[self._take(self._object_order, len(owned), count)]

    def _take(self, order: List[int], total: int, count: int) -> Tensor:
        """Pop ``count`` distinct indices from a shuffled epoch order, refilling it when it runs out.

        An index drawn twice across an epoch boundary is put back for the next batch.
        """
        count = min(count, total)
        taken: List[int] = []
        skipped: List[int] = []
        while len(taken) < count:
            if not order:
                order.extend(torch.randperm(total, generator=self.generator).tolist())
            candidate = order.pop()
            (skipped if candidate in taken else taken).append(candidate)
        order.extend(skipped)
        return torch.tensor(taken, dtype=torch.long)

    def sample_rays(self, object_indices: Tensor, rays_per_object: int,
                    split: Literal["train", "eval"] = "train",
                    views: Optional[List[List[int]]] = None) -> Tuple[RayBundle, Dict]:
        """R random rays per object, drawn uniformly over the pixels of its views.

        Args:
            object_indices: ``[B]`` objects of ``split``.
            rays_per_object: R.
            split: ``train`` or ``eval`` (held-out objects).
            views: per object, the views (positions among its views) to draw from; default all of them (training).
                Test-time procedures pass the input views.

        Returns:
            ``(RayBundle [B*R], batch)`` as described in :meth:`next_train`.
        """
        dataset, cameras, views_of_object = self._split(split)
        object_indices = torch.as_tensor(object_indices, dtype=torch.long).reshape(-1).cpu()
        height, width = dataset.images.shape[1:3]
        image_ids, num_views = [], []
        for b, obj in enumerate(object_indices.tolist()):
            candidates = views_of_object[obj]
            if views is not None:
                candidates = candidates[torch.as_tensor(views[b], dtype=torch.long)]
            pick = torch.randint(len(candidates), (rays_per_object,), generator=self.generator)
            image_ids.append(candidates[pick])
            num_views.append(len(candidates))
        image_ids_t = torch.cat(image_ids)
        rows = torch.randint(height, (image_ids_t.numel(),), generator=self.generator)
        cols = torch.randint(width, (image_ids_t.numel(),), generator=self.generator)
        indices = torch.stack([image_ids_t, rows, cols], dim=-1)
        ray_bundle = rays_for_pixels(cameras, indices.to(self.device))
        batch = {
            "image": dataset.images[image_ids_t, rows, cols].to(self.device).float() / 255.0,
            "indices": indices,
            "object_indices": object_indices.to(self.device),
            "rays_per_object": rays_per_object,
            "num_views": torch.tensor(num_views, dtype=torch.float32, device=self.device),
        }
        return ray_bundle, batch

    # ------------------------------------------------------------------ held-out objects
    def eval_input_views(self, num_inputs: int) -> List[List[int]]:
        """Input views of every held-out object for the ``num_inputs``-view setting (positions among its views)."""
        assert self.eval_dataset is not None
        table = self.eval_dataset.metadata.get("input_views", {})
        if num_inputs in table:
            return [list(v) for v in table[num_inputs]]
        from ns_diffusion_methods.data.srn_dataparser import resolve_input_views

        return [resolve_input_views((), len(views), num_inputs) for views in self.eval_views_of_object]

    def eval_object(self, object_index: int, num_inputs: int = 0) -> ObjectViews:
        """All views of held-out object ``object_index`` with the input views of the ``num_inputs``-view setting."""
        assert self.eval_dataset is not None
        image_indices = self.eval_views_of_object[object_index]
        inputs = self.eval_input_views(num_inputs)[object_index] if num_inputs > 0 else []
        return ObjectViews(
            object_index=object_index,
            name=self.eval_dataset.metadata["object_names"][object_index],
            cameras=self._eval_cameras[image_indices.to(self._eval_cameras.device)],
            images=self.eval_dataset.images[image_indices].to(self.device).float() / 255.0,
            image_indices=image_indices,
            input_views=inputs,
        )

    def train_object(self, object_index: int) -> ObjectViews:
        """All views of training object ``object_index`` (no input views)."""
        image_indices = self.views_of_object[object_index]
        return ObjectViews(
            object_index=object_index,
            name=self.train_dataset.metadata["object_names"][object_index],
            cameras=self._train_cameras[image_indices.to(self._train_cameras.device)],
            images=self.train_images[image_indices].to(self.device).float() / 255.0,
            image_indices=image_indices,
            input_views=[],
        )


class EvalImages(Sequence):
    """The held-out images of a :class:`MultiObjectDataManager` as ``(Cameras [1], batch)`` items, built on access."""

    def __init__(self, datamanager: MultiObjectDataManager):
        self.datamanager = datamanager

    def __len__(self) -> int:
        return 0 if self.datamanager.eval_dataset is None else len(self.datamanager.eval_dataset)

    def __getitem__(self, idx):  # type: ignore[override]
        if isinstance(idx, slice):
            return [self[i] for i in range(*idx.indices(len(self)))]
        if not -len(self) <= idx < len(self):
            raise IndexError(idx)
        return self.datamanager._eval_item(idx % len(self))


def _views_of_objects(dataset: InputDataset) -> List[Tensor]:
    object_indices = dataset.metadata["object_indices"]
    return [torch.nonzero(object_indices == obj).flatten() for obj in range(int(dataset.metadata["num_objects"]))]


def rays_for_pixels(cameras: Cameras, indices: Tensor) -> RayBundle:
    """Rays through pixel centres: ``indices [N, 3]`` = (camera, row, column) -> ``RayBundle [N]``."""
    coords = indices[:, 1:].to(torch.float32) + 0.5  # pixel centres, (y, x)
    with warnings.catch_warnings():  # nerfstudio 1.1.5 indexes with a list (a torch deprecation warning per call)
        warnings.filterwarnings("ignore", message="Using a non-tuple sequence", category=UserWarning)
        return cameras.generate_rays(camera_indices=indices[:, :1], coords=coords)
