"""Captures in the layouts users have, written here independently of the package's own capture writers.

The package's synthetic captures (``ns_diffusion_methods.synthetic``) give consistent images, poses and object masks;
the functions below re-write one of them in the file layouts that users bring to ``ns-train``:

- :func:`write_colmap_capture`: a COLMAP reconstruction as COLMAP writes it (``images/*.jpg`` and the *binary* model
  ``sparse/0/{cameras,images,points3D}.bin``, OpenCV world-to-camera poses as quaternions), read with
  ``ns-train ... colmap --data DIR --colmap-path sparse/0``;
- :func:`write_blender_capture`: the NeRF-synthetic ("Blender") layout (``transforms_{train,val,test}.json`` with
  ``camera_angle_x``, ``./train/r_0``-style paths without extension, RGBA PNG), read with ``blender-data``;
- :func:`write_processed_capture`: what ``ns-process-data`` writes (``images/frame_00001.png`` numbered from 1 over all
  frames, ``images_2/``, ``images_4/``, an OPENCV camera with distortion fields, ``applied_transform``, no split lists),
  optionally with only the downscaled folders, JPEG or RGBA images, and object masks in a separate folder.

The binary COLMAP format follows COLMAP's ``src/colmap/scene/reconstruction_io.cc`` (little-endian; cameras: id, model
id, width, height, parameters; images: id, qvec (w, x, y, z), tvec, camera id, null-terminated name, 2D points;
points3D: id, xyz, rgb, error, track).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

#: COLMAP camera model ids
COLMAP_PINHOLE = 1
COLMAP_OPENCV = 4


def read_capture(source: Path) -> Tuple[dict, List[dict]]:
    """``transforms.json`` of a synthetic capture and its frames, training frames first."""
    meta = json.loads((source / "transforms.json").read_text())
    frames = sorted(meta["frames"], key=lambda f: ("eval" in f["file_path"], f["file_path"]))
    return meta, frames


def opengl_c2w_to_colmap(c2w: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """OpenGL camera-to-world [4, 4] -> COLMAP's world-to-camera (OpenCV axes) as (qvec [w, x, y, z], tvec [3])."""
    c2w_cv = np.array(c2w, dtype=np.float64)
    c2w_cv[:3, 1:3] *= -1
    w2c = np.linalg.inv(c2w_cv)
    return rotation_to_quaternion(w2c[:3, :3]), w2c[:3, 3]


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """Rotation matrix [3, 3] -> unit quaternion (w, x, y, z) with w >= 0."""
    r = rotation
    trace = np.trace(r)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (r[2, 1] - r[1, 2]) / s, (r[0, 2] - r[2, 0]) / s, (r[1, 0] - r[0, 1]) / s]
    elif r[0, 0] > r[1, 1] and r[0, 0] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[0, 0] - r[1, 1] - r[2, 2])
        q = [(r[2, 1] - r[1, 2]) / s, 0.25 * s, (r[0, 1] + r[1, 0]) / s, (r[0, 2] + r[2, 0]) / s]
    elif r[1, 1] > r[2, 2]:
        s = 2.0 * np.sqrt(1.0 + r[1, 1] - r[0, 0] - r[2, 2])
        q = [(r[0, 2] - r[2, 0]) / s, (r[0, 1] + r[1, 0]) / s, 0.25 * s, (r[1, 2] + r[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + r[2, 2] - r[0, 0] - r[1, 1])
        q = [(r[1, 0] - r[0, 1]) / s, (r[0, 2] + r[2, 0]) / s, (r[1, 2] + r[2, 1]) / s, 0.25 * s]
    q = np.asarray(q, dtype=np.float64)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def surface_points(source: Path, frames: Sequence[dict], meta: dict, per_view: int = 64, seed: int = 0
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """3D points on the scene's surfaces seen by ``frames`` (the pixel-centre depth of the capture's own scene) and
    their colours: ``xyz`` [N, 3] float64, ``rgb`` [N, 3] uint8. What a structure-from-motion run would find."""
    from ns_diffusion_methods.synthetic import Scene, render_camera

    scene = Scene.from_json(source / "scene.json")
    rng = np.random.default_rng(seed)
    width, height = int(meta["w"]), int(meta["h"])
    xyz, rgb = [], []
    for frame in frames:
        c2w = torch.tensor(frame["transform_matrix"], dtype=torch.float64)
        out = render_camera(scene, c2w, meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], width, height,
                            supersample=1)
        depth = out["depth"].double()
        rows = rng.integers(0, height, per_view)
        cols = rng.integers(0, width, per_view)
        keep = torch.isfinite(depth[rows, cols]).numpy()
        rows, cols = rows[keep], cols[keep]
        directions = np.stack([(cols + 0.5 - meta["cx"]) / meta["fl_x"], -(rows + 0.5 - meta["cy"]) / meta["fl_y"],
                               -np.ones(len(rows))], axis=-1)
        directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
        matrix = c2w.numpy()
        world = directions @ matrix[:3, :3].T
        xyz.append(matrix[:3, 3] + world * depth[rows, cols].numpy()[:, None])
        rgb.append((out["rgb"][rows, cols].numpy() * 255).round().astype(np.uint8))
    return np.concatenate(xyz), np.concatenate(rgb)


def _write_cameras_bin(path: Path, cameras: Dict[int, Tuple[int, int, int, Sequence[float]]]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(cameras)))
        for camera_id, (model_id, width, height, params) in cameras.items():
            f.write(struct.pack("<iiQQ", camera_id, model_id, width, height))
            f.write(struct.pack(f"<{len(params)}d", *params))


def _write_images_bin(path: Path, images: List[Tuple[int, np.ndarray, np.ndarray, int, str]]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(images)))
        for image_id, qvec, tvec, camera_id, name in images:
            f.write(struct.pack("<i", image_id))
            f.write(struct.pack("<4d", *qvec))
            f.write(struct.pack("<3d", *tvec))
            f.write(struct.pack("<i", camera_id))
            f.write(name.encode("utf-8") + b"\x00")
            f.write(struct.pack("<Q", 0))  # no 2D points


