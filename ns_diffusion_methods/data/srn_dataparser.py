"""``srn-data``: a dataparser for multi-object datasets in the SRN layout (ShapeNet-SRN cars/chairs, ABO tables, the
synthetic ``objects`` dataset).

Layout (one folder per object, see :mod:`ns_diffusion_methods.data.srn` for the reader)::

    <data>/<split>/<object>/rgb/NNNNNN.png        RGB, white background
    <data>/<split>/<object>/pose/NNNNNN.txt       4x4 camera-to-world, OpenCV convention (+z forward, -y up)
    <data>/<split>/<object>/intrinsics.txt        "f cx cy 0 / 0 0 0 / 1 / H W"

What it produces, per split (``train`` reads the training objects, ``val`` and ``test`` the held-out objects):

- one nerfstudio camera per image, converted to nerfstudio's OpenGL convention (rotation columns 1 and 2 negated) and
  normalised like SSDNeRF's loader: translations divided by ``radius`` (0.5 for SRN data; 1 for the synthetic
  ``objects`` data, which is written in box units), so the objects fill [-1, 1]^3;
- ``metadata["object_indices"]`` (object of each image), ``metadata["view_indices"]`` (its view number inside the
  object), ``metadata["object_names"]``, ``metadata["num_objects"]``;
- for the held-out split, ``metadata["input_views"]``: for 1 and 2 input views, the views of each object that serve
  as input; every other view of the object is scored. The defaults follow the PixelNeRF/SSDNeRF protocol (view 64,
  and views 64 and 104) where an object has those views, and are spread evenly over the object's views otherwise.

The images themselves are read once and kept as ``uint8`` (:meth:`SRNDataParser.images`), for the multi-object
datamanager (:mod:`ns_diffusion_methods.data.multi_object`).

This module is import-light (it is loaded while nerfstudio discovers dataparsers): it imports only nerfstudio's
dataparser, camera and scene-box modules and this package's reader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type

import json

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox

from ns_diffusion_methods.errors import DataError


def resolve_input_views(requested: Sequence[int], num_views: int, num_inputs: int) -> List[int]:
    """The input views of one held-out object.

    Args:
        requested: the protocol's view indices (e.g. SRN's ``(64,)`` or ``(64, 104)``); empty means "spread evenly".
        num_views: how many views the object has.
        num_inputs: how many input views the setting needs.

    Returns:
        ``requested`` when it names ``num_inputs`` distinct views that all exist; otherwise ``num_inputs`` views spread
        evenly over the object's views (``round(i * V / k)``, as SSDNeRF's multi-view settings do with ``linspace``).
    """
    if num_inputs < 1 or num_inputs >= num_views:
        raise DataError(f"An object with {num_views} views cannot be reconstructed from {num_inputs} input views and "
                        f"still have views to score. Use objects with more views or fewer input views.")
    requested = [int(v) for v in requested]
    if len(requested) == num_inputs and len(set(requested)) == num_inputs and all(0 <= v < num_views
                                                                                   for v in requested):
        return requested
    return sorted({int(round(i * num_views / num_inputs)) % num_views for i in range(num_inputs)})


@dataclass
class SRNDataParserConfig(DataParserConfig):
    """Multi-object data in the SRN layout (``<data>/<split>/<object>/{rgb,pose,intrinsics.txt}``)."""

    _target: Type = field(default_factory=lambda: SRNDataParser)
    data: Path = Path("data/srn_cars")
    """Dataset root: the folder that holds the split folders."""
    train_split: str = "train"
    """Folder of the training objects (used for nerfstudio's ``train`` split)."""
    eval_split: str = "test"
    """Folder of the held-out objects (used for nerfstudio's ``val`` and ``test`` splits)."""
    radius: Optional[float] = None
    """Camera translations are divided by this, so the objects fill the [-1, 1]^3 scene box. None: SSDNeRF's 0.5 for
    SRN data, or 1.0 for datasets written by ``ns-diffusion-synth objects`` (their ``meta.json`` says so), which are
    already in box units (cameras at distance 2.6, like SRN cars after scaling)."""
    center: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Subtracted from camera translations before scaling (the objects' centre in the dataset's units)."""
    scene_bound: float = 1.0
    """Half size of the scene box after normalisation (SSDNeRF: 1, i.e. [-1, 1]^3)."""
    max_objects: int = -1
    """Use only the first N objects of each split (sorted by name); -1 uses all."""
    input_views_1v: Tuple[int, ...] = (64,)
    """Input view of each held-out object in the 1-view setting (PixelNeRF/SSDNeRF protocol: view 64). Objects
    without that view use view 0."""
    input_views_2v: Tuple[int, ...] = (64, 104)
    """Input views in the 2-view setting (protocol: views 64 and 104). Objects without them use two opposite views
    (0 and V/2)."""


class SRNDataParser(DataParser):
    """Reads an SRN-layout split into nerfstudio cameras plus per-image object indices (see the module docstring)."""

    config: SRNDataParserConfig

    def __init__(self, config: SRNDataParserConfig):
        super().__init__(config=config)
        self._images: Dict[str, torch.Tensor] = {}

    def split_folder(self, split: str) -> Path:
        """The folder read for nerfstudio split ``split`` (``train``, ``val``, ``test``)."""
        name = self.config.train_split if split == "train" else self.config.eval_split
        return Path(self.config.data) / name

    def radius(self) -> float:
        """The normalisation radius: the configured one, else 1.0 for ``ns-diffusion-synth`` data, else 0.5."""
        if self.config.radius is not None:
            if self.config.radius <= 0:
                raise DataError(f"`radius` must be > 0, but is {self.config.radius}. Set --radius (SRN data: 0.5).")
            return float(self.config.radius)
        meta = Path(self.config.data) / "meta.json"
        if meta.is_file():
            try:
                generator = json.loads(meta.read_text(encoding="utf-8")).get("generator")
            except (ValueError, AttributeError):
                generator = None
            if generator == "ns-diffusion-synth":
                return 1.0
        return 0.5

    def images(self, split: str) -> torch.Tensor:
        """The images of ``split`` read by the last :meth:`get_dataparser_outputs` call: ``uint8 [N, H, W, 3]``."""
        if split not in self._images:
            self.get_dataparser_outputs(split)
        return self._images[split]

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        from ns_diffusion_methods.data.srn import read_srn_split

        root = Path(self.config.data)
        radius = self.radius()
        folder = self.split_folder(split)
        if not folder.is_dir():
            found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
            raise DataError(f"SRN split folder {folder} does not exist (dataset root {root}, split folders found: "
                            f"{found or 'none'}). Point --data at the folder that holds the split folders, or set "
                            f"--train-split/--eval-split.")
        objects = read_srn_split(root, folder.name)
        if self.config.max_objects > 0:
            objects = objects[: self.config.max_objects]
        if not objects:
            raise DataError(f"No objects found in {folder}: expected one folder per object holding rgb/, pose/ and "
                            f"intrinsics.txt.")

        height, width = objects[0].height, objects[0].width
        images, c2ws, fxs, fys, cxs, cys, filenames = [], [], [], [], [], [], []
        object_indices, view_indices = [], []
        for obj_idx, obj in enumerate(objects):
            if (obj.height, obj.width) != (height, width):
                raise DataError(f"Object {folder / obj.name} has {obj.height}x{obj.width} images but "
                                f"{folder / objects[0].name} has {height}x{width}. All objects of a dataset must "
                                f"share one resolution; resize the dataset.")
            num_views = obj.images.shape[0]
            images.append(torch.as_tensor(obj.images[..., :3]))
            c2ws.append(torch.as_tensor(obj.c2w, dtype=torch.float32))
            for name in ("fx", "fy", "cx", "cy"):
                value = torch.as_tensor(getattr(obj, name), dtype=torch.float32).reshape(-1)
                {"fx": fxs, "fy": fys, "cx": cxs, "cy": cys}[name].append(value.expand(num_views))
            filenames += [_image_path(folder / obj.name, view) for view in obj.view_names]
            object_indices.append(torch.full((num_views,), obj_idx, dtype=torch.long))
            view_indices.append(torch.arange(num_views, dtype=torch.long))

        c2w = torch.cat(c2ws)  # [N, 4, 4], OpenGL (the reader converts from SRN's OpenCV)
        center = torch.tensor(self.config.center, dtype=torch.float32)
        scale = 1.0 / radius
        c2w = c2w.clone()
        c2w[:, :3, 3] = (c2w[:, :3, 3] - center) * scale
        bound = self.config.scene_bound
        inside = (c2w[:, :3, 3].abs() <= bound).all(dim=-1)
        if inside.any():
            first = int(torch.nonzero(inside)[0])
            raise DataError(f"After normalisation (translation - {tuple(self.config.center)}) / {radius}, "
                            f"{int(inside.sum())} cameras of {folder} lie inside the scene box [-{bound}, {bound}]^3 "
                            f"(first: {filenames[first]}). Set --radius so that the objects, not the cameras, fill "
                            f"the box (SRN data uses 0.5).")
        cameras = Cameras(
            camera_to_worlds=c2w[:, :3, :4],
            fx=torch.cat(fxs)[:, None], fy=torch.cat(fys)[:, None],
            cx=torch.cat(cxs)[:, None], cy=torch.cat(cys)[:, None],
            width=width, height=height, camera_type=CameraType.PERSPECTIVE,
        )
        transform = torch.eye(4)[:3, :]
        transform[:, 3] = -center
        metadata = {
            "object_indices": torch.cat(object_indices),
            "view_indices": torch.cat(view_indices),
            "object_names": [obj.name for obj in objects],
            "num_objects": len(objects),
        }
        if split != "train":
            metadata["input_views"] = {
                k: [resolve_input_views(requested, obj.images.shape[0], k) for obj in objects]
                for k, requested in ((1, self.config.input_views_1v), (2, self.config.input_views_2v))
                if all(obj.images.shape[0] > k for obj in objects)
            }
        self._images[split] = torch.cat(images)  # [N, H, W, 3] uint8
        return DataparserOutputs(
            image_filenames=filenames,
            cameras=cameras,
            alpha_color=torch.ones(3),
            scene_box=SceneBox(aabb=torch.tensor([[-bound] * 3, [bound] * 3], dtype=torch.float32)),
            metadata=metadata,
            dataparser_transform=transform,
            dataparser_scale=scale,
        )


def _image_path(object_folder: Path, view_name: str) -> Path:
    """The RGB file of view ``view_name`` (a file name or a stem) of an object."""
    candidate = object_folder / "rgb" / view_name
    if candidate.suffix.lower() in (".png", ".jpg", ".jpeg") and candidate.exists():
        return candidate
    for suffix in (".png", ".jpg", ".jpeg"):
        if candidate.with_name(candidate.name + suffix).exists():
            return candidate.with_name(candidate.name + suffix)
    return candidate


__all__ = ["SRNDataParser", "SRNDataParserConfig", "resolve_input_views"]
