"""``srn-data``: a dataparser for multi-object datasets in the SRN layout (ShapeNet-SRN cars/chairs, ABO tables, the
synthetic ``objects`` dataset).

Layout (one folder per object, see :mod:`ns_diffusion_methods.data.srn` for the reader)::

    <data>/<split>/<object>/rgb/NNNNNN.png        RGB, white background
    <data>/<split>/<object>/pose/NNNNNN.txt       4x4 camera-to-world, OpenCV convention (+z forward, -y up)
    <data>/<split>/<object>/intrinsics.txt        "f cx cy 0 / 0 0 0 / 1 / H W"

The split folders are found by name unless ``train_split``/``eval_split`` name them: ``train``/``test``/``val``
(``ns-diffusion-synth objects``), ``cars_train``/``cars_val``/``cars_test`` (PixelNeRF's ``srn_cars``), or such a
folder nested one level down (PixelNeRF's ``srn_chairs/chairs_train/chairs_2.0_train``); see
:func:`ns_diffusion_methods.data.srn.find_split_folders`.

What it produces, per split (``train`` reads the training objects, ``val`` and ``test`` the held-out objects: the
``test`` folder, or the ``val`` folder where there is no ``test`` folder):

- one nerfstudio camera per image, converted to nerfstudio's OpenGL convention (rotation columns 1 and 2 negated) and
  normalised like SSDNeRF's loader: translations divided by ``radius`` (0.5 for SRN data; 1 for the synthetic
  ``objects`` data, which is written in box units), so the objects fill [-1, 1]^3; optionally the images resized
  (``image_size``) with their intrinsics;
- a check, before any training, that the cameras lie outside that box and that what the images show lies inside it
  (:func:`content_reach`): otherwise a :class:`~ns_diffusion_methods.errors.DataError` says which object and which
  ``--radius`` would fit;
- ``metadata["object_indices"]`` (object of each image), ``metadata["view_indices"]`` (its view number inside the
  object), ``metadata["object_names"]``, ``metadata["num_objects"]``;
- for the held-out split, ``metadata["input_views"]``: for 1 and 2 input views, the views of each object that serve
  as input; every other view of the object is scored. The defaults follow the PixelNeRF/SSDNeRF protocol (view 64,
  and views 64 and 104) where an object has those views, and are spread evenly over the object's views otherwise.

The pixels are decoded after those checks (:meth:`SRNDataParser.images`), for the multi-object datamanager
(:mod:`ns_diffusion_methods.data.multi_object`): the training split into one ``uint8`` tensor,
the held-out split object by object when evaluation asks for it (:mod:`ns_diffusion_methods.data.object_images`).

This module is import-light (it is loaded while nerfstudio discovers dataparsers): it imports only nerfstudio's
dataparser, camera and scene-box modules and this package's reader.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox

from ns_diffusion_methods.data.object_images import LazyObjectImages, decode_object, load_object_images
from ns_diffusion_methods.errors import DataError, install_excepthook


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
    """Dataset root: the folder that holds the split folders (e.g. PixelNeRF's ``srn_cars`` or ``srn_chairs``)."""
    train_split: Optional[str] = None
    """Folder of the training objects, relative to the dataset root (used for nerfstudio's ``train`` split). None:
    found by name: ``train``, or ``<name>_train`` (``cars_train``), or such a folder nested one level down
    (``chairs_train/chairs_2.0_train``)."""
    eval_split: Optional[str] = None
    """Folder of the held-out objects, relative to the dataset root (used for nerfstudio's ``val`` and ``test``
    splits). None: found by name like ``train_split``: the ``test`` folder (``cars_test``), else the ``val`` folder."""
    radius: Optional[float] = None
    """Camera translations are divided by this, so the objects fill the [-1, 1]^3 scene box. None: SSDNeRF's 0.5 for
    SRN data, or 1.0 for datasets written by ``ns-diffusion-synth objects`` (their ``meta.json`` says so), which are
    already in box units (cameras at distance 2.6, like SRN cars after scaling). Loading stops with an error naming a
    radius that fits when the cameras end up inside the box or the images show content outside it."""
    image_size: int = -1
    """Resize the images so that their longer side has this many pixels (area averaging when shrinking, bilinear
    when enlarging) and scale the intrinsics (fx, fy, cx, cy) with them; -1 keeps the dataset's size (SRN: 128)."""
    center: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Subtracted from camera translations before scaling (the objects' centre in the dataset's units)."""
    scene_bound: float = 1.0
    """Half size of the scene box after normalisation (SSDNeRF: 1, i.e. [-1, 1]^3)."""
    max_objects: int = -1
    """Use only the first N objects of each split (sorted by name); -1 uses all."""
    check_objects: int = 8
    """How many objects of each split (evenly spaced) are checked, before training, to lie inside the scene box: the
    rays of their foreground pixels (those that differ from the colour of most image-border pixels) must pass through
    the box. 0 skips this check (the check that the cameras lie outside the box always runs)."""
    load_workers: int = 1
    """Processes that list the objects' files and decode the training images; 1: all in the main process (the
    fastest on 2 CPU cores: SRN cars' size in 47 s, against 52 s with 2 processes); -1: one per CPU core, at most 16
    (for machines with many cores). Small datasets (under 64 objects) are always read in the main process."""
    eval_cache_objects: int = 8
    """The held-out objects' images are decoded object by object when evaluation asks for them, and the last this
    many objects are kept (the training images are all decoded when training starts)."""
    input_views_1v: Tuple[int, ...] = (64,)
    """Input view of each held-out object in the 1-view setting (PixelNeRF/SSDNeRF protocol: view 64). Objects
    without that view use view 0."""
    input_views_2v: Tuple[int, ...] = (64, 104)
    """Input views in the 2-view setting (protocol: views 64 and 104). Objects without them use two opposite views
    (0 and V/2)."""


#: a foreground pixel differs from the background colour by more than this (0-255, any channel)
FOREGROUND_TOLERANCE = 16
#: content may reach this much beyond the box (relative), plus one pixel's footprint, before it counts as outside
REACH_MARGIN = 0.05
#: more than this fraction of an object's foreground pixels outside the box stops loading
OUTSIDE_FRACTION = 0.01


def background_colour(images: torch.Tensor, tolerance: int = FOREGROUND_TOLERANCE) -> Optional[torch.Tensor]:
    """The colour of most image-border pixels of ``images`` (``uint8 [V, H, W, 3]``), as ``int [3]``; None when no
    single colour (within ``tolerance``) covers at least half of the border (e.g. a textured backdrop)."""
    border = torch.cat([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], dim=1).reshape(-1, 3)
    colours, counts = torch.unique(border, dim=0, return_counts=True)
    mode = colours[counts.argmax()].to(torch.int32)
    close = (border.to(torch.int32) - mode).abs().amax(dim=-1) <= tolerance
    return mode if float(close.float().mean()) >= 0.5 else None


def ray_reach(origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    """For rays ``o + t d`` (t >= 0), the half size of the smallest origin-centred cube each one meets:
    ``min_t max_i |o_i + t d_i|`` (``[..., 3]`` -> ``[...]``). A ray meets the box [-b, b]^3 iff its reach <= b.

    The minimum of this convex piecewise-linear function of t lies at t = 0 or where two of the lines ``±(o_i +
    t d_i)`` cross, so those candidates are evaluated exactly.
    """
    o, d = origins.to(torch.float64), directions.to(torch.float64)
    candidates = [torch.zeros_like(o[..., 0])]
    with torch.no_grad():
        for i in range(3):
            candidates.append(-o[..., i] / d[..., i])
            for j in range(i + 1, 3):
                for sign in (1.0, -1.0):
                    candidates.append(-(o[..., i] - sign * o[..., j]) / (d[..., i] - sign * d[..., j]))
        t = torch.stack(candidates, dim=-1)  # [..., C]
        t = torch.where(torch.isfinite(t) & (t > 0), t, torch.zeros_like(t))
        points = o[..., None, :] + t[..., None] * d[..., None, :]  # [..., C, 3]
        return points.abs().amax(dim=-1).amin(dim=-1).to(origins.dtype)


@dataclass
class ContentReach:
    """How far the content of one object's images reaches, measured along the rays of its foreground pixels."""

    background: Optional[Tuple[int, int, int]]
    """The background colour found at the image borders; None when there is none (nothing was measured)."""
    num_foreground: int
    """Foreground pixels measured."""
    num_outside: int
    """Those whose rays pass outside the box (with the margin)."""
    reach: float
    """99th percentile of the foreground rays' reach (:func:`ray_reach`): the content extends at least this far
    (in box units, L-infinity) from the box centre; 0 when nothing was measured."""
    first_outside: Optional[int]
    """The view of the first such pixel."""


def content_reach(images: torch.Tensor, c2w: torch.Tensor, intrinsics: torch.Tensor, bound: float) -> ContentReach:
    """Measure whether what the images of one object show fits the box [-bound, bound]^3.

    A pixel is foreground when it differs from the background colour (:func:`background_colour`); whatever it shows
    lies on its ray, so the content reaches at least as far from the centre as the ray's closest approach
    (:func:`ray_reach`). That is a lower bound: content behind or in front of the box along a ray that crosses it is
    not detected, but a ray that misses the box certainly shows content outside it.

    Args:
        images: ``uint8 [V, H, W, 3]``.
        c2w: ``[V, 3 or 4, 4]`` OpenGL camera-to-world, already normalised (box units, box centred at the origin).
        intrinsics: ``[V, 4]`` fx, fy, cx, cy in pixels (pixel centres at half-integers).
        bound: half size of the box.
    """
    background = background_colour(images)
    if background is None:
        return ContentReach(None, 0, 0, 0.0, None)
    height, width = images.shape[1:3]
    rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float32) + 0.5,
                                torch.arange(width, dtype=torch.float32) + 0.5, indexing="ij")
    reaches, outside_views = [], []
    num_foreground = num_outside = 0
    for view in range(images.shape[0]):
        foreground = (images[view].to(torch.int32) - background).abs().amax(dim=-1) > FOREGROUND_TOLERANCE
        if not bool(foreground.any()):
            continue
        fx, fy, cx, cy = (float(v) for v in intrinsics[view])
        local = torch.stack([(cols[foreground] - cx) / fx, -(rows[foreground] - cy) / fy,
                             -torch.ones_like(cols[foreground])], dim=-1)
        rotation, origin = c2w[view, :3, :3].to(torch.float32), c2w[view, :3, 3].to(torch.float32)
        reach = ray_reach(origin.expand_as(local), local @ rotation.T)
        pixel = float(origin.norm()) / min(fx, fy)  # one pixel's footprint at the distance of the box centre
        outside = int((reach > bound * (1.0 + REACH_MARGIN) + pixel).sum())
        if outside:
            outside_views.append(view)
        num_foreground += int(foreground.sum())
        num_outside += outside
        reaches.append(reach)
    if not reaches:
        return ContentReach(tuple(int(v) for v in background), 0, 0, 0.0, None)
    all_reach = torch.cat(reaches)
    if all_reach.numel() > 1_000_000:  # quantile's limit; a strided subset keeps the estimate
        all_reach = all_reach[:: all_reach.numel() // 1_000_000 + 1]
    return ContentReach(background=tuple(int(v) for v in background), num_foreground=num_foreground,
                        num_outside=num_outside, reach=float(torch.quantile(all_reach, 0.99)),
                        first_outside=outside_views[0] if outside_views else None)


class SRNDataParser(DataParser):
    """Reads an SRN-layout split into nerfstudio cameras plus per-image object indices (see the module docstring)."""

    config: SRNDataParserConfig

    def __init__(self, config: SRNDataParserConfig):
        super().__init__(config=config)
        self._images: Dict[str, Union[torch.Tensor, LazyObjectImages]] = {}
        self._objects: Dict[str, Tuple[list, Tuple[int, int]]] = {}

    def split_folder(self, split: str) -> Path:
        """The folder whose object folders are read for nerfstudio split ``split`` (``train``, ``val``, ``test``).

        Raises:
            DataError: the folder named by ``train_split``/``eval_split`` does not exist, or no split folder of that
                kind is found; the message lists the folders the dataset root has.
        """
        from ns_diffusion_methods.data.srn import (
            SPLIT_FOLDER_NAMES,
            find_split_folders,
            is_object_folder,
            objects_folder,
        )

        root = Path(self.config.data)
        explicit = self.config.train_split if split == "train" else self.config.eval_split
        flag = "--train-split" if split == "train" else "--eval-split"
        if not root.is_dir():
            raise DataError(f"The SRN dataset root {root} does not exist or is not a folder. Point --data at the "
                            f"folder that holds the split folders ({SPLIT_FOLDER_NAMES}).")
        found = sorted(p.name for p in root.iterdir() if p.is_dir())
        if explicit is not None:
            folder = root / explicit
            if not folder.is_dir():
                raise DataError(f"SRN split folder {folder} does not exist (dataset root {root}, folders found: "
                                f"{found or 'none'}). Point --data at the folder that holds the split folders, or "
                                f"name an existing folder with `srn-data {flag}` (a path relative to the root).")
            return objects_folder(folder)
        splits = find_split_folders(root)
        wanted = ("train",) if split == "train" else ("test", "val")
        for name in wanted:
            if name in splits:
                return splits[name]
        if any(is_object_folder(p) for p in root.iterdir() if p.is_dir()):
            hint = (f"{root} itself holds object folders, so it is a split folder: point --data at the folder "
                    f"above it, which holds the train and test split folders.")
        else:
            hint = (f"Point --data at the folder that holds the split folders, or name the folder with "
                    f"`srn-data {flag}` (a path relative to the root).")
        raise DataError(f"No {' or '.join(wanted)} split folder in the SRN dataset root {root} (folders found: "
                        f"{found or 'none'}). Expected split folders named {SPLIT_FOLDER_NAMES}, each holding one "
                        f"folder per object (rgb/, pose/, intrinsics.txt). {hint}")

    def radius(self) -> float:
        """The normalisation radius: the configured one, else 1.0 for ``ns-diffusion-synth`` data, else 0.5."""
        return self._radius()[0]

    def _radius(self) -> Tuple[float, str]:
        """The radius and where it comes from (for messages)."""
        if self.config.radius is not None:
            if self.config.radius <= 0:
                raise DataError(f"`radius` must be > 0, but is {self.config.radius}. Set `srn-data --radius` (SRN "
                                f"data: 0.5).")
            return float(self.config.radius), "set with --radius"
        meta = Path(self.config.data) / "meta.json"
        if meta.is_file():
            try:
                generator = json.loads(meta.read_text(encoding="utf-8")).get("generator")
            except (ValueError, AttributeError):
                generator = None
            if generator == "ns-diffusion-synth":
                return 1.0, f"auto-detected: {meta} says the data was written by ns-diffusion-synth in box units"
        return 0.5, "auto-detected: the SRN default, as no meta.json of ns-diffusion-synth is there"

    def images(self, split: str, lazy: bool = False) -> Union[torch.Tensor, LazyObjectImages]:
        """The images of ``split`` (of the last :meth:`get_dataparser_outputs` call for it), ``uint8 [N, H, W, 3]``.

        Args:
            split: ``train``, ``val`` or ``test``.
            lazy: return a :class:`~ns_diffusion_methods.data.object_images.LazyObjectImages` that decodes objects
                when indexed (keeping ``eval_cache_objects`` of them) instead of decoding the whole split now with
                ``load_workers`` processes.
        """
        if split not in self._objects:
            self.get_dataparser_outputs(split)
        if split not in self._images or lazy != isinstance(self._images[split], LazyObjectImages):
            objects, size = self._objects[split]
            if lazy:
                self._images[split] = LazyObjectImages(objects, size, self.config.eval_cache_objects)
            else:
                self._images[split] = load_object_images(objects, size, self.config.load_workers,
                                                         description=f"Decoding the {split} images")
        return self._images[split]

    def _target_size(self, height: int, width: int) -> Tuple[int, int]:
        """(H, W) after ``image_size``."""
        size = self.config.image_size
        if size is None or size < 0:
            return height, width
        if size == 0:
            raise DataError("`image_size` must be a positive number of pixels, or -1 to keep the dataset's size. "
                            "Set `srn-data --image-size`.")
        scale = size / max(height, width)
        return max(1, int(round(height * scale))), max(1, int(round(width * scale)))

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        install_excepthook()  # a DataError below ends any ns-* command with an `Error:` line, stock methods too
        from ns_diffusion_methods.data.object_images import resolve_workers
        from ns_diffusion_methods.data.srn import list_srn_objects

        radius, radius_origin = self._radius()
        folder = self.split_folder(split)
        if self.config.load_workers != -1 and self.config.load_workers < 1:
            raise DataError(f"`load_workers` must be -1 (one per CPU core) or >= 1, but is {self.config.load_workers}."
                            f" Set `srn-data --load-workers`.")
        if self.config.eval_cache_objects < 1:
            raise DataError(f"`eval_cache_objects` must be >= 1, but is {self.config.eval_cache_objects}. Set "
                            f"`srn-data --eval-cache-objects`.")
        objects = list_srn_objects(folder, self.config.max_objects, resolve_workers(self.config.load_workers))

        c2ws, fxs, fys, cxs, cys, filenames = [], [], [], [], [], []
        object_indices, view_indices = [], []
        size = None
        for obj_idx, obj in enumerate(objects):
            height, width = self._target_size(obj.height, obj.width)
            if size is None:
                size = (height, width)
            elif (height, width) != size:
                raise DataError(f"Object {folder / obj.name} has {obj.height}x{obj.width} images but "
                                f"{folder / objects[0].name} has {objects[0].height}x{objects[0].width}. All objects "
                                f"of a dataset must share one resolution (or one aspect ratio with "
                                f"`srn-data --image-size`); resize the dataset.")
            num_views = obj.num_views
            sx, sy = width / obj.width, height / obj.height
            c2ws.append(torch.as_tensor(obj.c2w, dtype=torch.float32))
            for values, value in ((fxs, obj.fx * sx), (fys, obj.fy * sy), (cxs, obj.cx * sx), (cys, obj.cy * sy)):
                values.append(torch.full((num_views,), float(value), dtype=torch.float32))
            filenames += list(obj.image_paths)
            object_indices.append(torch.full((num_views,), obj_idx, dtype=torch.long))
            view_indices.append(torch.arange(num_views, dtype=torch.long))
        assert size is not None
        height, width = size

        c2w = torch.cat(c2ws)  # [N, 4, 4], OpenGL (the reader converts from SRN's OpenCV)
        center = torch.tensor(self.config.center, dtype=torch.float32)
        scale = 1.0 / radius
        c2w = c2w.clone()
        c2w[:, :3, 3] = (c2w[:, :3, 3] - center) * scale
        bound = self.config.scene_bound
        intrinsics = torch.stack([torch.cat(fxs), torch.cat(fys), torch.cat(cxs), torch.cat(cys)], dim=-1)
        self._check_cameras(c2w, filenames, folder, bound, radius, radius_origin)
        self._check_content(objects, size, c2ws, intrinsics, object_indices, filenames, folder, bound, radius,
                            radius_origin)
        cameras = Cameras(
            camera_to_worlds=c2w[:, :3, :4],
            fx=intrinsics[:, 0:1], fy=intrinsics[:, 1:2], cx=intrinsics[:, 2:3], cy=intrinsics[:, 3:4],
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
                k: [resolve_input_views(requested, obj.num_views, k) for obj in objects]
                for k, requested in ((1, self.config.input_views_1v), (2, self.config.input_views_2v))
                if all(obj.num_views > k for obj in objects)
            }
        self._objects[split] = (objects, size)
        self._images.pop(split, None)  # decoded by images() when asked for
        return DataparserOutputs(
            image_filenames=filenames,
            cameras=cameras,
            alpha_color=torch.ones(3),
            scene_box=SceneBox(aabb=torch.tensor([[-bound] * 3, [bound] * 3], dtype=torch.float32)),
            metadata=metadata,
            dataparser_transform=transform,
            dataparser_scale=scale,
        )

    def _normalisation(self, radius: float, radius_origin: str) -> str:
        return f"(translation - {tuple(self.config.center)}) / radius {radius:g} ({radius_origin})"

    def _check_cameras(self, c2w: torch.Tensor, filenames: List[Path], folder: Path, bound: float, radius: float,
                       radius_origin: str) -> None:
        """Stop when a camera lies inside the scene box (its rays would start inside the triplane)."""
        distance = c2w[:, :3, 3].abs().amax(dim=-1)  # L-infinity: inside the box iff <= bound
        inside = distance <= bound
        if not bool(inside.any()):
            return
        first = int(torch.nonzero(inside)[0])
        # every camera is outside the box for radii below this
        limit = radius * float(distance.min()) / bound
        raise DataError(f"After normalisation {self._normalisation(radius, radius_origin)}, {int(inside.sum())} "
                        f"cameras of {folder} lie inside the scene box [-{bound:g}, {bound:g}]^3 (first: "
                        f"{filenames[first]}). The objects, not the cameras, must fill the box: set a radius below "
                        f"{limit:.3g} with `ns-train METHOD --data {self.config.data} srn-data --radius R` (SRN data "
                        f"uses 0.5), and --center if the objects are not centred at the origin.")

    def _check_content(self, objects, size: Tuple[int, int], c2ws: List[torch.Tensor], intrinsics: torch.Tensor,
                       object_indices: List[torch.Tensor], filenames: List[Path], folder: Path, bound: float,
                       radius: float, radius_origin: str) -> None:
        """Stop when what the images of (a sample of) the objects show lies outside the scene box."""
        count = min(self.config.check_objects, len(objects))
        if count <= 0:
            return
        center = torch.tensor(self.config.center, dtype=torch.float32)
        picked = sorted({int(round(float(v))) for v in np.linspace(0, len(objects) - 1, count)})
        offsets = np.cumsum([0] + [len(v) for v in object_indices])
        for obj_idx in picked:
            c2w = c2ws[obj_idx].clone()
            c2w[:, :3, 3] = (c2w[:, :3, 3] - center) / radius
            start, stop = int(offsets[obj_idx]), int(offsets[obj_idx + 1])
            result = content_reach(decode_object(objects[obj_idx], size), c2w, intrinsics[start:stop], bound)
            if result.num_outside <= OUTSIDE_FRACTION * max(result.num_foreground, 1):
                continue
            assert result.first_outside is not None
            camera_distance = float(c2w[:, :3, 3].abs().amax(dim=-1).min())
            at_least = radius * result.reach / bound  # the content reaches at least this far in the data's units
            at_most = radius * camera_distance / bound  # the cameras stay outside the box below this
            if at_least < at_most:
                advice = (f"Set a radius of at least {at_least:.3g} (and below {at_most:.3g}, where the cameras "
                          f"enter the box) with `ns-train METHOD --data {self.config.data} srn-data --radius R` (SRN "
                          f"data uses 0.5; data written by ns-diffusion-synth, 1).")
            else:
                advice = (f"No radius fits both the content and the cameras ({camera_distance:.2f} box units from "
                          f"the centre): check the poses, and --center if the objects are not centred at the origin.")
            raise DataError(
                f"What the images of {folder / objects[obj_idx].name} show does not fit the scene box "
                f"[-{bound:g}, {bound:g}]^3 after normalisation {self._normalisation(radius, radius_origin)}: "
                f"{result.num_outside} of its {result.num_foreground} foreground pixels (pixels that differ from the "
                f"border colour {result.background}) look along rays that pass outside the box (first: "
                f"{filenames[start + result.first_outside]}); the content reaches at least {result.reach:.2f} box "
                f"units from the centre. The triplane covers only the box, so that content cannot be learned. "
                f"{advice} (`srn-data --check-objects 0` skips this check.)")


__all__ = ["ContentReach", "SRNDataParser", "SRNDataParserConfig", "content_reach", "ray_reach", "resolve_input_views"]