def _write_points3d_bin(path: Path, xyz: np.ndarray, rgb: np.ndarray, image_ids: Sequence[int]) -> None:
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(xyz)))
        for index, (point, colour) in enumerate(zip(xyz, rgb)):
            f.write(struct.pack("<Q", index + 1))
            f.write(struct.pack("<3d", *point))
            f.write(struct.pack("<3B", *colour))
            f.write(struct.pack("<d", 0.5))  # reprojection error
            track = [image_ids[index % len(image_ids)]]
            f.write(struct.pack("<Q", len(track)))
            for image_id in track:
                f.write(struct.pack("<ii", image_id, 0))


def write_colmap_capture(source: Path, output: Path, camera_model: int = COLMAP_OPENCV, quality: int = 95) -> Path:
    """A COLMAP binary reconstruction of the synthetic capture ``source``: ``output/images/<name>.jpg`` and
    ``output/sparse/0/*.bin``. Image names keep the source's ``train``/``eval`` words (for ``--eval-mode filename``).

    Returns:
        ``output``.
    """
    meta, frames = read_capture(source)
    (output / "images").mkdir(parents=True, exist_ok=True)
    sparse = output / "sparse" / "0"
    sparse.mkdir(parents=True, exist_ok=True)
    fx, fy, cx, cy = meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"]
    params = [fx, fy, cx, cy] if camera_model == COLMAP_PINHOLE else [fx, fy, cx, cy, 0.0, 0.0, 0.0, 0.0]
    _write_cameras_bin(sparse / "cameras.bin", {1: (camera_model, int(meta["w"]), int(meta["h"]), params)})
    images = []
    for index, frame in enumerate(frames):
        name = Path(frame["file_path"]).stem + ".jpg"
        Image.open(source / frame["file_path"]).convert("RGB").save(output / "images" / name, quality=quality)
        qvec, tvec = opengl_c2w_to_colmap(np.asarray(frame["transform_matrix"]))
        images.append((index + 1, qvec, tvec, 1, name))
    _write_images_bin(sparse / "images.bin", images)
    training = [f for f in frames if "eval" not in f["file_path"]]
    xyz, rgb = surface_points(source, training, meta)
    _write_points3d_bin(sparse / "points3D.bin", xyz, rgb, [image[0] for image in images])
    return output


