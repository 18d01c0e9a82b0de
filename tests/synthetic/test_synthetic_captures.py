"""Synthetic captures: camera geometry, object masks, SPIn-NeRF layout, nerfstudio dataparser round trip, determinism.

The captures come from the session fixtures in ``tests/conftest.py`` (48x36 images, 12 training views, 8 evaluation
views). Geometry checks project a known 3D point with the *written* camera and look at the *written* image.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ns_diffusion_methods.synthetic import (
    Scene,
    load_dataparser_transform,
    render_camera,
    render_nerfstudio_cameras,
    write_object_removal,
    write_objects,
    write_sparse_views,
)
from ns_diffusion_methods.synthetic.render import to_image_uint8


def _load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def _transforms(capture: Path) -> dict:
    return json.loads((capture / "transforms.json").read_text())


def _project(point, c2w_opengl, meta) -> tuple:
    """Pixel (row, col) containing the projection of a world point, with nerfstudio's conventions."""
    c2w = np.asarray(c2w_opengl, dtype=np.float64)
    p_cam = c2w[:3, :3].T @ (np.asarray(point, dtype=np.float64) - c2w[:3, 3])  # OpenGL: x right, y up, z back
    assert p_cam[2] < 0, "the point is behind the camera"
    u = meta["cx"] + meta["fl_x"] * p_cam[0] / -p_cam[2]
    v = meta["cy"] - meta["fl_y"] * p_cam[1] / -p_cam[2]
    row, col = int(math.floor(v)), int(math.floor(u))
    assert 0 <= row < meta["h"] and 0 <= col < meta["w"], (row, col)
    return row, col


def _shade_factor(pixel: np.ndarray, albedo) -> tuple:
    """Least-squares k with pixel ≈ 255 k albedo, and the largest residual in 8-bit levels."""
    albedo = np.asarray(albedo) * 255.0
    k = float(pixel.astype(np.float64) @ albedo / (albedo @ albedo))
    return k, float(np.abs(pixel - k * albedo).max())


def _check_known_point(capture: Path, index: int, expect_visible_split: set):
    """Project a known point of primitive ``index`` into every frame; check the written pixel shows the object.

    The point is the centre of a box's or cylinder's top face (lit from above: its colour is known by hand), or a
    sphere's centre (whose projection lies well inside the sphere's outline; its top pole can sit on the outline).
    """
    meta = _transforms(capture)
    scene = Scene.from_json(capture / "scene.json")
    prim = scene.primitives[index]
    assert prim.texture.kind == "flat"
    light = scene.light
    point = prim.center if prim.kind == "sphere" else prim.top_center()
    top_lit = light.ambient + light.intensity * light.direction[2]  # the top's normal is +z
    expected = np.asarray(prim.texture.color) * top_lit * 255.0
    for frame in meta["frames"]:
        row, col = _project(point, frame["transform_matrix"], meta)
        pixel = _load(capture / frame["file_path"])[row, col]
        split = "train" if "_train_" in frame["file_path"] else "eval"
        k, residual = _shade_factor(pixel, prim.texture.color)
        shaded_object_colour = residual <= 3.0 and light.ambient - 0.01 <= k <= light.ambient + light.intensity + 0.01
        if split in expect_visible_split:
            # a shaded version of the object's own colour ...
            assert shaded_object_colour, (frame["file_path"], pixel)
            if prim.kind != "sphere":  # ... and on a flat lit top face exactly the hand-computed colour
                assert np.abs(pixel - expected).max() <= 1.0, (frame["file_path"], pixel, expected)
        else:
            assert not shaded_object_colour and residual > 8, (frame["file_path"], pixel)
        if "object_mask_path" in frame:
            assert _load(capture / frame["object_mask_path"])[row, col] == 255, frame["object_mask_path"]


