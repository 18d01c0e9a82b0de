"""``ns-diffusion add-masks`` on a capture as ``ns-process-data`` writes it, with masks as segmenters write them.

The capture holds the synthetic object-removal scene's 12 views with the object (``frame_00001`` .. ``frame_00012``)
and its 8 object-free views (``frame_00013`` .. ``frame_00020``); the masks are the scene's true object masks, saved
in the formats users have.
"""

import json
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pytest
from PIL import Image
from user_captures import read_capture, write_processed_capture

from ns_diffusion_methods.cli.main import main as ns_diffusion
from ns_diffusion_methods.data.add_masks import add_masks
from ns_diffusion_methods.data.masks import dilate_mask, read_object_mask
from ns_diffusion_methods.data.object_mask_data import ObjectMaskDataParserConfig
from ns_diffusion_methods.data.object_mask_dataset import ObjectMaskDataset
from ns_diffusion_methods.errors import DataError, UserFacingError

NUM_TRAIN, NUM_EVAL = 12, 8


@pytest.fixture(scope="module")
def true_masks(object_removal_capture) -> List[np.ndarray]:
    """The object masks of the 12 views with the object, in frame order (bool [H, W])."""
    _, frames = read_capture(object_removal_capture)
    return [read_object_mask(object_removal_capture / f["object_mask_path"]) for f in frames[:NUM_TRAIN]]


@pytest.fixture(scope="module")
def processed(object_removal_capture, tmp_path_factory) -> Path:
    """The 20 frames as ns-process-data writes them: no masks, no split lists."""
    return write_processed_capture(object_removal_capture, tmp_path_factory.mktemp("user") / "processed")


def _copy(capture: Path, tmp_path: Path) -> Path:
    shutil.copytree(capture, tmp_path / "capture")
    return tmp_path / "capture"


