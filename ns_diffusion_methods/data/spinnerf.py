"""``spinnerf-data``: the SPIn-NeRF object-removal benchmark layout (Mirzaei et al., CVPR 2023).

Layout of one scene of ``spinnerf-dataset.zip`` (as published with SPIn-NeRF):

.. code-block:: text

    <scene>/
      images/              full-resolution images (sorted order matters)
      images_4/            the same images downscaled x4 (PNG)
        label/             object masks of the TRAIN views, <image stem>.png, 1 (or 255) = object
        test_label/        masks of where the object was, for the TEST views (masked metrics)
      poses_bounds.npy     LLFF poses [N, 17] in sorted image order

Conventions implemented here, each configurable:

- **split**: the first ``num_test_views`` (40) images in sorted order are the test views, photographed with the
  object physically removed; the rest (60) are the training views, which show the object (SPIn-NeRF ``N_gt = 40``).
  nerfstudio's ``val`` split (evaluation during training) is the test split.
- **masks**: label values are normalised by their maximum, 1 = object (nerfstudio's validity masks are the opposite;
  object masks are kept separate, see :mod:`ns_diffusion_methods.data.masks`). Training masks are dilated with a 5x5
  kernel, 5 iterations, as SPIn-NeRF does by default "to ensure that all of the object is masked, and that the effects
  of the shadow ... is reduced"; test masks are not dilated unless asked.
- **poses**: ``poses_bounds.npy`` rows are LLFF ``[3, 5]`` matrices with columns (down, right, back, translation,
  (h, w, focal)) at full resolution; they become nerfstudio/OpenGL camera-to-world matrices (right, up, back) and the
  focal length is scaled to the loaded images. The principal point is the image centre (LLFF's model). Poses are then
  oriented, centred and scaled like nerfstudio-data.

Training masks are validated before training (every training image has one, of its size, neither empty nor full);
problems are reported with the file names.

Import-light (registered through :mod:`ns_diffusion_methods.data.specs`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox

from ns_diffusion_methods.data.checks import check_image_files
from ns_diffusion_methods.data.images import IMAGE_SUFFIXES, image_size
from ns_diffusion_methods.data.masks import validate_object_masks
from ns_diffusion_methods.data.object_mask_data import OBJECT_MASK_DILATION, OBJECT_MASK_FILENAMES
from ns_diffusion_methods.errors import DataError, install_excepthook


@dataclass
class SpinNerfDataParserConfig(DataParserConfig):
    """SPIn-NeRF scene: images_N/ with label/ and test_label/ object masks, poses_bounds.npy, first 40 = test."""

    _target: Type = field(default_factory=lambda: SpinNerf)
    data: Path = Path()
    """The scene folder (holding images_4/ and poses_bounds.npy)."""
    downscale_factor: int = 4
    """Which image folder to use: images_<factor> (1 = images/). SPIn-NeRF and MALD-NeRF use 4."""
    num_test_views: int = 40
    """The first this-many images (sorted by name) are the object-free test views (SPIn-NeRF N_gt = 40)."""
    label_folder: str = "label"
    """Folder of the training views' object masks, inside the image folder."""
    test_label_folder: str = "test_label"
    """Folder of the test views' object-location masks, inside the image folder (optional: masked metrics)."""
    mask_dilation: Tuple[int, int] = (5, 5)
    """Dilation of the training masks: (square kernel size, iterations). SPIn-NeRF's default is 5x5, 5 iterations;
    (0, 0) turns it off."""
    dilate_test_masks: bool = False
    """Also dilate the test masks used by the masked metrics."""
    orientation_method: Literal["pca", "up", "vertical", "none"] = "up"
    """How to orient the poses (as nerfstudio-data)."""
    center_method: Literal["poses", "focus", "none"] = "poses"
    """How to centre the poses (as nerfstudio-data)."""
    auto_scale_poses: bool = True
    """Scale the poses to fit in [-1, 1] (as nerfstudio-data)."""
    scale_factor: float = 1.0
    """Extra scale applied to the camera positions."""
    scene_scale: float = 1.0
    """Half side of the scene box."""


