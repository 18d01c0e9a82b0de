"""``object-mask-data`` on the layouts users have: which frames train, which are object-free evaluation views.

Captures are re-written from the synthetic object-removal capture by ``tests/user_captures.py`` as ``ns-process-data``
writes them (``frame_00001.png``, no split lists), with the evaluation views marked (or not) the ways a user can.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from user_captures import read_capture, write_processed_capture

from ns_diffusion_methods.data.object_mask_data import ObjectMaskDataParserConfig
from ns_diffusion_methods.data.object_mask_dataset import ObjectMaskDataset
from ns_diffusion_methods.errors import DataError, UserFacingError


def _outputs(data: Path, split: str, **config):
    return ObjectMaskDataParserConfig(data=data, **config).setup().get_dataparser_outputs(split)


def _edit_transforms(capture: Path, edit) -> None:
    path = capture / "transforms.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta, indent=1))


@pytest.fixture(scope="module")
def processed_all(object_removal_capture, tmp_path_factory) -> Path:
    """Every frame of the synthetic capture as ns-process-data writes it, with object_mask_path on every frame (the
    last 8 frames are the object-free views, still unmarked)."""
    return write_processed_capture(object_removal_capture, tmp_path_factory.mktemp("user") / "all",
                                   mask_folder="masks", object_mask_entries=True)


def test_an_unmarked_processed_capture_trains_on_every_frame(object_removal_capture, tmp_path):
    capture = write_processed_capture(object_removal_capture, tmp_path / "capture", frames_subset="train",
                                      mask_folder="masks", object_mask_entries=True)
    train = _outputs(capture, "train")
    assert [p.name for p in train.image_filenames] == [f"frame_{i:05d}.png" for i in range(1, 13)]
    assert [p.name for p in train.metadata["object_mask_filenames"]] == [p.name for p in train.image_filenames]
    for split in ("val", "test"):
        evaluation = _outputs(capture, split)
        assert evaluation.image_filenames == [] and len(evaluation.cameras) == 0
        assert evaluation.metadata["object_mask_filenames"] is None


def test_frames_named_eval_are_the_evaluation_views_and_get_the_same_cameras_as_split_lists(
        object_removal_capture, tmp_path):
    unlisted = tmp_path / "unlisted"
    shutil.copytree(object_removal_capture, unlisted)
    _edit_transforms(unlisted, lambda meta: [meta.pop(key) for key in
                                             ("train_filenames", "val_filenames", "test_filenames")])
    for split in ("train", "test"):
        by_name, by_list = _outputs(unlisted, split), _outputs(object_removal_capture, split)
        assert [p.name for p in by_name.image_filenames] == [p.name for p in by_list.image_filenames]
        assert all(("eval" in p.name) == (split == "test") for p in by_name.image_filenames)
        # posed and scaled over all frames, exactly as nerfstudio does with the lists
        assert torch.allclose(by_name.cameras.camera_to_worlds, by_list.cameras.camera_to_worlds)
        assert by_name.metadata["object_mask_filenames"] is not None


def test_split_lists_mark_the_object_free_views_of_a_processed_capture(processed_all, tmp_path):
    capture = tmp_path / "listed"
    shutil.copytree(processed_all, capture)
    names = [f"images/frame_{i:05d}.png" for i in range(1, 21)]
    _edit_transforms(capture, lambda meta: meta.update(
        train_filenames=names[:12], val_filenames=names[12:], test_filenames=names[12:]))
    assert [p.name for p in _outputs(capture, "train").image_filenames] == [Path(n).name for n in names[:12]]
    test = _outputs(capture, "test")
    assert [p.name for p in test.image_filenames] == [Path(n).name for n in names[12:]]
    assert len(test.metadata["object_mask_filenames"]) == 8  # where the object was: for the masked metrics


def test_incomplete_split_lists_are_refused_with_what_to_add(processed_all, tmp_path):
    capture = tmp_path / "partial"
    shutil.copytree(processed_all, capture)
    _edit_transforms(capture, lambda meta: meta.update(test_filenames=["images/frame_00020.png"]))
    with pytest.raises(DataError) as info:
        _outputs(capture, "train")
    message = str(info.value)
    assert str(capture / "transforms.json") in message
    assert "has test_filenames but no train_filenames, val_filenames" in message


@pytest.mark.parametrize("mode", ["fraction", "interval", "all"])
def test_eval_modes_that_pick_frames_with_the_object_are_refused(processed_all, mode):
    with pytest.raises(UserFacingError, match=f"--eval-mode {mode}: the frames it would pick still show the object"):
        _outputs(processed_all, "train", eval_mode=mode)


def test_rgba_images_are_composited_on_the_alpha_colour(object_removal_capture, tmp_path):
    capture = write_processed_capture(object_removal_capture, tmp_path / "rgba", frames_subset="train", rgba=True,
                                      mask_folder="masks", object_mask_entries=True)
    rgba = np.asarray(Image.open(capture / "images" / "frame_00001.png")).astype(np.float32) / 255
    assert rgba.shape[-1] == 4 and rgba[0, 0, 3] == 0 and rgba[-1, -1, 3] == 1
    for colour, value in (("black", 0.0), ("white", 1.0)):
        item = ObjectMaskDataset(_outputs(capture, "train", alpha_color=colour))[0]
        image = item["image"].numpy()
        assert image.shape == (*rgba.shape[:2], 3)
        assert np.allclose(image[0, 0], value)  # transparent corner
        assert np.allclose(image[-1, -1], rgba[-1, -1, :3], atol=1e-6)  # opaque pixels unchanged
        assert item["object_mask"].shape == (*rgba.shape[:2], 1)


def test_a_capture_with_only_downscaled_images_checks_the_images_it_loads(object_removal_capture, tmp_path):
    capture = write_processed_capture(object_removal_capture, tmp_path / "half", frames_subset="train",
                                      full_size=False, downscales=(2,), mask_folder="masks", object_mask_entries=True)
    assert not (capture / "images").exists()
    train = _outputs(capture, "train", downscale_factor=2)
    assert all(p.parent.name == "images_2" for p in train.image_filenames)
    item = ObjectMaskDataset(train)[0]
    meta, _ = read_capture(object_removal_capture)
    assert item["image"].shape[:2] == (meta["h"] // 2, meta["w"] // 2)
    assert item["object_mask"].shape[:2] == item["image"].shape[:2] and item["object_mask"].any()
    # a broken loaded file is named (not the absent full-size one)
    broken = capture / "images_2" / "frame_00004.png"
    broken.write_bytes(broken.read_bytes()[:40])
    with pytest.raises(DataError) as info:
        _outputs(capture, "train", downscale_factor=2)
    assert f"{broken}: cannot be read as an image" in str(info.value)
    assert "1 of 12 images" in str(info.value)