def _save_masks(folder: Path, masks: List[np.ndarray], kind: str = "255.png") -> Path:
    """Masks of frames 1..len(masks) in the format ``kind``."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, mask in enumerate(masks):
        stem = f"frame_{index + 1:05d}"
        if kind == "01.png":
            Image.fromarray(mask.astype(np.uint8)).save(folder / f"{stem}.png")
        elif kind == "255.jpg":
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{stem}.jpg", quality=60)
        elif kind == "red.png":
            rgb = np.zeros((*mask.shape, 3), np.uint8)
            rgb[mask, 0] = 255
            Image.fromarray(rgb).save(folder / f"{stem}.png")
        elif kind == "inverted.png":
            Image.fromarray((~mask).astype(np.uint8) * 255).save(folder / f"{stem}.png")
        else:
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{stem}.png")
    return folder


def _frames(capture: Path) -> List[dict]:
    return json.loads((capture / "transforms.json").read_text())["frames"]


def test_masks_of_every_format_make_a_capture_object_mask_data_reads(processed, true_masks, tmp_path, capsys):
    masks = tmp_path / "segmenter"
    _save_masks(masks, true_masks[:4], "01.png")  # SPIn-NeRF-style labels
    jpeg = _save_masks(tmp_path / "jpeg", true_masks[:8], "255.jpg")
    for path in sorted(jpeg.glob("*.jpg"))[4:]:
        shutil.copy(path, masks / path.name)
    values = np.asarray(Image.open(masks / "frame_00005.jpg"))
    assert len(np.unique(values)) > 2  # compression noise around 0 and 255
    red = _save_masks(tmp_path / "red", true_masks, "red.png")
    for path in sorted(red.glob("*.png"))[8:]:
        shutil.copy(path, masks / path.name)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(masks / "frame_00099.png")  # a mask of no frame
    (masks / "notes.txt").write_text("not an image")
    before = (processed / "transforms.json").read_text()

    output = tmp_path / "with-masks"
    assert ns_diffusion(["add-masks", "--data", str(processed), "--masks", str(masks),
                         "--output", str(output)]) == 0
    report = capsys.readouterr().out
    assert (processed / "transforms.json").read_text() == before  # the capture itself is untouched
    assert (output / "images" / "frame_00001.png").is_file() and (output / "images_2").is_dir()

    frames = _frames(output)
    assert [f.get("object_mask_path") for f in frames] == \
        [f"object_masks/frame_{i:05d}.png" for i in range(1, NUM_TRAIN + 1)] + [None] * NUM_EVAL
    for index, mask in enumerate(true_masks):
        written = np.asarray(Image.open(output / frames[index]["object_mask_path"]))
        assert written.dtype == np.uint8 and set(np.unique(written)) <= {0, 255}
        if index < 4 or index >= 8:
            assert np.array_equal(written == 255, mask), index
        else:  # JPEG: compression may flip a few edge pixels
            assert (written == 255)[mask].mean() > 0.97 and (written == 255)[~mask].mean() < 0.01, index
    meta = json.loads((output / "transforms.json").read_text())
    evaluation = [f"images/frame_{i:05d}.png" for i in range(NUM_TRAIN + 1, NUM_TRAIN + NUM_EVAL + 1)]
    assert meta["val_filenames"] == meta["test_filenames"] == evaluation
    assert meta["train_filenames"] == [f["file_path"] for f in frames[:NUM_TRAIN]]

    assert "Training frames (with the object and its mask): 12." in report
    assert "Object-free evaluation views: 8 frames without an object mask" in report
    for name in evaluation:
        assert f"{name}: no mask in {masks}" in report
    assert "1 files in" in report and "frame_00099.png" in report and "notes.txt" not in report
    assert f"ns-train mald-nerf --data {output}" in report

    # what mald-nerf's dataparser makes of it: the 12 views train with their masks, the 8 others are the test views
    parser = ObjectMaskDataParserConfig(data=output).setup()
    train = parser.get_dataparser_outputs("train")
    assert [p.name for p in train.image_filenames] == [f"frame_{i:05d}.png" for i in range(1, NUM_TRAIN + 1)]
    dataset = ObjectMaskDataset(train)
    assert np.array_equal(dataset[0]["object_mask"][..., 0].numpy(), true_masks[0])
    assert len(parser.get_dataparser_outputs("test").image_filenames) == NUM_EVAL


def test_in_place_keeps_a_backup_of_each_transforms_json(processed, true_masks, tmp_path):
    capture = _copy(processed, tmp_path)
    original = (capture / "transforms.json").read_text()
    masks = _save_masks(tmp_path / "masks", true_masks)
    first = add_masks(capture, masks, in_place=True)
    assert first.backup == capture / "transforms.json.bak" and first.backup.read_text() == original
    assert (capture / "object_masks" / "frame_00012.png").is_file()
    assert len(first.training) == NUM_TRAIN and len(first.evaluation) == NUM_EVAL and first.lists_written
    updated = (capture / "transforms.json").read_text()
    # again with dilated masks: the first result is backed up in turn
    second = add_masks(capture, masks, in_place=True, dilation=(3, 2))
    assert second.backup == capture / "transforms.json.bak2" and second.backup.read_text() == updated
    written = read_object_mask(capture / "object_masks" / "frame_00003.png")
    assert np.array_equal(written, dilate_mask(true_masks[2], (3, 2))) and written.sum() > true_masks[2].sum()


def test_inverted_masks_and_masks_of_the_downscaled_images(processed, true_masks, tmp_path):
    capture = _copy(processed, tmp_path)
    inverted = _save_masks(tmp_path / "inverted", true_masks, "inverted.png")
    add_masks(capture, inverted, in_place=True, invert=True)
    assert np.array_equal(read_object_mask(capture / "object_masks" / "frame_00002.png"), true_masks[1])

    half = tmp_path / "half"
    half.mkdir()
    for index, mask in enumerate(true_masks):  # masks drawn on images_2/ (24x18 for 48x36 images)
        small = Image.fromarray(mask.astype(np.uint8) * 255).resize((mask.shape[1] // 2, mask.shape[0] // 2),
                                                                     Image.NEAREST)
        small.save(half / f"frame_{index + 1:05d}.png")
    report = add_masks(capture, half, in_place=True)
    assert report.enlarged == NUM_TRAIN
    written = read_object_mask(capture / "object_masks" / "frame_00001.png")
    assert written.shape == true_masks[0].shape
    assert (written == true_masks[0]).mean() > 0.95  # nearest-neighbour enlargement of a half-size drawing


def test_a_capture_that_marks_its_evaluation_views_keeps_them(object_removal_capture, true_masks, tmp_path):
    capture = _copy(object_removal_capture, tmp_path)  # split lists, frame_train_* / frame_eval_* names
    meta, frames = read_capture(capture)
    masks = tmp_path / "masks"
    masks.mkdir()
    for frame in frames:  # masks named like these frames: training masks and where the object was in eval views
        shutil.copy(capture / frame["object_mask_path"], masks / f"{Path(frame['file_path']).stem}.png")
    report = add_masks(capture, masks, output=tmp_path / "out")
    assert not report.lists_written and len(report.training) == NUM_TRAIN and len(report.evaluation) == NUM_EVAL
    written = json.loads((tmp_path / "out" / "transforms.json").read_text())
    assert written["test_filenames"] == meta["test_filenames"]
    assert all(f["object_mask_path"].startswith("object_masks/") for f in written["frames"])

    (masks / "frame_train_00004.png").unlink()
    with pytest.raises(DataError) as info:
        add_masks(capture, masks, output=tmp_path / "out2")
    assert "1 of its 12 training frames have no object mask" in str(info.value)
    assert f"images/frame_train_00004.png: no mask in {masks}" in str(info.value)
    assert not (tmp_path / "out2").exists()


def test_unusable_masks_stop_before_anything_is_written(processed, true_masks, tmp_path):
    masks = _save_masks(tmp_path / "masks", true_masks)
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(masks / "frame_00003.png")
    Image.fromarray(np.full(true_masks[0].shape, 255, np.uint8)).save(masks / "frame_00005.png")
    (masks / "frame_00007.png").write_bytes(b"not a png")
    output = tmp_path / "out"
    with pytest.raises(DataError) as info:
        add_masks(processed, masks, output=output)
    message = str(info.value)
    assert message.startswith(f"3 masks of {masks} cannot be used (nothing was written)")
    assert f"{masks / 'frame_00003.png'}: is 30x30 (WxH) but its image images/frame_00003.png is 48x36" in message
    assert f"{masks / 'frame_00005.png'}: covers the whole image" in message
    assert f"{masks / 'frame_00007.png'}: cannot be read as an image" in message
    assert not output.exists()


def test_what_add_masks_refuses(processed, true_masks, tmp_path):
    with pytest.raises(DataError, match="The mask folder .*missing does not exist"):
        add_masks(processed, tmp_path / "missing", output=tmp_path / "out")
    other = tmp_path / "other"
    other.mkdir()
    Image.fromarray(true_masks[0].astype(np.uint8) * 255).save(other / "mask_0001.png")
    with pytest.raises(DataError, match="None of the masks in .* is named like a frame .* named like frame_00001.png, "
                                        "the folder holds mask_0001.png"):
        add_masks(processed, other, output=tmp_path / "out")
    masks = _save_masks(tmp_path / "masks", true_masks[:2])
    with pytest.raises(UserFacingError, match="Give either --output"):
        add_masks(processed, masks)
    with pytest.raises(UserFacingError, match="Give either --output"):
        add_masks(processed, masks, output=tmp_path / "out", in_place=True)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "file").write_text("x")
    with pytest.raises(UserFacingError, match="already exists and is not empty"):
        add_masks(processed, masks, output=tmp_path / "full")
    Image.fromarray(np.zeros(true_masks[0].shape, np.uint8)).save(masks / "frame_00001.jpg")
    with pytest.raises(DataError, match="(?s)several masks .*frame_00001.jpg, frame_00001.png"):
        add_masks(processed, masks, output=tmp_path / "out")
