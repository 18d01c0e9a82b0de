"""Reader for the SRN multi-object layout: PixelNeRF's ShapeNet-SRN release, and ``ns-diffusion-synth objects``.

Layout (as in PixelNeRF's and SSDNeRF's ShapeNet-SRN downloads)::

    <root>/<split>/<object>/
        rgb/NNNNNN.png     RGB (or RGBA, composited on white) images
        pose/NNNNNN.txt    16 floats: row-major 4x4 camera-to-world, OpenCV convention (x right, y down, z forward)
        intrinsics.txt     "f cx cy 0" / "0 0 0" / "1" / "H W"

Split folders are found by name (:func:`find_split_folders`): ``train``, ``val``, ``test`` (``ns-diffusion-synth
objects``), ``<anything>_train`` etc. (PixelNeRF's ``srn_cars/cars_train``), and such a folder nested one level down
in a folder of the same split, where the object folders are (PixelNeRF's ``srn_chairs/chairs_train/chairs_2.0_train``).

Poses are returned in nerfstudio's OpenGL convention (:func:`opencv_to_opengl`). Intrinsics are returned as written;
the images must have the size ``intrinsics.txt`` declares. This module does not import nerfstudio.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from ns_diffusion_methods.data.images import IMAGE_SUFFIXES, read_image
from ns_diffusion_methods.errors import DataError

SPLIT_NAMES = ("train", "val", "test")
#: what a split folder may be called, for messages
SPLIT_FOLDER_NAMES = ("train, val, test, or <name>_train, <name>_val, <name>_test (e.g. cars_train), possibly nested "
                      "one level down (e.g. chairs_train/chairs_2.0_train)")


def opencv_to_opengl(c2w: np.ndarray) -> np.ndarray:
    """Camera-to-world from OpenCV (x right, y down, z forward) to OpenGL (x right, y up, z backward) axes.

    Negates rotation columns 1 and 2; works on ``[..., 3, 4]`` and ``[..., 4, 4]`` arrays (and is its own inverse).
    """
    out = np.array(c2w, copy=True)
    assert out.shape[-2:] in ((3, 4), (4, 4)), out.shape
    out[..., :3, 1:3] *= -1
    return out


@dataclass
class SRNObjectFiles:
    """One object of an SRN split without its pixels: its image files, poses and intrinsics (cheap to read for
    thousands of objects; the images are decoded by :meth:`read_view`/:meth:`read_images` when needed)."""

    name: str
    """Folder name of the object."""
    folder: Path
    """The object folder."""
    image_paths: List[Path]
    """Its RGB files, sorted by name, matching ``c2w``."""
    c2w: np.ndarray
    """float32 [V, 4, 4] camera-to-world poses, OpenGL convention."""
    fx: float
    """Focal length in pixels (SRN has one focal; fy == fx)."""
    fy: float
    """Focal length in pixels."""
    cx: float
    """Principal point x in pixels."""
    cy: float
    """Principal point y in pixels."""
    height: int
    """Image height in pixels (as ``intrinsics.txt`` declares)."""
    width: int
    """Image width in pixels."""
    view_names: List[str]
    """File stems of the views (``000000``, ...), matching ``image_paths`` and ``c2w``."""

    @property
    def num_views(self) -> int:
        return len(self.image_paths)

    def read_view(self, view: int) -> np.ndarray:
        """View ``view`` as ``uint8 [H, W, 3]`` RGB (RGBA composited on white).

        Raises:
            DataError: the file cannot be read, or its size differs from ``intrinsics.txt``.
        """
        image_path = self.image_paths[view]
        image = read_image(image_path, "RGB", alpha="white", hint="Replace or delete it (and its pose file).")
        if image.shape[:2] != (self.height, self.width):
            raise DataError(f"Image {image_path} is {image.shape[0]}x{image.shape[1]} (HxW) but "
                            f"{self.folder / 'intrinsics.txt'} declares {self.height}x{self.width}. Resize the images "
                            f"and rescale the intrinsics together.")
        return image

    def read_images(self) -> np.ndarray:
        """All views as ``uint8 [V, H, W, 3]``."""
        return np.stack([self.read_view(view) for view in range(self.num_views)])


@dataclass
class SRNObject(SRNObjectFiles):
    """One object of an SRN split with all its views decoded, in the order of their file names."""

    images: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0, 3), dtype=np.uint8))
    """uint8 [V, H, W, 3] RGB images (alpha composited on white)."""

    @property
    def num_views(self) -> int:
        return int(self.images.shape[0])


def _read_intrinsics(path: Path) -> tuple:
    """(f, cx, cy, height, width) from an SRN ``intrinsics.txt``."""
    if not path.is_file():
        raise DataError(f"Missing {path}. Every SRN object folder needs intrinsics.txt with 4 lines: "
                        f"'f cx cy 0' / '0 0 0' / '1' / 'H W'.")
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    try:
        f, cx, cy = (float(v) for v in lines[0][:3])
        height, width = (int(float(v)) for v in lines[3][:2])
    except (IndexError, ValueError) as error:
        raise DataError(f"Malformed {path} ({error}). It needs 4 lines: 'f cx cy 0' / '0 0 0' / '1' / 'H W', e.g. "
                        f"'131.25 64 64 0' / '0 0 0' / '1' / '128 128'.") from error
    if not (f > 0 and height > 0 and width > 0):
        raise DataError(f"{path}: focal, H and W must be positive, but got f={f}, H={height}, W={width}.")
    return f, cx, cy, height, width


def _read_pose(path: Path) -> np.ndarray:
    try:
        values = np.array([float(v) for v in path.read_text(encoding="utf-8").split()], dtype=np.float64)
    except ValueError as error:
        raise DataError(f"Malformed pose file {path} ({error}); it must hold 16 numbers (a row-major 4x4 "
                        f"camera-to-world matrix, OpenCV convention).") from error
    if values.size != 16 or not np.isfinite(values).all():
        raise DataError(f"Pose file {path} holds {values.size} values; it must hold 16 finite numbers (a row-major "
                        f"4x4 camera-to-world matrix, OpenCV convention).")
    return values.reshape(4, 4)


def read_srn_object_files(folder: Union[str, Path]) -> SRNObjectFiles:
    """Read one SRN object folder's poses and intrinsics and list its images, without decoding them.

    Raises:
        DataError: a missing folder or file, an image without a pose, or a malformed pose or intrinsics file; the
            message names the file.
    """
    folder = Path(folder)
    rgb_dir, pose_dir = folder / "rgb", folder / "pose"
    for needed in (rgb_dir, pose_dir):
        if not needed.is_dir():
            raise DataError(f"Missing folder {needed}. An SRN object folder holds rgb/, pose/ and intrinsics.txt.")
    f, cx, cy, height, width = _read_intrinsics(folder / "intrinsics.txt")
    image_paths = sorted(p for p in rgb_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not image_paths:
        raise DataError(f"No images in {rgb_dir} (expected rgb/NNNNNN.png).")
    poses = []
    for image_path in image_paths:
        pose_path = pose_dir / f"{image_path.stem}.txt"
        try:
            poses.append(_read_pose(pose_path))
        except (FileNotFoundError, IsADirectoryError):
            raise DataError(f"Image {image_path} has no pose: {pose_path} is missing. Add the pose or delete the "
                            f"image.") from None
    c2w = opencv_to_opengl(np.stack(poses)).astype(np.float32)
    return SRNObjectFiles(name=folder.name, folder=folder, image_paths=image_paths, c2w=c2w, fx=f, fy=f, cx=cx, cy=cy,
                          height=height, width=width, view_names=[p.stem for p in image_paths])


def read_srn_object(folder: Union[str, Path]) -> SRNObject:
    """Read one SRN object folder (``rgb/``, ``pose/``, ``intrinsics.txt``) with all its images decoded.

    Raises:
        DataError: a missing folder or file, an image without a pose, an unreadable image, a malformed pose or
            intrinsics file, or an image whose size differs from ``intrinsics.txt``; the message names the file.
    """
    files = read_srn_object_files(folder)
    return SRNObject(**{f.name: getattr(files, f.name) for f in fields(SRNObjectFiles)}, images=files.read_images())


def split_of_folder(name: str) -> Optional[str]:
    """The split a folder name stands for: ``train``/``val``/``test`` for those names and for ``<anything>_train``
    etc. (case-insensitive); None for any other name."""
    lower = name.lower()
    for split in SPLIT_NAMES:
        if lower == split or lower.endswith("_" + split):
            return split
    return None


def is_object_folder(folder: Path) -> bool:
    """Whether ``folder`` looks like one SRN object (it holds ``rgb/``, ``pose/`` or ``intrinsics.txt``)."""
    return (folder / "rgb").is_dir() or (folder / "pose").is_dir() or (folder / "intrinsics.txt").is_file()


def _subfolders(folder: Path) -> List[Path]:
    """Visible sub-folders, sorted by name (hidden ones such as ``.ipynb_checkpoints`` are not objects)."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: p.name)


