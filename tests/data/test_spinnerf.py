"""``spinnerf-data`` on the synthetic capture's SPIn-NeRF layout, checked against its nerfstudio-format twin."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ns_diffusion_methods.data.masks import dilate_mask
from ns_diffusion_methods.data.object_mask_data import ObjectMaskDataParserConfig
from ns_diffusion_methods.data.object_mask_dataset import ObjectMaskDataset
from ns_diffusion_methods.data.spinnerf import SpinNerfDataParserConfig, llff_to_nerfstudio
from ns_diffusion_methods.errors import DataError


def _num_eval(capture: Path) -> int:
    return len(list((capture / "images").glob("frame_eval_*.png")))


def _parser(capture: Path, **kwargs) -> SpinNerfDataParserConfig:
    return SpinNerfDataParserConfig(data=capture / "spinnerf", num_test_views=_num_eval(capture), **kwargs)


def _homogeneous(c2w: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(c2w.shape[0], 1, 4)
    return torch.cat([c2w, bottom], dim=1)


def test_first_sorted_images_are_the_object_free_test_views(object_removal_capture):
    num_eval = _num_eval(object_removal_capture)
    parser = _parser(object_removal_capture, mask_dilation=(0, 0)).setup()
    test, train = parser.get_dataparser_outputs("test"), parser.get_dataparser_outputs("train")
    all_images = sorted((object_removal_capture / "spinnerf" / "images_4").glob("*.png"))
    assert test.image_filenames == all_images[:num_eval]
    assert train.image_filenames == all_images[num_eval:]
    assert parser.get_dataparser_outputs("val").image_filenames == test.image_filenames
    # the test views are the capture's evaluation renders (without the object), the rest its training views
    for i in (0, num_eval - 1):
        expected = np.asarray(Image.open(object_removal_capture / "images" / f"frame_eval_{i:05d}.png"))
        assert np.array_equal(np.asarray(Image.open(test.image_filenames[i])), expected)
    expected = np.asarray(Image.open(object_removal_capture / "images" / "frame_train_00000.png"))
    assert np.array_equal(np.asarray(Image.open(train.image_filenames[0])), expected)


def test_poses_and_intrinsics_match_the_nerfstudio_capture(object_removal_capture):
    spin = _parser(object_removal_capture).setup().get_dataparser_outputs("train").cameras
    ns = ObjectMaskDataParserConfig(data=object_removal_capture).setup().get_dataparser_outputs("train").cameras
    # both dataparsers normalise differently; poses relative to the first camera must agree (up to scale)
    rel_spin = torch.linalg.inv(_homogeneous(spin.camera_to_worlds)[:1]) @ _homogeneous(spin.camera_to_worlds)
    rel_ns = torch.linalg.inv(_homogeneous(ns.camera_to_worlds)[:1]) @ _homogeneous(ns.camera_to_worlds)
    torch.testing.assert_close(rel_spin[:, :3, :3], rel_ns[:, :3, :3], atol=1e-4, rtol=0)
    scale = rel_ns[1, :3, 3].norm() / rel_spin[1, :3, 3].norm()
    torch.testing.assert_close(rel_spin[:, :3, 3] * scale, rel_ns[:, :3, 3], atol=1e-4, rtol=0)
    # the focal length of the full-resolution poses, scaled to images_4
    torch.testing.assert_close(spin.fx, ns.fx, atol=1e-3, rtol=0)
    torch.testing.assert_close(spin.cx, ns.cx)
    assert torch.equal(spin.width, ns.width) and torch.equal(spin.height, ns.height)


def test_llff_columns_become_opengl_axes():
    # a camera at (1, 2, 3) looking down -z with +y up: LLFF stores (down, right, back) = (-y, x, z)
    row = np.zeros((1, 17))
    mat = np.zeros((3, 5))
    mat[:, 0], mat[:, 1], mat[:, 2] = (0, -1, 0), (1, 0, 0), (0, 0, 1)
    mat[:, 3], mat[:, 4] = (1, 2, 3), (30, 40, 50)
    row[0, :15] = mat.ravel()
    c2w, hwf = llff_to_nerfstudio(row, 1, Path("poses_bounds.npy"))
    assert np.allclose(c2w[0, :3, :3], np.eye(3)) and np.allclose(c2w[0, :3, 3], (1, 2, 3))
    assert hwf[0].tolist() == [30, 40, 50]


def test_label_masks_mark_the_object_and_are_dilated_as_spinnerf(object_removal_capture):
    plain = _parser(object_removal_capture, mask_dilation=(0, 0)).setup().get_dataparser_outputs("train")
    item = ObjectMaskDataset(plain)[0]
    label = np.asarray(Image.open(plain.metadata["object_mask_filenames"][0]))
    assert set(np.unique(label)) <= {0, 1}
    assert np.array_equal(item["object_mask"][..., 0].numpy(), label == 1)
    nerfstudio_mask = np.asarray(Image.open(object_removal_capture / "masks" / "frame_train_00000.png"))
    assert np.array_equal(label == 1, nerfstudio_mask == 255)

    dilated = _parser(object_removal_capture, mask_dilation=(3, 2)).setup().get_dataparser_outputs("train")
    assert np.array_equal(ObjectMaskDataset(dilated)[0]["object_mask"][..., 0].numpy(),
                          dilate_mask(label == 1, (3, 2)))
    assert SpinNerfDataParserConfig().mask_dilation == (5, 5)  # SPIn-NeRF's default: 5x5, 5 iterations
    test = _parser(object_removal_capture, mask_dilation=(3, 2)).setup().get_dataparser_outputs("test")
    assert test.metadata["object_mask_dilation"] == (0, 0)  # test masks are not dilated by default


def test_missing_files_are_reported(object_removal_capture, tmp_path):
    scene = tmp_path / "scene"
    shutil.copytree(object_removal_capture / "spinnerf", scene)
    num_eval = _num_eval(object_removal_capture)
    missing = sorted((scene / "images_4" / "label").glob("*.png"))[1]
    missing.unlink()
    with pytest.raises(DataError) as info:
        SpinNerfDataParserConfig(data=scene, num_test_views=num_eval, mask_dilation=(0, 0)).setup() \
            .get_dataparser_outputs("train")
    assert missing.name in str(info.value) and "has no object mask" in str(info.value)

    np.save(scene / "poses_bounds.npy", np.load(scene / "poses_bounds.npy")[:3])
    with pytest.raises(DataError, match="every image needs a pose"):
        SpinNerfDataParserConfig(data=scene, num_test_views=num_eval).setup().get_dataparser_outputs("test")
    (scene / "poses_bounds.npy").unlink()
    with pytest.raises(DataError, match="poses_bounds.npy is missing"):
        SpinNerfDataParserConfig(data=scene, num_test_views=num_eval).setup().get_dataparser_outputs("test")
