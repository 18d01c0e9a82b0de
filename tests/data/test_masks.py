"""Object masks: reading and dilation by hand, validation that names every offending file, and ``object-mask-data``."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ns_diffusion_methods.data.masks import dilate_mask, mask_from_array, read_object_mask, validate_object_masks
from ns_diffusion_methods.data.object_mask_data import ObjectMaskDataParserConfig
from ns_diffusion_methods.data.object_mask_dataset import ObjectMaskDataset
from ns_diffusion_methods.errors import DataError


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def test_mask_values_label_masks_and_half_range():
    label = np.zeros((4, 5), np.uint8)
    label[1:3, 2] = 1  # SPIn-NeRF labels: 0/1
    assert np.array_equal(mask_from_array(label), label == 1)
    assert np.array_equal(mask_from_array(label * 255), label == 1)  # 0/255
    green = np.stack([np.zeros_like(label), label * 255, np.zeros_like(label)], axis=-1)
    assert np.array_equal(mask_from_array(green), label == 1)  # any colour channel
    soft = np.array([[0, 100, 127, 128, 255]], np.uint8)
    assert mask_from_array(soft).tolist() == [[False, False, False, True, True]]  # above half the 8-bit range
    # JPEG-like noise around 0 is not object, even when the mask holds no object at all
    assert not mask_from_array(np.array([[0, 3, 7, 2]], np.uint8)).any()
    assert not mask_from_array(np.zeros((3, 3), np.uint8)).any()


def test_mask_images_of_every_mode(tmp_path):
    label = np.zeros((6, 8), np.uint8)
    label[2:5, 3:6] = 1
    expected = label == 1
    sixteen = Image.fromarray((label.astype(np.uint16) * 40000))  # 16-bit PNG: half range is 32767
    palette = Image.fromarray(label, "L").convert("P")  # DAVIS-style: palette index 1 = object
    palette.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    cutout = np.zeros((6, 8, 4), np.uint8)
    cutout[..., :3] = 90  # a dark object: its colour alone would read as background
    cutout[..., 3] = label * 255  # transparent outside the object
    images = {
        "sixteen.png": sixteen,
        "palette.png": palette,
        "bilevel.png": Image.fromarray(expected).convert("1"),
        "cutout.png": Image.fromarray(cutout, "RGBA"),
        "opaque_rgba.png": Image.fromarray(np.concatenate(
            [np.repeat(label[..., None] * 255, 3, -1), np.full((6, 8, 1), 255, np.uint8)], -1), "RGBA"),
    }
    for name, image in images.items():
        image.save(tmp_path / name)
        assert np.array_equal(read_object_mask(tmp_path / name), expected), name


def test_dilation_grows_a_pixel_into_squares():
    mask = np.zeros((15, 15), bool)
    mask[7, 7] = True
    once = dilate_mask(mask, (5, 1))
    assert once.sum() == 25 and once[5:10, 5:10].all()
    twice = dilate_mask(mask, (5, 2))  # 5x5 twice = 9x9
    assert twice.sum() == 81 and twice[3:12, 3:12].all()
    assert np.array_equal(dilate_mask(mask, (0, 0)), mask)


def test_validation_names_every_bad_file(tmp_path):
    image = np.zeros((6, 8, 3), np.uint8)
    good_mask = np.zeros((6, 8), np.uint8)
    good_mask[2:4, 3:5] = 255
    pairs = []
    for name in ("good", "nomask", "missing", "small", "empty", "full"):
        pairs.append([_png(tmp_path / "images" / f"{name}.png", image), tmp_path / "masks" / f"{name}.png"])
    _png(pairs[0][1], good_mask)
    pairs[1][1] = None
    _png(pairs[3][1], good_mask[:4, :4])
    _png(pairs[4][1], np.zeros((6, 8), np.uint8))
    _png(pairs[5][1], np.full((6, 8), 255, np.uint8))

    with pytest.raises(DataError) as info:
        validate_object_masks([tuple(p) for p in pairs], split="training", hint="Fix them.")
    message = str(info.value)
    assert "5 of 6 training images" in message
    assert str(tmp_path / "images" / "nomask.png") in message and "has no object mask" in message
    assert str(tmp_path / "masks" / "missing.png") in message and "does not exist" in message
    assert str(tmp_path / "masks" / "small.png") in message and "4x4" in message and "8x6" in message
    assert str(tmp_path / "masks" / "empty.png") in message and "empty" in message
    assert str(tmp_path / "masks" / "full.png") in message and "whole image" in message
    assert "good.png" not in message
    assert message.endswith("Fix them.")

    validate_object_masks([tuple(pairs[0])])  # a good mask passes
    # a mask that only becomes full after dilation is refused too
    with pytest.raises(DataError, match="after dilation"):
        validate_object_masks([tuple(pairs[0])], dilation=(5, 3))
    # evaluation views may have empty masks (object out of view)
    validate_object_masks([tuple(pairs[4])], allow_empty=True)


def _copy_capture(capture: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "capture"
    shutil.copytree(capture, folder)
    return folder


def test_object_mask_dataparser_reads_masks_of_both_splits(object_removal_capture):
    parser = ObjectMaskDataParserConfig(data=object_removal_capture).setup()
    train = parser.get_dataparser_outputs("train")
    meta = json.loads((object_removal_capture / "transforms.json").read_text())
    assert len(train.image_filenames) == len(meta["train_filenames"])
    dataset = ObjectMaskDataset(train)
    for index in (0, len(dataset) - 1):
        item = dataset[index]
        expected = read_object_mask(train.metadata["object_mask_filenames"][index])
        assert item["object_mask"].shape == (*item["image"].shape[:2], 1)
        assert np.array_equal(item["object_mask"][..., 0].numpy(), expected)
        assert train.metadata["object_mask_filenames"][index].name == train.image_filenames[index].name
    test = ObjectMaskDataParserConfig(data=object_removal_capture).setup().get_dataparser_outputs("test")
    assert all(m is not None for m in test.metadata["object_mask_filenames"])
    assert all("eval" in p.name for p in test.image_filenames)


def test_object_mask_dataparser_refuses_bad_training_masks(object_removal_capture, tmp_path):
    folder = _copy_capture(object_removal_capture, tmp_path)
    transforms = json.loads((folder / "transforms.json").read_text())
    train_frames = [f for f in transforms["frames"] if "_train_" in f["file_path"]]
    # one frame without a mask, one empty mask, one of the wrong size
    del train_frames[0]["object_mask_path"]
    empty = folder / train_frames[1]["object_mask_path"]
    shape = np.asarray(Image.open(empty)).shape
    Image.fromarray(np.zeros(shape, np.uint8)).save(empty)
    wrong = folder / train_frames[2]["object_mask_path"]
    Image.open(wrong).resize((10, 10)).save(wrong)
    (folder / "transforms.json").write_text(json.dumps(transforms))

    with pytest.raises(DataError) as info:
        ObjectMaskDataParserConfig(data=folder).setup().get_dataparser_outputs("train")
    message = str(info.value)
    assert "3 of" in message
    assert train_frames[0]["file_path"].split("/")[-1] in message
    assert str(empty) in message and str(wrong) in message


def test_a_capture_without_object_masks_is_refused(object_removal_capture, tmp_path):
    folder = _copy_capture(object_removal_capture, tmp_path)
    transforms = json.loads((folder / "transforms.json").read_text())
    for frame in transforms["frames"]:
        frame.pop("object_mask_path", None)
    (folder / "transforms.json").write_text(json.dumps(transforms))
    with pytest.raises(DataError, match="object_mask_path"):
        ObjectMaskDataParserConfig(data=folder).setup().get_dataparser_outputs("train")


def test_training_does_not_start_on_bad_masks(object_removal_capture, tmp_path):
    import harness

    folder = _copy_capture(object_removal_capture, tmp_path)
    transforms = json.loads((folder / "transforms.json").read_text())
    frame = next(f for f in transforms["frames"] if "_train_" in f["file_path"])
    bad = folder / frame["object_mask_path"]
    Image.fromarray(np.zeros(np.asarray(Image.open(bad)).shape, np.uint8)).save(bad)
    with pytest.raises(DataError, match=str(bad)):
        harness.train("mald-nerf-small", folder, tmp_path / "outputs", max_num_iterations=5)
    assert not list((tmp_path / "outputs").rglob("*.ckpt"))
