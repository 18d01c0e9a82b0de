"""The user-layout capture writers of ``tests/user_captures.py`` agree with nerfstudio's own readers: poses, intrinsics
and images read back through the ``colmap``, ``blender-data`` and ``nerfstudio-data`` dataparsers are the source's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from user_captures import (
    opengl_c2w_to_colmap,
    read_capture,
    rotation_to_quaternion,
    write_blender_capture,
    write_colmap_capture,
    write_processed_capture,
)


def _source_poses(source: Path):
    meta, frames = read_capture(source)
    return meta, {Path(f["file_path"]).stem: torch.tensor(f["transform_matrix"])[:3, :4].float() for f in frames}


def test_quaternion_of_a_known_rotation():
    angle = 0.3  # about z
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    np.testing.assert_allclose(rotation_to_quaternion(rotation), [np.cos(angle / 2), 0, 0, np.sin(angle / 2)],
                               atol=1e-12)
    # a camera at (0, 0, 2) looking down -z (OpenGL) is the identity rotation in OpenCV after the axis flip
    c2w = np.eye(4)
    c2w[2, 3] = 2.0
    qvec, tvec = opengl_c2w_to_colmap(c2w)
    np.testing.assert_allclose(qvec, [0, 1, 0, 0], atol=1e-12)  # 180 degrees about x
    np.testing.assert_allclose(tvec, [0, 0, 2], atol=1e-12)


def test_colmap_binary_model_reads_back_with_the_source_poses(object_removal_capture, tmp_path):
    from nerfstudio.data.dataparsers.colmap_dataparser import ColmapDataParserConfig

    output = write_colmap_capture(object_removal_capture, tmp_path / "colmap")
    parsed = ColmapDataParserConfig(
        data=output, colmap_path=Path("sparse/0"), orientation_method="none", center_method="none",
        auto_scale_poses=False, assume_colmap_world_coordinate_convention=False, eval_mode="all",
    ).setup().get_dataparser_outputs("train")
    meta, poses = _source_poses(object_removal_capture)
    assert len(parsed.image_filenames) == len(poses)
    for filename, c2w in zip(parsed.image_filenames, parsed.cameras.camera_to_worlds):
        assert filename.suffix == ".jpg"
        torch.testing.assert_close(c2w, poses[filename.stem], atol=1e-5, rtol=0)
    assert float(parsed.cameras.fx[0]) == pytest.approx(meta["fl_x"])
    assert parsed.metadata["points3D_xyz"].shape[0] > 100


def test_blender_layout_reads_back(object_removal_capture, tmp_path):
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    output = write_blender_capture(object_removal_capture, tmp_path / "blender")
    parsed = BlenderDataParserConfig(data=output).setup().get_dataparser_outputs("train")
    meta, _ = _source_poses(object_removal_capture)
    assert float(parsed.cameras.fx[0]) == pytest.approx(meta["fl_x"], rel=1e-6)
    assert int(parsed.cameras.height[0]) == meta["h"]
    assert Image.open(parsed.image_filenames[0]).mode == "RGBA"


def test_processed_capture_with_only_downscaled_images(object_removal_capture, tmp_path):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    output = write_processed_capture(object_removal_capture, tmp_path / "processed", full_size=False,
                                     downscales=(2,))
    assert not (output / "images").exists()
    parsed = NerfstudioDataParserConfig(data=output, downscale_factor=2, eval_mode="all").setup() \
        .get_dataparser_outputs("train")
    meta, _ = _source_poses(object_removal_capture)
    assert all(p.parent.name == "images_2" and p.name.startswith("frame_0") for p in parsed.image_filenames)
    assert int(parsed.cameras.width[0]) == round(meta["w"] / 2)
