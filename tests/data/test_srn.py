"""The SRN reader: a round trip through ``write_objects``, pose conventions, and errors that name the file."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ns_diffusion_methods.data.srn import opencv_to_opengl, read_srn_object, read_srn_split
from ns_diffusion_methods.errors import DataError


def _project_opengl(point, c2w, f, cx, cy) -> tuple:
    p_cam = c2w[:3, :3].T @ (np.asarray(point, dtype=np.float64) - c2w[:3, 3])  # x right, y up, z back
    assert p_cam[2] < 0
    return int(math.floor(cy - f * p_cam[1] / -p_cam[2])), int(math.floor(cx + f * p_cam[0] / -p_cam[2]))


def test_opencv_to_opengl_flips_the_y_and_z_axes():
    c2w = np.arange(16, dtype=np.float64).reshape(4, 4)
    out = opencv_to_opengl(c2w)
    assert np.array_equal(out[:, 0], c2w[:, 0]) and np.array_equal(out[:, 3], c2w[:, 3])
    assert np.array_equal(out[:3, 1:3], -c2w[:3, 1:3]) and np.array_equal(out[3], c2w[3])
    assert np.array_equal(opencv_to_opengl(out), c2w)
    assert opencv_to_opengl(c2w[None, :3]).shape == (1, 3, 4)


def test_round_trip_through_write_objects(objects_dataset):
    meta = json.loads((objects_dataset / "meta.json").read_text())
    train = read_srn_split(objects_dataset, "train")
    test = read_srn_split(objects_dataset, "test")
    assert [obj.name for obj in train] == sorted(n for n, e in meta["objects"].items() if e["split"] == "train")
    assert [obj.name for obj in test] == sorted(n for n, e in meta["objects"].items() if e["split"] == "test")
    assert len(train) == 8 and len(test) == 2
    assert all(obj.num_views == 8 for obj in train) and all(obj.num_views == 12 for obj in test)
    for obj in train + test:
        assert obj.images.shape == (obj.num_views, 32, 32, 3) and obj.images.dtype == np.uint8
        assert obj.c2w.shape == (obj.num_views, 4, 4) and obj.c2w.dtype == np.float32
        assert (obj.fx, obj.fy, obj.cx, obj.cy, obj.height, obj.width) == (1.025 * 32, 1.025 * 32, 16.0, 16.0, 32, 32)
        assert obj.view_names == [f"{i:06d}" for i in range(obj.num_views)]
        c2w = obj.c2w.astype(np.float64)
        # cameras 2.6 from the origin, looking at it along their -z axis (OpenGL), +z up in the images
        assert np.allclose(np.linalg.norm(c2w[:, :3, 3], axis=-1), 2.6, atol=1e-5)
        assert np.allclose(-c2w[:, :3, 2], -c2w[:, :3, 3] / 2.6, atol=1e-5)
        assert (c2w[:, 2, 1] > 0).all()  # the camera's up axis points toward world +z
        entry = meta["objects"][obj.name]
        for primitive in entry["scene"]["primitives"]:
            for view in range(obj.num_views):
                row, col = _project_opengl(primitive["center"], c2w[view], obj.fx, obj.cx, obj.cy)
                pixel = obj.images[view, row, col].astype(int)
                assert (255 - pixel).max() > 40, (obj.name, view, pixel)  # an object pixel, not the white background
        # test objects: an evenly spaced azimuth ring starting at azimuth 0 (view k is the same for every object)
        if entry["split"] == "test":
            azimuths = np.arctan2(c2w[:, 1, 3], c2w[:, 0, 3]) % (2 * np.pi)
            assert np.allclose(azimuths, 2 * np.pi * np.arange(obj.num_views) / obj.num_views, atol=1e-5)
    # the images are the written PNGs, unchanged
    first = train[0]
    png = np.asarray(Image.open(objects_dataset / "train" / first.name / "rgb" / "000003.png"))
    assert np.array_equal(first.images[3], png)
    corners = np.concatenate([obj.images[:, 0, 0] for obj in train])
    assert (corners == 255).all()


def _copy_object(objects_dataset: Path, tmp_path: Path) -> Path:
    source = sorted((objects_dataset / "train").iterdir())[0]
    target = tmp_path / "split" / source.name
    shutil.copytree(source, target)
    return target


def test_rgba_images_are_composited_on_white(objects_dataset, tmp_path):
    folder = _copy_object(objects_dataset, tmp_path)
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:16, :, 3] = 255  # opaque red-ish on top
    rgba[16:, :, 3] = 0  # fully transparent below
    rgba[0, 0] = (100, 0, 0, 128)  # half transparent
    Image.fromarray(rgba, "RGBA").save(folder / "rgb" / "000000.png")
    image = read_srn_object(folder).images[0]
    assert image[5, 5].tolist() == [200, 0, 0]
    assert image[20, 5].tolist() == [255, 255, 255]
    alpha = 128 / 255
    assert image[0, 0].tolist() == [round(100 * alpha + 255 * (1 - alpha)), round(255 * (1 - alpha)),
                                    round(255 * (1 - alpha))]


def test_errors_name_the_file(objects_dataset, tmp_path):
    folder = _copy_object(objects_dataset, tmp_path)
    (folder / "pose" / "000002.txt").unlink()
    with pytest.raises(DataError, match="000002.txt is missing"):
        read_srn_object(folder)

    folder = _copy_object(objects_dataset, tmp_path / "b")
    (folder / "rgb" / "000001.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="Cannot read image .*000001.png"):
        read_srn_object(folder)

    folder = _copy_object(objects_dataset, tmp_path / "c")
    (folder / "intrinsics.txt").write_text("32.8 16 16 0\n0 0 0\n1\n")
    with pytest.raises(DataError, match="Malformed .*intrinsics.txt"):
        read_srn_object(folder)

    folder = _copy_object(objects_dataset, tmp_path / "d")
    (folder / "intrinsics.txt").write_text("32.8 16 16 0\n0 0 0\n1\n64 64\n")
    with pytest.raises(DataError, match="declares 64x64"):
        read_srn_object(folder)

    folder = _copy_object(objects_dataset, tmp_path / "e")
    (folder / "pose" / "000000.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 0")
    with pytest.raises(DataError, match="000000.txt holds 12 values"):
        read_srn_object(folder)

    folder = _copy_object(objects_dataset, tmp_path / "f")
    shutil.rmtree(folder / "pose")
    with pytest.raises(DataError, match="Missing folder .*pose"):
        read_srn_object(folder)

    with pytest.raises(DataError, match="No split folder .*val"):
        read_srn_split(objects_dataset, "val")
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="holds no object folders"):
        read_srn_split(tmp_path / "empty", "train")