def write_blender_capture(source: Path, output: Path) -> Path:
    """The NeRF-synthetic layout of the synthetic capture ``source``: training frames in ``train/``, its evaluation
    frames in ``val/`` and ``test/``, RGBA PNGs (opaque), ``camera_angle_x`` from the capture's focal length.

    The Blender layout has one square-pixel pinhole camera with the principal point at the centre, as the synthetic
    captures have.

    Returns:
        ``output``.
    """
    meta, frames = read_capture(source)
    assert abs(meta["fl_x"] - meta["fl_y"]) < 1e-9 and abs(meta["cx"] - meta["w"] / 2) < 1e-9
    camera_angle_x = 2.0 * float(np.arctan(0.5 * meta["w"] / meta["fl_x"]))
    splits = {"train": [f for f in frames if "eval" not in f["file_path"]],
              "val": [f for f in frames if "eval" in f["file_path"]]}
    splits["test"] = splits["val"]
    for split, split_frames in splits.items():
        (output / split).mkdir(parents=True, exist_ok=True)
        entries = []
        for index, frame in enumerate(split_frames):
            rgb = np.asarray(Image.open(source / frame["file_path"]).convert("RGB"))
            rgba = np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255, np.uint8)], axis=-1)
            Image.fromarray(rgba, "RGBA").save(output / split / f"r_{index}.png")
            entries.append({"file_path": f"./{split}/r_{index}", "rotation": 0.012566370614359171,
                            "transform_matrix": frame["transform_matrix"]})
        (output / f"transforms_{split}.json").write_text(
            json.dumps({"camera_angle_x": camera_angle_x, "frames": entries}, indent=4))
    return output


def write_processed_capture(
    source: Path,
    output: Path,
    *,
    frames_subset: str = "all",
    image_format: str = "png",
    rgba: bool = False,
    downscales: Sequence[int] = (2, 4),
    full_size: bool = True,
    mask_folder: Optional[str] = None,
    object_mask_entries: bool = False,
) -> Path:
    """What ``ns-process-data images`` writes for the synthetic capture ``source``.

    Args:
        frames_subset: ``all`` (training and evaluation frames) or ``train`` (only the views with the object).
        image_format: ``png`` or ``jpg``.
        rgba: write 4-channel images (alpha 255 outside a corner square that is transparent).
        downscales: the ``images_N`` folders written (PNG or JPEG like ``images``).
        full_size: write ``images/`` (False: only the downscaled folders, as some shared captures are).
        mask_folder: also write the object masks (0/255 PNG) under this folder, named ``frame_00001.png`` etc.
        object_mask_entries: name each mask in its frame's ``object_mask_path`` (needs ``mask_folder``).

    Returns:
        ``output``. Frames are numbered ``frame_00001`` upward in the order training frames, then evaluation frames.
    """
    meta, frames = read_capture(source)
    if frames_subset == "train":
        frames = [f for f in frames if "eval" not in f["file_path"]]
    folders = (["images"] if full_size else []) + [f"images_{n}" for n in downscales]
    for folder in folders:
        (output / folder).mkdir(parents=True, exist_ok=True)
    if mask_folder is not None:
        (output / mask_folder).mkdir(parents=True, exist_ok=True)
    entries = []
    for index, frame in enumerate(frames):
        stem = f"frame_{index + 1:05d}"
        name = f"{stem}.{image_format}"
        image = Image.open(source / frame["file_path"]).convert("RGB")
        if rgba:
            alpha = np.full(image.size[::-1], 255, np.uint8)
            alpha[: image.size[1] // 4, : image.size[0] // 4] = 0
            image = Image.fromarray(np.concatenate([np.asarray(image), alpha[..., None]], axis=-1), "RGBA")
        for folder in folders:
            factor = 1 if folder == "images" else int(folder.split("_")[1])
            scaled = image if factor == 1 else image.resize(
                (round(image.size[0] / factor), round(image.size[1] / factor)), Image.BICUBIC)
            if image_format == "jpg":
                scaled.convert("RGB").save(output / folder / name, quality=95)
            else:
                scaled.save(output / folder / name)
        entry = {"file_path": f"images/{name}", "transform_matrix": frame["transform_matrix"],
                 "colmap_im_id": index + 1}
        if mask_folder is not None and frame.get("object_mask_path"):
            shutil.copyfile(source / frame["object_mask_path"], output / mask_folder / f"{stem}.png")
            if object_mask_entries:
                entry["object_mask_path"] = f"{mask_folder}/{stem}.png"
        entries.append(entry)
    transforms = {
        "w": int(meta["w"]), "h": int(meta["h"]), "fl_x": meta["fl_x"], "fl_y": meta["fl_y"],
        "cx": meta["cx"], "cy": meta["cy"], "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
        "camera_model": "OPENCV", "frames": entries,
        "applied_transform": [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]],
    }
    (output / "transforms.json").write_text(json.dumps(transforms, indent=4))
    return output