def test_object_removal_geometry_known_point_lands_on_the_object(object_removal_capture):
    scene = Scene.from_json(object_removal_capture / "scene.json")
    assert scene.removable_index == 0
    # training views show the object at the projected point; evaluation views show what is behind it (no object),
    # and both have mask 255 there
    _check_known_point(object_removal_capture, 0, expect_visible_split={"train"})


def test_sparse_views_geometry_known_point_lands_on_the_object(sparse_views_capture):
    scene = Scene.from_json(sparse_views_capture / "scene.json")
    assert scene.removable_index is None
    _check_known_point(sparse_views_capture, 0, expect_visible_split={"train", "eval"})


def test_object_removal_transforms_json(object_removal_capture):
    meta = _transforms(object_removal_capture)
    record = json.loads((object_removal_capture / "capture.json").read_text())
    assert (meta["w"], meta["h"], meta["camera_model"]) == (48, 36, "OPENCV")
    names = [Path(f["file_path"]).name for f in meta["frames"]]
    assert names == [f"frame_train_{i:05d}.png" for i in range(12)] + [f"frame_eval_{i:05d}.png" for i in range(8)]
    assert record["num_views"] == 12 and record["num_eval_views"] == 8 and record["kind"] == "object-removal"
    for frame in meta["frames"]:
        assert "mask_path" not in frame  # nerfstudio would read it as "valid pixels"
        assert frame["object_mask_path"] == "masks/" + Path(frame["file_path"]).name
        c2w = np.asarray(frame["transform_matrix"])
        assert c2w.shape == (4, 4) and np.allclose(c2w[3], [0, 0, 0, 1])
        assert np.allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-12)
        assert np.linalg.det(c2w[:3, :3]) == pytest.approx(1.0)
    assert meta["train_filenames"] == [f["file_path"] for f in meta["frames"][:12]]
    assert meta["val_filenames"] == meta["test_filenames"] == [f["file_path"] for f in meta["frames"][12:]]