def _image_files(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _label_for(image: Path, folder: Path) -> Optional[Path]:
    """The mask of ``image`` in ``folder``: same stem, PNG preferred (SPIn-NeRF writes <stem>.png)."""
    for suffix in (".png", ".PNG", ".jpg", ".jpeg", image.suffix):
        candidate = folder / f"{image.stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def llff_to_nerfstudio(poses_bounds: np.ndarray, num_images: int, source: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Camera-to-world matrices ``[N, 4, 4]`` (OpenGL: right, up, back) and ``(h, w, focal)`` ``[N, 3]``.

    ``poses_bounds`` is LLFF's ``[N, 17]`` array: a row-major ``[3, 5]`` matrix with columns (down, right, back,
    position, hwf), then the near and far bounds. Extra rows beyond ``num_images`` are dropped, as SPIn-NeRF's
    loader does; fewer rows than images is an error.
    """
    if poses_bounds.ndim != 2 or poses_bounds.shape[1] != 17:
        raise DataError(f"{source} must be an [N, 17] LLFF poses_bounds array, but has shape {poses_bounds.shape}.")
    if poses_bounds.shape[0] < num_images:
        raise DataError(f"{source} has poses for {poses_bounds.shape[0]} images but the image folder has "
                        f"{num_images}: every image needs a pose (in sorted name order).")
    mats = poses_bounds[:num_images, :15].reshape(-1, 3, 5)
    down, right, back, position = mats[:, :, 0], mats[:, :, 1], mats[:, :, 2], mats[:, :, 3]
    c2w = np.tile(np.eye(4), (num_images, 1, 1))
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, -down, back, position
    return c2w, mats[:, :, 4]


class SpinNerf(DataParser):
    """Parses one SPIn-NeRF scene (see the module docstring)."""

    config: SpinNerfDataParserConfig

    def _image_folder(self) -> Path:
        name = "images" if self.config.downscale_factor == 1 else f"images_{self.config.downscale_factor}"
        return self.config.data / name

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        install_excepthook()  # a DataError below ends any ns-* command with an `Error:` line, stock methods too
        data = self.config.data
        folder = self._image_folder()
        if not folder.is_dir():
            raise DataError(f"{folder} does not exist: a SPIn-NeRF scene holds images_{self.config.downscale_factor}/ "
                            f"(set --downscale-factor to pick images_<N>/, 1 = images/).")
        images = _image_files(folder)
        num_test = self.config.num_test_views
        if len(images) <= num_test:
            raise DataError(f"{folder} has {len(images)} images, but the first {num_test} (sorted) are test views: no "
                            f"training view is left. Set --num-test-views.")
        poses_path = data / "poses_bounds.npy"
        if not poses_path.is_file():
            raise DataError(f"{poses_path} is missing: spinnerf-data reads the LLFF poses shipped with the SPIn-NeRF "
                            f"dataset (make one from a COLMAP model with LLFF's imgs2poses.py).")
        c2w, hwf = llff_to_nerfstudio(np.load(poses_path), len(images), poses_path)
        check_image_files(images, hint=f"Replace these files, or remove them from {folder} (together with their "
                                       f"rows of poses_bounds.npy and their masks).")

        # intrinsics: hwf is at full resolution; scale the focal length to the loaded image width
        sizes = [image_size(image) for image in images]  # (w, h)
        width = torch.tensor([w for w, _ in sizes], dtype=torch.int32)[:, None]
        height = torch.tensor([h for _, h in sizes], dtype=torch.int32)[:, None]
        focal = torch.from_numpy(hwf[:, 2] * np.array([w for w, _ in sizes]) / hwf[:, 1]).float()[:, None]

        poses, transform = camera_utils.auto_orient_and_center_poses(
            torch.from_numpy(c2w).float(), method=self.config.orientation_method,
            center_method=self.config.center_method)
        scale = 1.0
        if self.config.auto_scale_poses:
            scale /= float(torch.max(torch.abs(poses[:, :3, 3])))
        scale *= self.config.scale_factor
        poses[:, :3, 3] *= scale

        if split == "train":
            indices = list(range(num_test, len(images)))
            label_folder = folder / self.config.label_folder
            dilation = tuple(self.config.mask_dilation)
        elif split in ("val", "test"):
            indices = list(range(num_test))
            label_folder = folder / self.config.test_label_folder
            dilation = tuple(self.config.mask_dilation) if self.config.dilate_test_masks else (0, 0)
        else:
            raise ValueError(f"Unknown dataparser split {split!r} (train, val or test).")

        split_images = [images[i] for i in indices]
        masks: Optional[List[Optional[Path]]]
        if split == "train":
            if not label_folder.is_dir():
                raise DataError(f"{label_folder} does not exist: SPIn-NeRF keeps the training views' object masks "
                                f"there, one <image stem>.png per training image.")
            masks = [_label_for(image, label_folder) for image in split_images]
            validate_object_masks(list(zip(split_images, masks)), dilation, split="training",
                                  hint=f"Every training image (all but the first {num_test} in sorted order) needs "
                                       f"a mask {label_folder}/<image stem>.png of its size.")
        elif label_folder.is_dir():
            masks = [_label_for(image, label_folder) for image in split_images]
            validate_object_masks([(i, m) for i, m in zip(split_images, masks) if m is not None], dilation,
                                  split="test", allow_empty=True)
        else:
            masks = None  # no test masks: masked metrics are left out

        idx = torch.tensor(indices, dtype=torch.long)
        cameras = Cameras(
            camera_to_worlds=poses[idx, :3, :4],
            fx=focal[idx], fy=focal[idx], cx=width[idx].float() / 2, cy=height[idx].float() / 2,
            width=width[idx], height=height[idx], camera_type=CameraType.PERSPECTIVE,
        )
        s = self.config.scene_scale
        return DataparserOutputs(
            image_filenames=split_images,
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32)),
            dataparser_scale=scale,
            dataparser_transform=transform,
            metadata={OBJECT_MASK_FILENAMES: masks, OBJECT_MASK_DILATION: tuple(int(v) for v in dilation)},
        )