def objects_folder(folder: Union[str, Path]) -> Path:
    """The folder that holds the object folders of split folder ``folder``.

    That is ``folder`` itself when it holds an object folder (or nothing). When it holds no object folder but exactly
    one sub-folder named like a split (PixelNeRF's ``chairs_train/chairs_2.0_train``), that sub-folder (followed
    further the same way).
    """
    folder = Path(folder)
    for _depth in range(4):
        children = _subfolders(folder)
        if not children or any(is_object_folder(child) for child in children):
            return folder
        nested = [child for child in children if split_of_folder(child.name) is not None]
        if len(nested) != 1:
            return folder
        folder = nested[0]
    return folder


def find_split_folders(root: Union[str, Path]) -> Dict[str, Path]:
    """The split folders of an SRN dataset root: ``{"train": ..., "test": ..., "val": ...}`` for those found.

    A sub-folder of ``root`` belongs to a split when its name is the split's name or ends with ``_<split>``
    (:func:`split_of_folder`); the folder returned is where its object folders are (:func:`objects_folder`), e.g.
    ``srn_chairs/chairs_train/chairs_2.0_train``. Other sub-folders are ignored.

    Raises:
        DataError: ``root`` is not a folder, or two of its folders name the same split.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"The SRN dataset root {root} does not exist or is not a folder. Point --data at the folder "
                        f"that holds the split folders ({SPLIT_FOLDER_NAMES}).")
    found: Dict[str, Path] = {}
    for child in _subfolders(root):
        split = split_of_folder(child.name)
        if split is None:
            continue
        if split in found:
            raise DataError(f"The SRN dataset root {root} has two {split} split folders, {found[split]} and {child}. "
                            f"Keep one, or name the one to use with `srn-data --train-split`/`--eval-split` (a path "
                            f"relative to the root).")
        found[split] = objects_folder(child)
    return found


def _object_folders(folder: Path, max_objects: int) -> List[Path]:
    if not folder.is_dir():
        raise DataError(f"The split folder {folder} does not exist. It must hold one folder per object "
                        f"(rgb/, pose/, intrinsics.txt).")
    folders = _subfolders(folder)
    if not folders:
        raise DataError(f"The split folder {folder} holds no object folders (expected <object>/rgb, pose, "
                        f"intrinsics.txt).")
    return folders[:max_objects] if max_objects > 0 else folders


#: fewer objects than this are read in this process: starting processes (about 2 s) costs more than they take
MIN_OBJECTS_FOR_PROCESSES = 64


def process_pool(workers: int):
    """A pool of ``workers`` processes for reading many objects (``spawn``: safe whatever the parent has started,
    threads or CUDA). Reading small PNG and pose files is mostly Python work that holds the GIL, so threads would not
    run it in parallel."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def list_srn_objects(folder: Union[str, Path], max_objects: int = -1, workers: int = 1) -> List[SRNObjectFiles]:
    """The objects of split folder ``folder`` without their pixels (sorted by name; the first ``max_objects`` when
    > 0), read by ``workers`` processes (:func:`process_pool`; 1: in this process).

    Raises:
        DataError: the folder is missing or holds no object folders, or any object is invalid (see
            :func:`read_srn_object_files`).
    """
    folders = _object_folders(Path(folder), max_objects)
    if workers <= 1 or len(folders) < MIN_OBJECTS_FOR_PROCESSES:
        return [read_srn_object_files(object_folder) for object_folder in folders]
    with process_pool(workers) as pool:
        return list(pool.map(read_srn_object_files, folders, chunksize=max(1, min(64, len(folders) // (4 * workers)))))


def read_srn_objects(folder: Union[str, Path], max_objects: int = -1) -> List[SRNObject]:
    """Read the object folders of ``folder`` with their images (sorted by name; the first ``max_objects`` of them when
    > 0).

    Raises:
        DataError: the folder is missing or holds no object folders, or any object is invalid (see
            :func:`read_srn_object`).
    """
    return [read_srn_object(object_folder) for object_folder in _object_folders(Path(folder), max_objects)]


def read_srn_split(root: Union[str, Path], split: str, max_objects: int = -1) -> List[SRNObject]:
    """Read every object of ``<root>/<split>/``, sorted by folder name.

    ``split`` may be a relative path (``chairs_train/chairs_2.0_train``); a split folder that holds only a nested
    split folder is followed into it (:func:`objects_folder`).

    Raises:
        DataError: the split folder is missing or empty, or any object is invalid (see :func:`read_srn_object`).
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        available = sorted(p.name for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []
        raise DataError(f"No split folder {split_dir}. The SRN root {root} has {available or 'no folders'}; "
                        f"expected <root>/{split}/<object>/rgb, pose, intrinsics.txt.")
    return read_srn_objects(objects_folder(split_dir), max_objects)