def test_object_masks_are_exactly_the_pixels_removal_changes(object_removal_capture):
    """Mask = 255 exactly where a render with the object differs from one without (the object and its shadow)."""
    meta = _transforms(object_removal_capture)
    scene = Scene.from_json(object_removal_capture / "scene.json")
    intrinsics = (meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"], meta["w"], meta["h"])
    for frame in meta["frames"]:
        c2w = torch.tensor(frame["transform_matrix"], dtype=torch.float64)
        with_object = render_camera(scene, c2w, *intrinsics)
        without = render_camera(scene, c2w, *intrinsics, include_removable=False)
        changed = (with_object["rgb"] != without["rgb"]).any(-1).numpy()
        mask = _load(object_removal_capture / frame["object_mask_path"])
        assert set(np.unique(mask)) <= {0, 255}
        assert np.array_equal(mask == 255, changed), frame["file_path"]
        image = _load(object_removal_capture / frame["file_path"])
        if "_train_" in frame["file_path"]:
            assert np.array_equal(image, to_image_uint8(with_object["rgb"]).numpy())
            assert 0.05 <= mask.mean() / 255 <= 0.25, (frame["file_path"], mask.mean() / 255)
            # the removable object itself is inside the mask, and the mask is more than the object (its shadow)
            assert (mask[with_object["hit_id"].numpy() == 0] == 255).all()
        else:
            # evaluation views: the ground truth without the object, which shows nowhere in them
            assert np.array_equal(image, to_image_uint8(without["rgb"]).numpy())
            assert (without["hit_id"] != 0).all()
            with_quantised = to_image_uint8(with_object["rgb"]).numpy()
            assert np.array_equal(image[mask == 0], with_quantised[mask == 0])
            assert (image[mask == 255] != with_quantised[mask == 255]).any(-1).mean() > 0.9


def test_nerfstudio_dataparser_cameras_render_the_written_images(object_removal_capture, tmp_path):
    """Stock nerfstudio loads the capture (auto-orient + auto-scale); inverting its transform reproduces the images."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=object_removal_capture, eval_mode="filename").setup()
    scene = Scene.from_json(object_removal_capture / "scene.json")
    for split, include_removable in (("train", True), ("test", False)):
        outputs = parser.get_dataparser_outputs(split=split)
        assert all(("_train_" in p.name) == (split == "train") for p in outputs.image_filenames)
        transform, scale = outputs.dataparser_transform, outputs.dataparser_scale
        assert not torch.allclose(transform, torch.eye(4)[:3]) and scale != pytest.approx(1.0)
        outputs.save_dataparser_transform(tmp_path / "dataparser_transforms.json")
        transform, scale = load_dataparser_transform(tmp_path)
        images = render_nerfstudio_cameras(scene, outputs.cameras, transform, scale,
                                           include_removable=include_removable)
        written = torch.stack([torch.from_numpy(_load(p).astype(np.float32) / 255) for p in outputs.image_filenames])
        mse = ((images - written) ** 2).mean(dim=(1, 2, 3))
        psnr = -10 * torch.log10(mse.clamp(min=1e-12))
        assert psnr.min() > 40.0, psnr


def test_spinnerf_layout(object_removal_capture):
    from nerfstudio.data.utils import colmap_parsing_utils as colmap

    meta = _transforms(object_removal_capture)
    root = object_removal_capture / "spinnerf"
    num_train, num_eval = 12, 8
    full = sorted((root / "images").glob("*.jpg"))
    small = sorted((root / "images_4").glob("*.png"))
    labels = sorted((root / "images_4" / "label").glob("*.png"))
    test_labels = sorted((root / "images_4" / "test_label").glob("*.png"))
    assert len(full) == len(small) == num_train + num_eval
    assert [p.stem for p in full] == [p.stem for p in small]
    assert [p.stem for p in test_labels] == [p.stem for p in small[:num_eval]]  # test views first in sorted order
    assert [p.stem for p in labels] == [p.stem for p in small[num_eval:]]
    assert Image.open(full[0]).size == (4 * 48, 4 * 36)
    frames = meta["frames"][num_train:] + meta["frames"][:num_train]  # eval frames first
    for frame, image_path, label_path in zip(frames, small, test_labels + labels):
        assert np.array_equal(_load(image_path), _load(object_removal_capture / frame["file_path"]))
        label = _load(label_path)
        assert set(np.unique(label)) <= {0, 1}  # SPIn-NeRF masks are 0/1
        assert np.array_equal(label * 255, _load(object_removal_capture / frame["object_mask_path"]))
    # the full-resolution JPG, averaged 4x4, is the capture image (up to JPEG loss)
    big = _load(full[num_eval]).astype(np.float64).reshape(36, 4, 48, 4, 3).mean(axis=(1, 3))
    assert np.abs(big - _load(small[num_eval])).mean() < 3.0

    # COLMAP model of the full-resolution images
    cameras = colmap.read_cameras_binary(root / "sparse" / "0" / "cameras.bin")
    images = colmap.read_images_binary(root / "sparse" / "0" / "images.bin")
    points = colmap.read_points3D_binary(root / "sparse" / "0" / "points3D.bin")
    camera = cameras[1]
    assert (camera.model, camera.width, camera.height) == ("PINHOLE", 192, 144)
    assert np.allclose(camera.params, [4 * meta["fl_x"], 4 * meta["fl_y"], 4 * meta["cx"], 4 * meta["cy"]])
    assert [images[i].name for i in sorted(images)] == [p.name for p in full]
    for i, frame in zip(sorted(images), frames):
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = colmap.qvec2rotmat(images[i].qvec), images[i].tvec
        c2w_cv = np.linalg.inv(w2c)
        c2w_gl = np.asarray(frame["transform_matrix"])
        assert np.allclose(c2w_cv[:3, 0], c2w_gl[:3, 0]) and np.allclose(c2w_cv[:3, 1:3], -c2w_gl[:3, 1:3])
        assert np.allclose(c2w_cv[:3, 3], c2w_gl[:3, 3])
    xyz = np.stack([p.xyz for p in points.values()])
    assert len(xyz) > 100 and xyz[:, 2].min() > -1e-6 and np.abs(xyz[:, :2]).max() <= 3.2 + 1e-6

    # LLFF poses_bounds.npy, read back the way LLFF's loader does
    poses_bounds = np.load(root / "poses_bounds.npy")
    assert poses_bounds.shape == (num_train + num_eval, 17)
    poses = poses_bounds[:, :15].reshape(-1, 3, 5)
    bounds = poses_bounds[:, 15:]
    removable_centre = np.asarray(Scene.from_json(object_removal_capture / "scene.json").primitives[0].center)
    for pose, bound, frame in zip(poses, bounds, frames):
        # LLFF [down, right, backwards] -> [right, up, backwards] (OpenGL)
        c2w = np.concatenate([pose[:, 1:2], -pose[:, 0:1], pose[:, 2:4]], axis=1)
        assert np.allclose(c2w, np.asarray(frame["transform_matrix"])[:3])
        assert np.allclose(pose[:, 4], [144, 192, 4 * meta["fl_x"]])
        depth = -(np.asarray(frame["transform_matrix"])[:3, :3].T @ (removable_centre - c2w[:, 3]))[2]
        assert 0 < bound[0] < depth < bound[1]


def _tree(folder: Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("writer, kwargs", [
    (write_object_removal, dict(image_size=32, num_views=3, num_eval_views=2)),
    (write_sparse_views, dict(image_size=32, num_views=3, num_eval_views=2)),
    (write_objects, dict(image_size=16, num_train=2, num_test=1, views=(3, 4))),
])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, writer, kwargs):
    first = _tree(writer(tmp_path / "a", seed=3, **kwargs))
    second = _tree(writer(tmp_path / "b", seed=3, **kwargs))
    other = _tree(writer(tmp_path / "c", seed=4, **kwargs))
    assert first.keys() == second.keys() and all(first[name] == second[name] for name in first)
    assert first.keys() == other.keys()
    images = [name for name in first if name.endswith(".png")]
    assert sum(first[name] != other[name] for name in images) > len(images) // 2


def test_objects_floor_background_has_backdrop_floor_and_shadows(tmp_path):
    root = write_objects(tmp_path / "floor", seed=1, image_size=32, num_train=3, num_test=1, views=(4, 4),
                         background="floor")
    meta = json.loads((root / "meta.json").read_text())
    assert meta["background"] == "floor"
    for name, entry in meta["objects"].items():
        scene = Scene(**entry["scene"])
        assert scene.floor is not None and scene.floor.radius == 0.9 and scene.floor.height == -0.35
        floor_albedo = np.asarray(scene.floor.texture.color)
        shadow = np.floor(floor_albedo * scene.light.ambient * 255 + 0.5)
        images = np.stack([_load(p) for p in sorted((root / entry["split"] / name / "rgb").glob("*.png"))])
        assert (images[:, 0, 0] == 128).all()  # grey backdrop in the corners
        # fully shadowed floor pixels exist (hard shadows cast by the object)
        assert (np.abs(images.astype(np.float64) - shadow).max(-1) <= 1).any(), name


def test_writers_refuse_foreign_folders_and_leave_no_partial_capture(tmp_path):
    from ns_diffusion_methods.errors import UserFacingError

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserFacingError, match="not a capture"):
        write_objects(foreign, image_size=16, num_train=1, num_test=1, views=(2, 2))
    assert (foreign / "notes.txt").read_text() == "mine"

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_objects(tmp_path / "killed", image_size=16, num_train=2, num_test=1, views=(2, 2), progress=interrupt)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign"]  # neither the capture nor a partial folder

    # a previous capture is replaced
    target = write_objects(tmp_path / "objects", seed=0, image_size=16, num_train=1, num_test=1, views=(2, 2))
    write_objects(target, seed=0, image_size=16, num_train=2, num_test=1, views=(2, 2))
    assert len(list((target / "train").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["foreign", "objects"]
