"""The package's one home of image files: reading (transparency dropped or on white), writing, resizing, GIFs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ns_diffusion_methods.data.images import (
    load_image,
    read_image,
    resize_array,
    save_gif,
    save_image,
    to_uint8,
)
from ns_diffusion_methods.errors import DataError


def _rgba(path):
    """Red at alpha 255, green at alpha 0, blue at alpha 128."""
    array = np.array([[[255, 0, 0, 255], [0, 255, 0, 0], [0, 0, 255, 128]]], dtype=np.uint8)
    Image.fromarray(array, "RGBA").save(path)
    return path


def test_transparency_is_dropped_or_composited_on_white(tmp_path):
    path = _rgba(tmp_path / "rgba.png")
    assert read_image(path).tolist() == [[[255, 0, 0], [0, 255, 0], [0, 0, 255]]]
    # on white: c * a + 255 * (1 - a), rounded to the nearest level (128/255 of blue, 127/255 of white)
    assert read_image(path, alpha="white").tolist() == [[[255, 0, 0], [255, 255, 255], [127, 127, 255]]]
    torch.testing.assert_close(load_image(path, alpha="white"),
                               torch.tensor([[[255, 255, 127]], [[0, 255, 127]], [[0, 255, 255]]]) / 255.0)


def test_greyscale_and_luma(tmp_path):
    Image.fromarray(np.array([[0, 200]], dtype=np.uint8)).save(tmp_path / "grey.png")
    assert read_image(tmp_path / "grey.png").tolist() == [[[0, 0, 0], [200, 200, 200]]]
    assert read_image(tmp_path / "grey.png", "L").tolist() == [[0, 200]]
    assert read_image(_rgba(tmp_path / "rgba.png"), "L").shape == (1, 3)


def test_unreadable_and_missing_files_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"Cannot read image .*broken.png .*Replace it\."):
        read_image(tmp_path / "broken.png", hint="Replace it.")
    with pytest.raises(DataError, match=r"The image file .*missing.png does not exist\. Replace it\."):
        read_image(tmp_path / "missing.png", hint="Replace it.")


def test_save_arrays_and_tensors_round_trip(tmp_path):
    array = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 10
    save_image(array, tmp_path / "sub" / "array.png")
    assert np.array_equal(read_image(tmp_path / "sub" / "array.png"), array)
    mask = np.array([[0, 255]], dtype=np.uint8)
    save_image(mask, tmp_path / "mask.png")
    assert Image.open(tmp_path / "mask.png").mode == "L"
    image = torch.tensor([[[0.0, 0.5]], [[1.0, 0.2]], [[0.3, 2.0]]])  # [3, 1, 2], one value above 1
    assert to_uint8(image).tolist() == [[[0, 255, 76], [128, 51, 255]]]
    save_image(image, tmp_path / "tensor.png")
    assert np.array_equal(read_image(tmp_path / "tensor.png"), to_uint8(image))
    with pytest.raises(ValueError, match="uint8"):
        save_image(array.astype(np.float32), tmp_path / "float.png")


def test_resize_array_filters_and_gif(tmp_path):
    mask = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    assert np.array_equal(resize_array(mask, (4, 4), "nearest"), np.kron(mask, np.ones((2, 2), np.uint8)))
    assert resize_array(mask, (2, 2)) is mask
    smooth = resize_array(np.stack([mask] * 3, axis=-1), (4, 4), "bilinear")
    assert smooth.shape == (4, 4, 3) and len(np.unique(smooth)) > 2
    frames = [np.full((4, 4, 3), value, np.uint8) for value in (0, 128, 255)]
    save_gif(frames, tmp_path / "turntable.gif", frame_ms=50)
    with Image.open(tmp_path / "turntable.gif") as gif:
        assert gif.n_frames == 3 and gif.info["duration"] == 50 and gif.info["loop"] == 0
